//! Source options: reserved schema names and the resolution of option values (secret
//! references and `${VAR}` interpolation), done only when a connector is built.

use crate::error::{Error, Result};

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
