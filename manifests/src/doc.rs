//! The manifest as serde types: the one declaration of its keys, read from TOML and JSON
//! alike and turned into a JSON Schema by schemars (`hakiri schema export`).
//!
//! Unknown keys are refused (`deny_unknown_fields`), naming the valid ones. Named entries
//! (`[pipelines.<name>]`, `[sources.<name>]`, `[serve.users.<name>]`) are turned into specs
//! while the deserializer is still at them, so an error from the pipeline builder points at
//! the pipeline's line and column like a parse error does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use hakiri_core::schedule::{Interval, ScheduleBuilder};
use hakiri_core::types::{
    CursorKind, CursorSpec, NullRule, Origin, PipelineBuilder, PipelineSpec, Placement, Role,
    SchemaPolicy, SourceSpec, UserSpec, WriteMode, validate_name,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A Hakiri project: its sources, the pipelines that load them into the context store, and
/// the endpoints of `hakiri serve`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Hakiri project manifest (hakiri.toml or hakiri.json)")]
pub struct ManifestDoc {
    /// The JSON Schema this file follows, for editors (ignored by Hakiri).
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub project: Option<ProjectDoc>,
    /// Named connections: `[sources.<name>]` with a `type` and the connector's options.
    #[serde(default)]
    pub sources: Named<SourceSpec>,
    /// `[pipelines.<name>]`: an `INSERT INTO context.<table> SELECT ...` with its clauses.
    #[serde(default)]
    pub pipelines: Named<PipelineSpec>,
    pub serve: Option<ServeDoc>,
    pub sync: Option<SyncDoc>,
    pub retention: Option<RetentionDoc>,
    pub store: Option<StoreDoc>,
    pub catalog: Option<CatalogDoc>,
    /// `[alerts.<name>]`: webhooks `serve` posts failed, suspended and stale alerts to.
    #[serde(default)]
    pub alerts: BTreeMap<String, AlertDoc>,
}

/// `[alerts.<name>]`: `url = "https://..."`, `on = ["failed", "suspended", "stale"]`,
/// `stale_after = "2 hours"`. Posted as JSON, retried with backoff; never blocks a run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertDoc {
    /// The webhook's URL (http or https), or a secret reference such as
    /// "env:SLACK_WEBHOOK_URL" (webhook URLs are often secrets).
    pub url: String,
    /// Which alerts to send (default all): failed, suspended, stale.
    pub on: Option<Vec<AlertOn>>,
    /// For `stale`: how long a scheduled pipeline may go without a successful run
    /// (default "2 hours").
    pub stale_after: Option<Interval>,
}

/// An alert kind.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOn {
    Failed,
    Suspended,
    Stale,
}

/// `[retention]`: how long state rows are kept; older ones are pruned daily by `serve` and
/// by `hakiri context prune`, keeping each pipeline's latest.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionDoc {
    /// `hakiri.runs` rows, e.g. "90 days".
    pub runs: Option<Interval>,
    /// `hakiri.events` rows.
    pub events: Option<Interval>,
    /// `hakiri.cursor_history` rows.
    pub cursor_history: Option<Interval>,
}

/// `[store]`: how the context store's files are kept compact.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreDoc {
    /// The file size compaction aims at, in MiB (default 128).
    #[schemars(range(min = 1))]
    pub compact_target_mb: Option<u64>,
    /// How often `serve` compacts the tables (default "1 hour"; "0 seconds" turns it off).
    pub compact_every: Option<Interval>,
    /// Per table, the columns compaction sorts by: `sort_by = { orders = "customer, id" }`.
    #[serde(default)]
    pub sort_by: BTreeMap<String, String>,
    /// Encrypt every Parquet file of the context store (footer and columns) with this key:
    /// a secret reference such as "env:HAKIRI_STORE_KEY" to 32 or 64 hex digits.
    pub encryption_key: Option<String>,
    /// Keys the store was encrypted with before `encryption_key` (secret references): files
    /// written with them stay readable until `hakiri context rekey` has rewritten them.
    #[serde(default)]
    pub previous_keys: Vec<String>,
}

