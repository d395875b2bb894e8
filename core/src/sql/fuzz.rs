//! Fuzz targets for the SQL extension parser: hostile SQL must give an error, never a
//! panic or a hang. `HAKIRI_FUZZ_CASES` sets the cases (default 256); `scripts/fuzz` runs
//! more.

use crate::fuzzing::config;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{HakiriStatement, parse_statements};

/// Words and punctuation of Hakiri's statements (and a little of SQL's), for token soups.
const WORDS: &[&str] = &[
    "CREATE",
    "OR",
    "REPLACE",
    "PIPELINE",
    "SOURCE",
    "IF",
    "NOT",
    "EXISTS",
    "TYPE",
    "http",
    "OPTIONS",
    "(",
    ")",
    ",",
    "'k'",
    "'v'",
    "header.Accept",
    "CURSOR",
    "MONOTONIC",
    "TOKEN",
    "SNAPSHOT",
    "INITIAL",
    "LAG",
    "ON",
    "NULL",
    "FAIL",
    "SKIP",
    "LOAD",
    "CHECKPOINT",
    "EVERY",
    "PAGES",
    "SCHEDULE",
    "CRON",
    "TZ",
    "JITTER",
    "MISSED",
    "RUN",
    "ONCE",
    "RETRY",
    "BACKOFF",
    "SUSPEND",
    "AFTER",
    "FAILURES",
    "FAILURE",
    "MODE",
    "APPEND",
    "MERGE",
    "KEY",
    "SCHEMA",
    "CHANGE",
    "EVOLVE",
    "FREEZE",
    "DISCARD",
    "AS",
    "INSERT",
    "INTO",
    "context.t",
    "SELECT",
    "*",
    "FROM",
    "s.e",
    "WHERE",
    "id",
    ">",
    ">=",
    "<",
    "$cursor",
    ";",
    "DROP",
    "SHOW",
    "PIPELINES",
    "SOURCES",
    "PLAN",
    "EXPLAIN",
    "ALTER",
    "RESUME",
    "VALUES",
    "'",
    "\"",
    "''",
    "$",
    "$$",
    "--",
    "/*",
    "*/",
    "E'\\",
    "0",
    "-1",
    "4294967296",
    "'15 minutes'",
    "'0 * * * *'",
    "'Europe/Berlin'",
    "'1 hour'",
    ".",
    "RESET",
];

/// Pipeline clauses, well-formed and not, in any order.
const CLAUSES: &[&str] = &[
    "CURSOR MONOTONIC (id)",
    "CURSOR MONOTONIC (id) INITIAL '0' LAG '10'",
    "CURSOR MONOTONIC (ts) INITIAL '2024-01-01T00:00:00Z' ON NULL SKIP",
    "CURSOR MONOTONIC (a, b)",
    "CURSOR MONOTONIC ()",
    "CURSOR TOKEN",
    "CURSOR SNAPSHOT",
    "CURSOR SNAPSHOT INITIAL 'x'",
    "CURSOR SIDEWAYS",
    "CHECKPOINT EVERY 10 PAGES",
    "CHECKPOINT EVERY 0 PAGES",
    "MODE APPEND",
    "MODE MERGE KEY (id)",
    "MODE MERGE KEY (id, other)",
    "MODE MERGE",
    "MODE REPLACE",
    "ON SCHEMA CHANGE FREEZE",
    "ON SCHEMA CHANGE DISCARD",
    "SCHEDULE EVERY '15 minutes'",
    "SCHEDULE EVERY '0 seconds'",
    "SCHEDULE EVERY '99999999999999999999 years'",
    "SCHEDULE CRON '0 * * * *' TZ 'Europe/Berlin'",
    "SCHEDULE CRON '61 * * * *'",
    "SCHEDULE CRON '*/0 * * * *' TZ 'Mars/Olympus'",
    "JITTER '1 minute'",
    "ON MISSED SKIP",
    "ON MISSED RUN ONCE",
    "RETRY 3 BACKOFF '30 seconds'",
    "SUSPEND AFTER 3 FAILURES",
    "SUSPEND AFTER 1 FAILURE",
    "SUSPEND AFTER 4294967296 FAILURES",
    "RETRY 4294967297",
];

const BODIES: &[&str] = &[
    "INSERT INTO context.t SELECT * FROM s.e WHERE id > $cursor",
    "INSERT INTO t SELECT * FROM s.e WHERE $cursor < id AND id >= $cursor",
    "INSERT INTO other.t SELECT 1",
    "INSERT INTO context.t VALUES (1)",
    "INSERT INTO context.t (a) SELECT 1",
    "INSERT INTO context.\"T t\" SELECT * FROM s.e",
    "SELECT 1",
];

const OTHERS: &[&str] = &[
    "DROP PIPELINE IF EXISTS p",
    "DROP SOURCE s",
    "DROP CONTEXT TABLE IF EXISTS context.t",
    "DROP CONTEXT TABLE t",
    "SHOW PIPELINES",
    "SHOW SOURCES",
    "SHOW CREATE PIPELINE p",
    "PLAN PIPELINE p",
    "EXPLAIN PIPELINE p",
    "ALTER PIPELINE p SUSPEND",
    "ALTER PIPELINE p STOP",
    "ALTER PIPELINE p RESET CURSOR",
    "RUN PIPELINE p",
    "SELECT 1",
    "SELECT * FROM s.e WHERE id > $cursor",
];

