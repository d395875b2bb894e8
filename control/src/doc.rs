//! The project document's layout, and its two conversions: a manifest written into the
//! document (`hakiri team push`), and the document read back as a manifest (`apply`).
//!
//! Layout (the web UI and the JS test client use the same):
//! - root map `project`: `name`;
//! - root map `sources`: name → map `{type, <option>: value | map}`;
//! - root map `pipelines`: name → map with the manifest's keys (`sql` is a `LoroText`, so
//!   concurrent edits of one query merge by character; `cursor` and `schedule` are maps;
//!   `key` is a list), plus `transforms`: a movable list of computed columns
//!   (`upper(name) AS name_upper`) that apply adds to the query's output, in their order.
//!
//! Every other value is a plain scalar, so two edits of one field resolve last-writer-wins.

use loro::{LoroDoc, LoroMap, LoroValue, ValueOrContainer};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The manifest sections the team shares; `[serve]` and `[sync]` stay on each machine
/// (they hold local addresses and secret references).
const SHARED: [&str; 3] = ["project", "sources", "pipelines"];

/// The shared part of a TOML manifest, as JSON, after checking it parses.
pub fn manifest_json_from_toml(text: &str) -> Result<Value> {
    hakiri_manifests::parse(text).map_err(|e| Error::Invalid(e.to_string()))?;
    let value: Value =
        toml::from_str(text).map_err(|e| Error::Invalid(format!("hakiri.toml: {e}")))?;
    Ok(shared(value))
}

/// The shared part of a JSON manifest, after checking it parses.
pub fn manifest_json_from_json(text: &str) -> Result<Value> {
    hakiri_manifests::parse_json(text).map_err(|e| Error::Invalid(e.to_string()))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::Invalid(format!("hakiri.json: {e}")))?;
    Ok(shared(value))
}

fn shared(value: Value) -> Value {
    let Value::Object(mut m) = value else {
        return Value::Object(Map::new());
    };
    m.retain(|k, _| SHARED.contains(&k.as_str()));
    Value::Object(m)
}

/// Makes the document's shared sections equal `manifest` (entries it lacks are deleted).
pub fn write_manifest(doc: &LoroDoc, manifest: &Value) -> Result<()> {
    let empty = Map::new();
    let m = manifest.as_object().unwrap_or(&empty);
    for section in SHARED {
        let target = doc.get_map(section);
        let value = m.get(section).cloned().unwrap_or(Value::Object(Map::new()));
        let Value::Object(entries) = value else {
            return Err(Error::Invalid(format!("`{section}` must be a table")));
        };
        sync_map(&target, &entries, section)?;
    }
    Ok(())
}

fn loro(e: loro::LoroError) -> Error {
    Error::Internal(format!("document edit: {e}"))
}

/// Sets `map` to `entries`, keeping containers whose content is unchanged untouched so a
/// re-push of the same manifest is a no-op.
fn sync_map(map: &LoroMap, entries: &Map<String, Value>, path: &str) -> Result<()> {
    for key in map.keys().map(|k| k.to_string()).collect::<Vec<_>>() {
        if !entries.contains_key(&key) {
            map.delete(&key).map_err(loro)?;
        }
    }
    for (key, value) in entries {
        let child_path = format!("{path}.{key}");
        match value {
            Value::Object(o) => {
                let child = map.ensure_mergeable_map(key).map_err(loro)?;
                sync_map(&child, o, &child_path)?;
            }
            Value::Array(items) if key == "transforms" => {
                let list = map.ensure_mergeable_movable_list(key).map_err(loro)?;
                if list.get_deep_value() != json_to_loro(value) {
                    list.clear().map_err(loro)?;
                    for item in items {
                        list.push(json_to_loro(item)).map_err(loro)?;
                    }
                }
            }
            Value::Array(items) => {
                let list = map.ensure_mergeable_list(key).map_err(loro)?;
                if list.get_deep_value() != json_to_loro(value) {
                    list.clear().map_err(loro)?;
                    for item in items {
                        list.push(json_to_loro(item)).map_err(loro)?;
                    }
                }
            }
            Value::String(s) if key == "sql" => {
                let text = map.ensure_mergeable_text(key).map_err(loro)?;
                if text.to_string() != *s {
                    text.update(s, Default::default())
                        .map_err(|e| Error::Internal(format!("{child_path}: {e}")))?;
                }
            }
            scalar => {
                let v = json_to_loro(scalar);
                let same = matches!(map.get(key), Some(ValueOrContainer::Value(old)) if old == v);
                if !same {
                    map.insert(key, v).map_err(loro)?;
                }
            }
        }
    }
    Ok(())
}