/// `[catalog]`: keep the project's state (pipelines, cursors, runs, files) in PostgreSQL
/// instead of `.hakiri/catalog.db`, so project folders on several machines share it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogDoc {
    /// `postgres://user:password@host:port/database` (with `?sslmode=verify-full&sslrootcert=ca.pem`
    /// as for a Postgres source), or a secret reference such as "env:HAKIRI_CATALOG_URL".
    pub url: String,
    /// The schema the catalog's tables live in (default "hakiri"); one per team of projects.
    pub schema: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectDoc {
    /// The project's name.
    pub name: Option<String>,
}

/// `[sources.<name>]`: `type` names the connector; every other key is one of its options.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SourceDoc {
    /// The connector: http, postgres, file, s3, github or wasm (a sandboxed component).
    #[serde(rename = "type")]
    pub connector: String,
    /// The connector's options; nested tables become dotted keys (`tables.t.path`).
    #[serde(flatten)]
    pub options: BTreeMap<String, OptionValue>,
}

/// `[pipelines.<name>]`: the keys mirror the clauses of `CREATE PIPELINE`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineDoc {
    /// The body: `INSERT INTO context.<table> SELECT ... FROM <source>.<table>`, using
    /// `$cursor` where the cursor goes.
    pub sql: String,
    pub cursor: Option<CursorDoc>,
    pub mode: Option<WriteMode>,
    /// For `mode = "merge"`: the columns that identify a row.
    pub key: Option<Key>,
    pub on_schema_change: Option<SchemaPolicy>,
    /// For a token cursor: commit data and token every this many pages (default 10).
    #[schemars(range(min = 1))]
    pub checkpoint_pages: Option<u64>,
    pub schedule: Option<ScheduleBuilder>,
    /// Where `hakiri control` runs it: "any" (default), "node:<id>", "self-hosted:<id>", or
    /// "cf:<name>" (the Cloudflare substrate, accepted but not dispatched yet).
    #[schemars(extend("pattern" = "^(any|(node|self-hosted|cf):[^\\s]+)$"))]
    pub placement: Option<String>,
}

/// `cursor = { kind = "monotonic", column = "id", initial = 0 }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorDoc {
    #[serde(default)]
    pub kind: CursorKind,
    /// For a monotonic cursor: the SELECT's column whose maximum is stored.
    pub column: Option<String>,
    /// The value `$cursor` has before the first committed run.
    pub initial: Option<Scalar>,
    /// For a monotonic cursor with merge: read this much again (a number or '1 hour').
    pub lag: Option<Scalar>,
    pub on_null: Option<NullRule>,
}

/// `[serve]`: the endpoints and users of `hakiri serve`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServeDoc {
    /// The Postgres wire address, default 127.0.0.1:5433.
    pub pg_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    #[serde(default)]
    pub users: Named<UserSpec>,
}

/// `[sync]`: the bucket or folder `hakiri sync` shares the context store through, as Delta
/// Lake tables.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncDoc {
    /// `s3://bucket/prefix`, or `file:///path` for a folder.
    pub url: String,
    /// An S3-compatible endpoint such as http://127.0.0.1:9000 (default: AWS).
    pub endpoint: Option<String>,
    /// The bucket's region (default us-east-1).
    pub region: Option<String>,
    /// A secret reference such as env:AWS_ACCESS_KEY_ID.
    pub access_key_id: Option<String>,
    /// A secret reference such as env:AWS_SECRET_ACCESS_KEY.
    pub secret_access_key: Option<String>,
    /// A secret reference such as env:AWS_SESSION_TOKEN.
    pub session_token: Option<String>,
    /// How long a pipeline's lease lasts unless renewed (default "15 minutes").
    pub lease_ttl: Option<String>,
}