fn pick(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(words).prop_map(|w| w.to_string())
}

/// A name: plain, quoted, invalid, or a keyword.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,6}",
        1 => "\"[A-Za-z ]{0,6}\"",
        1 => pick(&["1x", "p", "PIPELINE", "select", "`b`"]),
    ]
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(WORDS),
        2 => name(),
        1 => "'([^']|''){0,6}'",
        1 => "[0-9]{1,20}",
        1 => "\\PC{1,3}",
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 0..24).prop_map(|w| w.join(" "))
}

/// A clause: usually a listed one (a column swapped for a random name), sometimes soup.
fn clause() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(CLAUSES),
        2 => name().prop_map(|n| format!("CURSOR MONOTONIC ({n})")),
        1 => name().prop_map(|n| format!("MODE MERGE KEY (id, {n})")),
        1 => word(),
    ]
}

fn create_pipeline() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        name(),
        prop::collection::vec(clause(), 0..6),
        prop_oneof![4 => pick(BODIES), 1 => soup()],
    )
        .prop_map(|(replace, name, clauses, body)| {
            let or = if replace { "OR REPLACE " } else { "" };
            format!("CREATE {or}PIPELINE {name} {} AS {body}", clauses.join(" "))
        })
}

fn create_source() -> impl Strategy<Value = String> {
    let option = (
        prop_oneof![pick(&["'k'", "base_url", "header.Accept", "'a b'"]), word()],
        prop_oneof![
            pick(&["'v'", "1", "TRUE", "'x''y'", "NULL", "$$d$$"]),
            word()
        ],
    );
    (
        any::<bool>(),
        any::<bool>(),
        name(),
        name(),
        prop::option::of(prop::collection::vec(option, 0..4)),
    )
        .prop_map(|(replace, if_not, name, ty, options)| {
            let or = if replace { "OR REPLACE " } else { "" };
            let ine = if if_not { "IF NOT EXISTS " } else { "" };
            let opts = options.map_or(String::new(), |o| {
                let kv: Vec<String> = o.into_iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!(" OPTIONS ({})", kv.join(", "))
            });
            format!("CREATE {or}SOURCE {ine}{name} TYPE {ty}{opts}")
        })
}

/// Deep nesting: must end in "nests too deeply", not a stack overflow.
fn nested() -> impl Strategy<Value = String> {
    (0..120usize, any::<bool>()).prop_map(|(d, parens)| {
        if parens {
            format!("SELECT {}1{}", "(".repeat(d), ")".repeat(d))
        } else {
            format!(
                "CREATE PIPELINE p AS INSERT INTO context.t SELECT * FROM s.e WHERE {}id > $cursor",
                "NOT ".repeat(d)
            )
        }
    })
}

/// Scripts of statements joined by semicolons (or not).
fn script() -> impl Strategy<Value = String> {
    let statement = prop_oneof![
        4 => create_pipeline(),
        2 => create_source(),
        2 => pick(OTHERS),
        1 => soup(),
        1 => nested(),
    ];
    let sep = pick(&[";", "; ", ";;", " ", "\n;\n"]);
    (prop::collection::vec((statement, sep), 1..4), any::<bool>()).prop_map(|(parts, end)| {
        let mut s = String::new();
        for (i, (statement, sep)) in parts.into_iter().enumerate() {
            if i > 0 {
                s += &sep;
            }
            s += &statement;
        }
        if end {
            s.push(';');
        }
        s
    })
}

/// Parses and renders: the error (or each statement) is displayed too.
fn parse_and_render(sql: &str) {
    match parse_statements(sql) {
        Ok(stmts) => stmts.iter().for_each(|s| drop(s.to_string())),
        Err(e) => drop(e.to_string()),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any text at all.
    #[test]
    fn fuzz_sql_arbitrary_text(sql in any::<String>()) {
        parse_and_render(&sql);
    }

    /// Text built from Hakiri's grammar, to reach deep into the clause parser.
    #[test]
    fn fuzz_sql_grammar(sql in script()) {
        parse_and_render(&sql);
    }

    /// A Hakiri statement that parses renders (`SHOW CREATE PIPELINE`) as text that parses
    /// back to the same statement.
    #[test]
    fn fuzz_sql_hakiri_statements_round_trip(sql in script()) {
        for stmt in parse_statements(&sql).unwrap_or_default() {
            if matches!(stmt, HakiriStatement::DataFusion(_)) {
                continue;
            }
            let text = stmt.to_string();
            let again = match parse_statements(&text) {
                Ok(stmts) => stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                Err(e) => {
                    return Err(TestCaseError::fail(format!("{text:?} does not parse back: {e}")));
                }
            };
            prop_assert_eq!(again, vec![text]);
        }
    }
}