fn json_to_loro(v: &Value) -> LoroValue {
    match v {
        Value::Null => LoroValue::Null,
        Value::Bool(b) => LoroValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(LoroValue::I64)
            .unwrap_or_else(|| LoroValue::Double(n.as_f64().unwrap_or_default())),
        Value::String(s) => LoroValue::from(s.as_str()),
        Value::Array(a) => LoroValue::from(a.iter().map(json_to_loro).collect::<Vec<_>>()),
        Value::Object(o) => LoroValue::from(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_loro(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        ),
    }
}

/// The document as a manifest (JSON), with each pipeline's transforms composed into its
/// SQL, and checked by the same parser `hakiri.json` goes through.
///
/// # Errors
/// `Invalid` naming the pipeline or source and the field, when the document does not
/// validate.
pub fn read_manifest(doc: &LoroDoc) -> Result<Value> {
    let mut out = Map::new();
    for section in SHARED {
        let v = serde_json::to_value(doc.get_map(section).get_deep_value())
            .map_err(|e| Error::Internal(format!("document as JSON: {e}")))?;
        if v.as_object().is_some_and(|o| !o.is_empty()) {
            out.insert(section.to_string(), v);
        }
    }
    if let Some(Value::Object(pipelines)) = out.get_mut("pipelines") {
        for (name, p) in pipelines.iter_mut() {
            let Value::Object(p) = p else {
                return Err(Error::Invalid(format!("pipelines.{name}: must be a table")));
            };
            if let Some(t) = p.remove("transforms") {
                compose(name, p, &t)?;
            }
        }
    }
    let manifest = sorted(Value::Object(out));
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    hakiri_manifests::parse_json(&text).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(manifest)
}

/// `v` with every object's keys in order: the document's map order is not stable, and an
/// applied version is compared and diffed as text.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut entries: Vec<(String, Value)> = o.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `INSERT INTO context.t <query>` with transforms `[a, b]` becomes
/// `INSERT INTO context.t SELECT input.*, a, b FROM (<query>) AS input`: the query's
/// columns (the cursor column among them) stay, the transforms add theirs.
fn compose(name: &str, p: &mut Map<String, Value>, transforms: &Value) -> Result<()> {
    let items: Vec<&str> = match transforms {
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    Error::Invalid(format!(
                        "pipelines.{name}.transforms: each item must be a string"
                    ))
                })
            })
            .collect::<Result<_>>()?,
        Value::Null => Vec::new(),
        _ => {
            return Err(Error::Invalid(format!(
                "pipelines.{name}.transforms: must be a list of select-list items"
            )));
        }
    };
    if items.is_empty() {
        return Ok(());
    }
    let sql = p.get("sql").and_then(Value::as_str).ok_or_else(|| {
        Error::Invalid(format!(
            "pipelines.{name}.sql: missing (transforms wrap the pipeline's query)"
        ))
    })?;
    let at = query_start(sql).ok_or_else(|| {
        Error::Invalid(format!(
            "pipelines.{name}.sql: transforms need `INSERT INTO context.<table> SELECT ...`"
        ))
    })?;
    let composed = format!(
        "{} SELECT input.*, {} FROM ({}) AS input",
        sql[..at].trim_end(),
        items.join(", "),
        sql[at..].trim()
    );
    p.insert("sql".into(), Value::String(composed));
    Ok(())
}