/// `users.<name> = { password = "env:VAR", role = "read_only" }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDoc {
    /// A secret reference such as env:HAKIRI_ADMIN_PASSWORD.
    pub password: String,
    pub role: Option<Role>,
}

/// A string, number or boolean, kept as its text (`initial = 0` is `"0"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

/// A source option: a scalar, or a table of options (dotted keys).
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Scalar(String),
    Table(BTreeMap<String, OptionValue>),
}

/// `key = "id"` or `key = ["tenant", "id"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Key(pub Vec<String>);

/// Entries of a table keyed by name, each turned into `T` where it stands.
#[derive(Debug)]
pub struct Named<T>(pub Vec<T>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

/// How an entry of a [`Named`] table is read and turned into its spec.
pub trait Entry: Sized {
    /// `pipeline`, `source`, `user`: for names and messages.
    const KIND: &'static str;
    type Doc: for<'de> Deserialize<'de> + JsonSchema;
    fn make(name: &str, doc: Self::Doc) -> hakiri_core::Result<Self>;
}

impl Entry for PipelineSpec {
    const KIND: &'static str = "pipeline";
    type Doc = PipelineDoc;

    fn make(name: &str, doc: PipelineDoc) -> hakiri_core::Result<Self> {
        if let Some(p) = &doc.placement {
            Placement::parse(p).map_err(|e| e.context(|e| format!("pipeline '{name}': {e}")))?;
        }
        let mut p = PipelineBuilder::new(name, doc.sql, Origin::Manifest);
        p.cursor = doc.cursor.map(|c| CursorSpec {
            kind: c.kind,
            column: c.column,
            initial: c.initial.map(|s| s.0),
            lag: c.lag.map(|s| s.0),
            on_null: c.on_null.unwrap_or_default(),
        });
        p.mode = doc.mode;
        p.key = doc.key.map(|k| k.0).unwrap_or_default();
        p.on_schema_change = doc.on_schema_change;
        p.checkpoint_pages = doc.checkpoint_pages;
        if let Some(schedule) = doc.schedule {
            p.schedule = ScheduleBuilder {
                declared: true,
                ..schedule
            };
        }
        p.build()
    }
}

impl Entry for SourceSpec {
    const KIND: &'static str = "source";
    type Doc = SourceDoc;

    fn make(name: &str, doc: SourceDoc) -> hakiri_core::Result<Self> {
        let mut options = BTreeMap::new();
        flatten("", doc.options, &mut options);
        Ok(SourceSpec {
            name: name.to_string(),
            connector: doc.connector,
            options,
            origin: Origin::Manifest,
        })
    }
}

impl Entry for UserSpec {
    const KIND: &'static str = "user";
    type Doc = UserDoc;

    fn make(name: &str, doc: UserDoc) -> hakiri_core::Result<Self> {
        Ok(UserSpec {
            name: name.to_string(),
            password: doc.password,
            role: doc.role.unwrap_or(Role::ReadOnly),
        })
    }
}

/// Nested option tables as dotted keys: `tables.anything.path`.
fn flatten(
    prefix: &str,
    options: BTreeMap<String, OptionValue>,
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in options {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            OptionValue::Scalar(s) => {
                out.insert(key, s);
            }
            OptionValue::Table(t) => flatten(&key, t, out),
        }
    }
}

impl<'de, T: Entry> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NamedVisitor<T>(PhantomData<T>);
        impl<'de, T: Entry> Visitor<'de> for NamedVisitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a table of {}s by name", T::KIND)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key_seed(NameSeed(T::KIND))? {
                    out.push(map.next_value_seed(EntrySeed::<T>(&name, PhantomData))?);
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(NamedVisitor(PhantomData))
    }
}

/// Reads an entry's name and checks it, at the key.
struct NameSeed(&'static str);

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let name = String::deserialize(d)?;
        validate_name(self.0, &name).map_err(de::Error::custom)?;
        Ok(name)
    }
}

