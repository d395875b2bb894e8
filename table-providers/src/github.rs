//! The `github` connector: a repository's issues, pull requests, commits and releases
//! through the GitHub REST API. It is the HTTP connector with GitHub's conventions preset:
//! `Link` header pagination, a bearer token from a secret reference, `since` pushed down
//! for issues, and the rate-limit headers respected (see `http::client`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use hakiri_core::ports::{OptionSpec, Source, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::SourceSpec;

use crate::error::{Error, Result};
use crate::http::HttpTable;
use crate::http::options::HttpTableOptions;

const fn opt(name: &'static str, required: bool, secret: bool, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        required,
        secret,
        help,
    }
}

const OPTIONS: &[OptionSpec] = &[
    opt("repo", true, false, "the repository, owner/name"),
    opt(
        "token",
        false,
        true,
        "an access token, as a secret reference: 'env:GITHUB_TOKEN' (without one GitHub allows 60 requests an hour)",
    ),
    opt(
        "base_url",
        false,
        false,
        "the API's URL (default https://api.github.com; GitHub Enterprise: https://HOST/api/v3)",
    ),
    opt(
        "per_page",
        false,
        false,
        "records per page, at most 100 (default 100)",
    ),
    opt(
        "requests_per_second",
        false,
        false,
        "most requests per second (default: no limit beyond GitHub's own)",
    ),
    opt(
        "max_pages",
        false,
        false,
        "stop after this many pages per table",
    ),
];

/// A table: its path under the repository, declared schema, and the column pushed as
/// `since` (issues only: GitHub's `since` is "updated at or after", so it is Inexact).
struct TableDef {
    name: &'static str,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    since_column: Option<&'static str>,
    schema: &'static str,
}

const TABLES: &[TableDef] = &[
    TableDef {
        name: "issues",
        path: "issues",
        query: &[("state", "all"), ("sort", "updated"), ("direction", "asc")],
        since_column: Some("updated_at"),
        schema: "id bigint, number bigint, title text, state text, user json, labels json, comments bigint, created_at timestamp, updated_at timestamp, closed_at timestamp, body text, html_url text, pull_request json",
    },
    TableDef {
        name: "pull_requests",
        path: "pulls",
        query: &[("state", "all"), ("sort", "updated"), ("direction", "asc")],
        since_column: None,
        schema: "id bigint, number bigint, title text, state text, user json, draft boolean, created_at timestamp, updated_at timestamp, closed_at timestamp, merged_at timestamp, head json, base json, html_url text",
    },
    TableDef {
        name: "commits",
        path: "commits",
        query: &[],
        since_column: None,
        schema: "sha text, commit json, author json, committer json, parents json, html_url text",
    },
    TableDef {
        name: "releases",
        path: "releases",
        query: &[],
        since_column: None,
        schema: "id bigint, tag_name text, name text, draft boolean, prerelease boolean, created_at timestamp, published_at timestamp, author json, body text, html_url text",
    },
];

/// The `github` connector type.
#[derive(Debug, Default)]
pub struct GithubSource;

#[async_trait]
impl Source for GithubSource {
    fn connector(&self) -> &'static str {
        "github"
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        validate_options(
            &format!("source '{}' (type github)", spec.name),
            OPTIONS,
            spec.options.keys(),
        )?;
        let repo = &spec.options["repo"];
        if repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
            return Err(Error::InvalidInput(format!(
                "source '{}': repo must be owner/name, got '{repo}'",
                spec.name
            )));
        }
        Ok(())
    }

    /// Every table's schema is declared: building one makes no request.
    fn remote_discovery(&self, _spec: &SourceSpec, _table: &str) -> bool {
        false
    }

    fn table_names(&self, _spec: &SourceSpec) -> Vec<String> {
        TABLES.iter().map(|t| t.name.to_string()).collect()
    }

    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let def =
            TABLES
                .iter()
                .find(|t| t.name == table)
                .ok_or_else(|| Error::SourceTableNotFound {
                    name: spec.name.clone(),
                    table: table.to_string(),
                    message: format!(
                        "source '{}' (github) has no table '{table}': its tables are {}",
                        spec.name,
                        TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
                    ),
                })?;
        let get = |k: &str| spec.options.get(k).map(|v| resolve_value(k, v)).transpose();
        let base = get("base_url")?.unwrap_or_else(|| "https://api.github.com".into());
        let repo = get("repo")?.unwrap_or_default();
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        raw.insert("path".into(), format!("/repos/{repo}/{}", def.path));
        raw.insert("pagination".into(), "link_header".into());
        raw.insert("schema".into(), def.schema.into());
        raw.insert("header.Accept".into(), "application/vnd.github+json".into());
        raw.insert("header.X-GitHub-Api-Version".into(), "2022-11-28".into());
        if let Some(token) = get("token")? {
            raw.insert("header.Authorization".into(), format!("Bearer {token}"));
        }
        raw.insert(
            "query.per_page".into(),
            get("per_page")?.unwrap_or_else(|| "100".into()),
        );
        for (k, v) in def.query {
            raw.insert(format!("query.{k}"), v.to_string());
        }
        if let Some(col) = def.since_column {
            raw.insert(format!("filter.{col}"), "since".into());
        }
        for k in ["requests_per_second", "max_pages"] {
            if let Some(v) = get(k)? {
                raw.insert(k.into(), v);
            }
        }
        let opts = HttpTableOptions::parse(table, Some(&base), &raw)?;
        Ok(Arc::new(
            HttpTable::try_new(&format!("{}.{table}", spec.name), opts, hint).await?,
        ))
    }
}