/// Where the query starts in `INSERT INTO <table> [(<cols>)] <query>`.
fn query_start(sql: &str) -> Option<usize> {
    let lower = sql.to_ascii_lowercase();
    let skip_ws = |i: usize| i + lower[i..].len() - lower[i..].trim_start().len();
    let mut i = skip_ws(0);
    for word in ["insert", "into"] {
        if !lower[i..].starts_with(word) {
            return None;
        }
        i = skip_ws(i + word.len());
    }
    // The table's name runs to whitespace or a parenthesis.
    i += lower[i..].find(|c: char| c.is_whitespace() || c == '(')?;
    i = skip_ws(i);
    let starts_query = |i: usize| {
        let rest = lower[i..].trim_start_matches('(').trim_start();
        rest.starts_with("select") || rest.starts_with("with") || rest.starts_with("values")
    };
    if lower[i..].starts_with('(') && !starts_query(i) {
        // A column list: the query follows its closing parenthesis.
        i = skip_ws(i + lower[i..].find(')')? + 1);
    }
    starts_query(i).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[project]
name = "team"

[sources.api]
type = "http"
base_url = "http://127.0.0.1:1"
schema = "id bigint, name text"
tables.items.path = "/items"

[pipelines.items]
sql = "INSERT INTO context.items SELECT id, name FROM api.items WHERE id > $cursor"
cursor = { kind = "monotonic", column = "id", initial = "0" }
schedule = { every = "5 minutes" }
placement = "node:a"

[serve]
pg_listen = "127.0.0.1:5999"
"#;

    #[test]
    fn a_manifest_round_trips_through_the_document_without_local_sections() {
        let json = manifest_json_from_toml(TOML).unwrap();
        let doc = LoroDoc::new();
        write_manifest(&doc, &json).unwrap();
        doc.commit();
        let back = read_manifest(&doc).unwrap();
        assert_eq!(back, json);
        assert!(back.get("serve").is_none());
        // Pushing the same manifest again changes nothing.
        let vv = doc.oplog_vv();
        write_manifest(&doc, &json).unwrap();
        doc.commit();
        assert_eq!(doc.oplog_vv(), vv);
    }

    #[test]
    fn transforms_wrap_the_query_in_their_order() {
        let json = manifest_json_from_toml(TOML).unwrap();
        let doc = LoroDoc::new();
        write_manifest(&doc, &json).unwrap();
        let p = doc
            .get_map("pipelines")
            .ensure_mergeable_map("items")
            .unwrap();
        let t = p.ensure_mergeable_movable_list("transforms").unwrap();
        t.push("id + 1 AS next_id").unwrap();
        t.push("upper(name) AS name_upper").unwrap();
        t.mov(1, 0).unwrap();
        doc.commit();
        let m = read_manifest(&doc).unwrap();
        assert_eq!(
            m["pipelines"]["items"]["sql"],
            "INSERT INTO context.items SELECT input.*, upper(name) AS name_upper, id + 1 AS next_id FROM (SELECT id, name FROM api.items WHERE id > $cursor) AS input"
        );
    }

    #[test]
    fn the_query_starts_after_the_table_and_its_column_list() {
        fn q(s: &str) -> Option<&str> {
            query_start(s).map(|i| &s[i..])
        }
        assert_eq!(q("INSERT INTO context.t SELECT 1"), Some("SELECT 1"));
        assert_eq!(
            q("insert into context.t (a, b) select 1, 2"),
            Some("select 1, 2")
        );
        assert_eq!(
            q("INSERT INTO context.t(a) WITH x AS (SELECT 1) SELECT * FROM x"),
            Some("WITH x AS (SELECT 1) SELECT * FROM x")
        );
        assert_eq!(q("INSERT INTO context.t (SELECT 1)"), Some("(SELECT 1)"));
        assert_eq!(q("SELECT 1"), None);
    }

    #[test]
    fn a_document_that_does_not_validate_names_the_field() {
        let doc = LoroDoc::new();
        let p = doc
            .get_map("pipelines")
            .ensure_mergeable_map("bad")
            .unwrap();
        p.insert("sql", "INSERT INTO context.t SELECT 1").unwrap();
        p.insert("mdoe", "append").unwrap();
        doc.commit();
        let e = read_manifest(&doc).unwrap_err().to_string();
        assert!(e.contains("mdoe"), "{e}");
        p.delete("mdoe").unwrap();
        p.insert("placement", "moon:1").unwrap();
        let e = read_manifest(&doc).unwrap_err().to_string();
        assert!(e.contains("placement") && e.contains("bad"), "{e}");
    }
}
