//! Fuzz targets for the manifest reader: a damaged or hostile `hakiri.toml` must give an
//! error, never a panic or a hang. `HAKIRI_FUZZ_CASES` sets the cases (default 256);
//! `scripts/fuzz` runs more.

use hakiri_core::fuzzing::config;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use super::parse;

/// A manifest using every section and key; the mutations start from it.
const VALID: &str = r#"
[project]
name = "demo"

[sources.httpbin]
type = "http"
base_url = "${HAKIRI_HTTPBIN_URL:-https://httpbin.org}"
tables.anything.path = "/anything"
header = { Accept = "application/json" }
page_size = 100

[pipelines.events]
cursor = { kind = "monotonic", column = "id", initial = 0, lag = "10", on_null = "skip" }
sql = "INSERT INTO context.events SELECT * FROM httpbin.anything WHERE id >= $cursor"
mode = "merge"
key = ["id"]
on_schema_change = "freeze"
schedule = { every = "15 minutes", jitter = "1 minute", on_missed = "run_once", retries = 3, backoff = "30 seconds", suspend_after_failures = 5 }

[pipelines.feed]
cursor = { kind = "token" }
checkpoint_pages = 10
sql = "INSERT INTO context.feed SELECT * FROM httpbin.anything"

[pipelines.daily]
cursor = { kind = "snapshot" }
sql = "INSERT INTO context.daily SELECT * FROM httpbin.anything"
schedule = { cron = "0 9 * * *", tz = "Europe/Berlin" }

[serve]
pg_listen = "127.0.0.1:5432"
users.admin = { password = "env:HAKIRI_ADMIN_PASSWORD", role = "admin" }
"#;

/// Pieces of TOML and of the manifest's vocabulary.
const PIECES: &[&str] = &[
    "[project]",
    "[sources.s]",
    "[pipelines.p]",
    "[serve]",
    "[serve.users.u]",
    "[[sources]]",
    "name = ",
    "type = \"http\"",
    "sql = ",
    "cursor = ",
    "schedule = ",
    "key = ",
    "mode = ",
    "checkpoint_pages = ",
    "password = ",
    "role = ",
    "tables.t.path = ",
    "users.u = ",
    "\"INSERT INTO context.t SELECT * FROM s.e WHERE id > $cursor\"",
    "{ kind = \"monotonic\", column = \"id\", initial = 0 }",
    "{ kind = \"token\" }",
    "{ every = \"15 minutes\" }",
    "{ cron = \"0 * * * *\", tz = \"UTC\" }",
    "[\"id\"]",
    "\"merge\"",
    "\"admin\"",
    "=",
    "\n",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    ",",
    ".",
    "#",
    "1",
    "-1",
    "0",
    "1.5",
    "1e400",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "\\u0000",
    "\\",
    "99999999999999999999",
];

const SEPARATORS: &[&str] = &[" ", "\n", ""];

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(PIECES).prop_map(|p| p.to_string()),
        1 => "[a-z_.]{1,6}",
        1 => "\\PC{1,4}",
    ]
}

/// One change to a manifest's text, at a place picked by `Index`.
#[derive(Debug, Clone)]
enum Edit {
    Delete(Index, usize),
    Insert(Index, String),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..40usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<Index>(), piece()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<Index>(), 1..80usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// Applies edits on characters, so the text stays UTF-8.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut c: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match e {
            Edit::Delete(i, n) => {
                let start = at(i, c.len());
                c.drain(start..(start + n).min(c.len()));
            }
            Edit::Insert(i, p) => {
                let tail = c.split_off(at(i, c.len()));
                c.extend(p.chars().chain(tail));
            }
            Edit::Duplicate(i, n) => {
                let start = at(i, c.len());
                let copy = c[start..(start + n).min(c.len())].to_vec();
                let tail = c.split_off(start);
                c.extend(copy.into_iter().chain(tail));
            }
            Edit::Truncate(i) => c.truncate(at(i, c.len())),
        }
    }
    c.into_iter().collect()
}

/// Parses, and displays the error: it must not panic either way.
fn parse_and_render(text: &str) {
    if let Err(e) = parse(text) {
        drop(e.to_string());
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any text at all.
    #[test]
    fn fuzz_manifest_arbitrary_text(text in any::<String>()) {
        parse_and_render(&text);
    }

    /// Text stitched from TOML and manifest pieces.
    #[test]
    fn fuzz_manifest_pieces(
        pieces in prop::collection::vec((piece(), prop::sample::select(SEPARATORS)), 0..40)
    ) {
        let text: String = pieces.into_iter().map(|(p, sep)| p + sep).collect();
        parse_and_render(&text);
    }

    /// A valid manifest with random edits (none: it must parse).
    #[test]
    fn fuzz_manifest_mutations(edits in prop::collection::vec(edit(), 0..6)) {
        let text = apply(VALID, &edits);
        match parse(&text) {
            Ok(_) => {}
            Err(e) if edits.is_empty() => {
                return Err(TestCaseError::fail(format!("the unedited manifest fails: {e}")));
            }
            Err(e) => drop(e.to_string()),
        }
    }
}
