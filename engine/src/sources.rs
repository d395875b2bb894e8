//! Source registration: each source becomes a DataFusion schema whose tables come from its
//! connector; option values are resolved (`env:NAME`, `${NAME:-default}`) only here.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result as DfResult;

use crate::error::{Error, Result};
use crate::ports::Source;
use crate::types::SourceSpec;

/// Schema names a source may not take.
pub const RESERVED_SCHEMAS: &[&str] = &[
    "context",
    "hakiri",
    "information_schema",
    "pg_catalog",
    "public",
];

/// Resolves an option value: `env:NAME` is the value of environment variable `NAME` (a
/// secret reference); `${NAME}` and `${NAME:-default}` are replaced inside any value.
///
/// # Errors
/// `Config` naming the variable and the option when a referenced variable is unset.
pub fn resolve_value(option: &str, value: &str) -> Result<String> {
    if let Some(var) = value.strip_prefix("env:") {
        return std::env::var(var).map_err(|_| {
            Error::Config(format!(
                "option '{option}' refers to environment variable {var}, which is not set: export {var}=... before running"
            ))
        });
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            Error::Config(format!(
                "option '{option}' has an unclosed '${{' in '{value}'"
            ))
        })?;
        let expr = &after[..end];
        let (var, default) = match expr.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (expr, None),
        };
        match (std::env::var(var).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(Error::Config(format!(
                    "option '{option}' uses ${{{var}}}, which is not set: export {var}=... or write ${{{var}:-default}}"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The schema `<source>`: tables resolved through the source's connector.
#[derive(Debug)]
pub struct SourceSchemaProvider {
    spec: SourceSpec,
    connector: Arc<dyn Source>,
    hints: crate::engine::SchemaHints,
}

impl SourceSchemaProvider {
    pub fn new(
        spec: SourceSpec,
        connector: Arc<dyn Source>,
        hints: crate::engine::SchemaHints,
    ) -> Self {
        SourceSchemaProvider {
            spec,
            connector,
            hints,
        }
    }
}

#[async_trait]
impl SchemaProvider for SourceSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.connector.table_names(&self.spec)
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let hint = self
            .hints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{}.{name}", self.spec.name))
            .cloned();
        Ok(Some(self.connector.table(&self.spec, name, hint).await?))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connector
            .table_names(&self.spec)
            .iter()
            .any(|t| t == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_with_defaults() {
        assert_eq!(
            resolve_value("u", "${HAKIRI_SURELY_UNSET_VAR:-http://x}/a").unwrap(),
            "http://x/a"
        );
        assert!(resolve_value("u", "${HAKIRI_SURELY_UNSET_VAR}").is_err());
        let err = resolve_value("header.Authorization", "env:HAKIRI_SURELY_UNSET_VAR").unwrap_err();
        assert!(err.to_string().contains("HAKIRI_SURELY_UNSET_VAR"));
    }
}