/// Reads an entry's body and makes its spec, at the value: errors carry its position.
struct EntrySeed<'a, T>(&'a str, PhantomData<T>);

impl<'de, T: Entry> DeserializeSeed<'de> for EntrySeed<'_, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        // Not re-worded: the error keeps the exact place toml gave it.
        let doc = T::Doc::deserialize(d)?;
        T::make(self.0, doc).map_err(|e| {
            let text = e.to_string();
            // The builder's errors already name the pipeline.
            if text.starts_with(&format!("{} '", T::KIND)) {
                de::Error::custom(text)
            } else {
                de::Error::custom(format!("{} '{}': {text}", T::KIND, self.0))
            }
        })
    }
}

impl<T: Entry> JsonSchema for Named<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("{}s", T::KIND).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let entry = generator.subschema_for::<T::Doc>();
        json_schema!({
            "type": "object",
            "propertyNames": NAME_SCHEMA.clone(),
            "additionalProperties": entry,
        })
    }
}

/// The rule of `validate_name`, for the schema.
static NAME_SCHEMA: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
    serde_json::json!({
        "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        "description": "letters, digits and underscores, starting with a letter or underscore (at most 63 characters)",
    })
});

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(Scalar)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["string", "number", "boolean"]})
    }
}

/// toml reads a date-time as a map with this one key.
const TOML_DATETIME: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for OptionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptionValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or a table of options")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OptionValue, E> {
                ScalarVisitor.visit_str(v).map(OptionValue::Scalar)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OptionValue, E> {
                ScalarVisitor.visit_i64(v).map(OptionValue::Scalar)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OptionValue, E> {
                ScalarVisitor.visit_u64(v).map(OptionValue::Scalar)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OptionValue, E> {
                ScalarVisitor.visit_f64(v).map(OptionValue::Scalar)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OptionValue, E> {
                ScalarVisitor.visit_bool(v).map(OptionValue::Scalar)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptionValue, A::Error> {
                let mut t = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    if k == TOML_DATETIME {
                        return Err(de::Error::custom(
                            "a date or time as an option value must be quoted: write it as a string",
                        ));
                    }
                    t.insert(k, map.next_value()?);
                }
                Ok(OptionValue::Table(t))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for OptionValue {
    fn schema_name() -> Cow<'static, str> {
        "OptionValue".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let nested = generator.subschema_for::<OptionValue>();
        json_schema!({
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {"type": "object", "additionalProperties": nested},
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a column name or a list of column names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
                let mut cols = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    cols.push(c);
                }
                Ok(Key(cols))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Key {
    fn schema_name() -> Cow<'static, str> {
        "Key".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
        })
    }
}

/// The manifest's JSON Schema (draft 2020-12).
pub fn json_schema() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings
        .transforms
        .push(Box::new(schemars::transform::RecursiveTransform(no_null)));
    let schema = settings
        .into_generator()
        .into_root_schema_for::<ManifestDoc>();
    schema.to_value()
}

/// Takes `null` out of the schemas of optional keys. A manifest leaves a value out by
/// leaving its key out; and without the `anyOf [T, null]` wrapping a validator names the
/// real reason for a bad value ("'x' is not one of [...]") instead of "not valid under any".
fn no_null(schema: &mut Schema) {
    use serde_json::Value;
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let null = Value::from("null");
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| *t != null);
        if let [only] = types.as_slice() {
            let only = only.clone();
            obj.insert("type".into(), only);
        }
    }
    let is_null = |v: &Value| v.get("type") == Some(&null);
    if let Some(Value::Array(any)) = obj.get("anyOf")
        && any.len() == 2
        && any.iter().any(is_null)
        && let Some(Value::Object(other)) = any.iter().find(|v| !is_null(v)).cloned()
    {
        obj.remove("anyOf");
        for (k, v) in other {
            obj.entry(k).or_insert(v);
        }
    }
}
