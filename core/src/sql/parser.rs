//! The statement parser: peeks at the first words for Hakiri's statements and falls back to
//! `DFParser` for everything else.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    ObjectNamePart, Query, SetExpr, Statement as SQLStatement, TableObject, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{Error, Result};
use crate::schedule::{Interval, MissedPolicy};
use crate::types::{
    CursorKind, CursorSpec, NullRule, Origin, PipelineBuilder, PipelineSpec, SchemaPolicy,
    SourceSpec, WriteMode, validate_name,
};

/// A parsed statement: one of Hakiri's, or a DataFusion statement. Parsed once per
/// statement and matched on, so its variants stay unboxed.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum HakiriStatement {
    /// `CREATE [OR REPLACE] SOURCE [IF NOT EXISTS] name TYPE connector [OPTIONS (...)]`
    CreateSource {
        spec: SourceSpec,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `DROP SOURCE [IF EXISTS] name`
    DropSource { name: String, if_exists: bool },
    /// `CREATE [OR REPLACE] PIPELINE name [CURSOR ...] [MODE ...] AS INSERT INTO ... SELECT ...`
    CreatePipeline {
        spec: PipelineSpec,
        or_replace: bool,
    },
    /// `DROP PIPELINE [IF EXISTS] name`
    DropPipeline { name: String, if_exists: bool },
    /// `DROP CONTEXT TABLE [IF EXISTS] [context.]name`: the table, its files and state rows.
    DropContextTable { name: String, if_exists: bool },
    /// `SHOW PIPELINES`
    ShowPipelines,
    /// `SHOW SOURCES`
    ShowSources,
    /// `SHOW CREATE PIPELINE name`: the statement that recreates the pipeline.
    ShowCreatePipeline { name: String },
    /// `PLAN PIPELINE name` (also `EXPLAIN PIPELINE name`)
    PlanPipeline { name: String },
    /// `RUN PIPELINE name`
    RunPipeline { name: String },
    /// `ALTER PIPELINE name SUSPEND | RESUME`: stops or restarts its schedule.
    AlterPipeline { name: String, suspend: bool },
    /// `ALTER PIPELINE name RESET CURSOR [TO 'value']`: forgets the committed cursor (the
    /// next run starts from INITIAL or the first page) or sets it to `value`.
    ResetCursor { name: String, to: Option<String> },
    /// Anything else, for DataFusion.
    DataFusion(Box<DFStatement>),
}

impl fmt::Display for HakiriStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HakiriStatement::CreateSource {
                spec,
                or_replace,
                if_not_exists,
            } => {
                write!(
                    f,
                    "CREATE {}SOURCE {}{} TYPE {}",
                    if *or_replace { "OR REPLACE " } else { "" },
                    if *if_not_exists { "IF NOT EXISTS " } else { "" },
                    spec.name,
                    spec.connector
                )?;
                if !spec.options.is_empty() {
                    let opts: Vec<String> = spec
                        .options
                        .iter()
                        .map(|(k, v)| {
                            format!("'{}' '{}'", k.replace('\'', "''"), v.replace('\'', "''"))
                        })
                        .collect();
                    write!(f, " OPTIONS ({})", opts.join(", "))?;
                }
                Ok(())
            }
            HakiriStatement::DropSource { name, if_exists } => {
                write!(
                    f,
                    "DROP SOURCE {}{name}",
                    if *if_exists { "IF EXISTS " } else { "" }
                )
            }
            HakiriStatement::CreatePipeline { spec, or_replace } => {
                let text = spec.to_string();
                if *or_replace {
                    write!(
                        f,
                        "CREATE OR REPLACE {}",
                        text.trim_start_matches("CREATE ")
                    )
                } else {
                    write!(f, "{text}")
                }
            }
            HakiriStatement::DropPipeline { name, if_exists } => {
                write!(
                    f,
                    "DROP PIPELINE {}{name}",
                    if *if_exists { "IF EXISTS " } else { "" }
                )
            }
            HakiriStatement::DropContextTable { name, if_exists } => {
                write!(
                    f,
                    "DROP CONTEXT TABLE {}context.{name}",
                    if *if_exists { "IF EXISTS " } else { "" }
                )
            }
            HakiriStatement::ShowPipelines => write!(f, "SHOW PIPELINES"),
            HakiriStatement::ShowSources => write!(f, "SHOW SOURCES"),
            HakiriStatement::ShowCreatePipeline { name } => {
                write!(f, "SHOW CREATE PIPELINE {name}")
            }
            HakiriStatement::PlanPipeline { name } => write!(f, "PLAN PIPELINE {name}"),
            HakiriStatement::RunPipeline { name } => write!(f, "RUN PIPELINE {name}"),
            HakiriStatement::AlterPipeline { name, suspend } => write!(
                f,
                "ALTER PIPELINE {name} {}",
                if *suspend { "SUSPEND" } else { "RESUME" }
            ),
            HakiriStatement::ResetCursor { name, to } => match to {
                Some(v) => write!(
                    f,
                    "ALTER PIPELINE {name} RESET CURSOR TO '{}'",
                    v.replace('\'', "''")
                ),
                None => write!(f, "ALTER PIPELINE {name} RESET CURSOR"),
            },
            HakiriStatement::DataFusion(s) => write!(f, "{s}"),
        }
    }
}

/// Parses `sql` into statements separated by `;`.
///
/// # Errors
/// `InvalidInput` with the position and what was expected.
pub fn parse_statements(sql: &str) -> Result<Vec<HakiriStatement>> {
    let dialect = GenericDialect {};
    let mut p = HakiriParser {
        df: DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .build()
            .map_err(df_parse_err)?,
    };
    let mut out = Vec::new();
    loop {
        while p.df.parser.consume_token(&Token::SemiColon) {}
        if p.df.parser.peek_token().token == Token::EOF {
            break;
        }
        out.push(p.parse_statement()?);
        if !p.df.parser.consume_token(&Token::SemiColon)
            && p.df.parser.peek_token().token != Token::EOF
        {
            let t = p.df.parser.peek_token();
            return Err(Error::InvalidInput(format!(
                "SQL error: expected ';' or the end of the statement, found '{}' at {}",
                t.token, t.span.start
            )));
        }
    }
    Ok(out)
}

struct HakiriParser<'a> {
    df: DFParser<'a>,
}

fn sql_err(e: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("SQL error: {e}"))
}

/// A sqlparser error as one `SQL error: <what>` message, without the parser's own prefix.
fn parse_err(e: ParserError) -> Error {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => sql_err(m),
        ParserError::RecursionLimitExceeded => sql_err("the statement nests too deeply"),
    }
}

/// A parse error raised through `DFParser` (possibly wrapped with a diagnostic), rendered
/// like [`parse_err`].
fn df_parse_err(e: DataFusionError) -> Error {
    match e.find_root() {
        DataFusionError::SQL(pe, _) => parse_err(pe.as_ref().clone()),
        _ => e.into(),
    }
}

impl HakiriParser<'_> {
    fn word(&self, n: usize) -> Option<String> {
        match self.df.parser.peek_nth_token(n).token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn words_are(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| self.word(i).as_deref() == Some(*w))
    }

    fn eat(&mut self, words: &[&str]) -> bool {
        if self.words_are(words) {
            for _ in words {
                self.df.parser.next_token();
            }
            true
        } else {
            false
        }
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(&[word]) {
            Ok(())
        } else {
            let t = self.df.parser.peek_token();
            Err(sql_err(format!(
                "expected {word}, found '{}' at {}",
                t.token, t.span.start
            )))
        }
    }

    fn name(&mut self, kind: &str) -> Result<String> {
        let ident = self.df.parser.parse_identifier().map_err(parse_err)?;
        validate_name(kind, &ident.value)?;
        Ok(ident.value)
    }

    fn string(&mut self) -> Result<String> {
        self.df.parser.parse_literal_string().map_err(parse_err)
    }

    fn parse_statement(&mut self) -> Result<HakiriStatement> {
        let create_source = ["CREATE", "SOURCE"];
        if self.words_are(&create_source) || self.words_are(&["CREATE", "OR", "REPLACE", "SOURCE"])
        {
            self.eat(&["CREATE"]);
            let or_replace = self.eat(&["OR", "REPLACE"]);
            self.expect("SOURCE")?;
            let if_not_exists = self.eat(&["IF", "NOT", "EXISTS"]);
            let name = self.name("source")?;
            self.expect("TYPE")?;
            let connector = self.name("connector type")?.to_ascii_lowercase();
            let options = self.options()?;
            let spec = SourceSpec {
                name,
                connector,
                options,
                origin: Origin::Sql,
            };
            return Ok(HakiriStatement::CreateSource {
                spec,
                or_replace,
                if_not_exists,
            });
        }
        if self.words_are(&["CREATE", "PIPELINE"])
            || self.words_are(&["CREATE", "OR", "REPLACE", "PIPELINE"])
        {
            self.eat(&["CREATE"]);
            let or_replace = self.eat(&["OR", "REPLACE"]);
            self.expect("PIPELINE")?;
            return self.create_pipeline(or_replace);
        }
        if self.eat(&["DROP", "CONTEXT", "TABLE"]) {
            let if_exists = self.eat(&["IF", "EXISTS"]);
            let mut name = self.name("table")?;
            if name.eq_ignore_ascii_case("context")
                && self
                    .df
                    .parser
                    .consume_token(&datafusion::sql::sqlparser::tokenizer::Token::Period)
            {
                name = self.name("table")?;
            }
            return Ok(HakiriStatement::DropContextTable { name, if_exists });
        }
        for (kw, is_pipeline) in [("PIPELINE", true), ("SOURCE", false)] {
            if self.eat(&["DROP", kw]) {
                let if_exists = self.eat(&["IF", "EXISTS"]);
                let name = self.name(if is_pipeline { "pipeline" } else { "source" })?;
                return Ok(if is_pipeline {
                    HakiriStatement::DropPipeline { name, if_exists }
                } else {
                    HakiriStatement::DropSource { name, if_exists }
                });
            }
        }
        if self.eat(&["SHOW", "PIPELINES"]) {
            return Ok(HakiriStatement::ShowPipelines);
        }
        if self.eat(&["SHOW", "SOURCES"]) {
            return Ok(HakiriStatement::ShowSources);
        }
        if self.eat(&["SHOW", "CREATE", "PIPELINE"]) {
            return Ok(HakiriStatement::ShowCreatePipeline {
                name: self.name("pipeline")?,
            });
        }
        if self.eat(&["PLAN", "PIPELINE"]) || self.eat(&["EXPLAIN", "PIPELINE"]) {
            return Ok(HakiriStatement::PlanPipeline {
                name: self.name("pipeline")?,
            });
        }
        if self.eat(&["ALTER", "PIPELINE"]) {
            let name = self.name("pipeline")?;
            if self.eat(&["RESET", "CURSOR"]) {
                let to = if self.eat(&["TO"]) {
                    Some(self.string()?)
                } else {
                    None
                };
                return Ok(HakiriStatement::ResetCursor { name, to });
            }
            let suspend = if self.eat(&["SUSPEND"]) {
                true
            } else if self.eat(&["RESUME"]) {
                false
            } else {
                let t = self.df.parser.peek_token();
                return Err(sql_err(format!(
                    "expected SUSPEND, RESUME or RESET CURSOR [TO 'value'] after ALTER PIPELINE {name}, found '{}' at {}",
                    t.token, t.span.start
                )));
            };
            return Ok(HakiriStatement::AlterPipeline { name, suspend });
        }
        if self.eat(&["RUN", "PIPELINE"]) {
            return Ok(HakiriStatement::RunPipeline {
                name: self.name("pipeline")?,
            });
        }
        let stmt = self.df.parse_statement().map_err(df_parse_err)?;
        Ok(HakiriStatement::DataFusion(Box::new(stmt)))
    }

    /// `OPTIONS ('key' 'value', key.sub 'value', ...)`; keys are case-sensitive.
    fn options(&mut self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if !self.eat(&["OPTIONS"]) {
            return Ok(out);
        }
        self.df
            .parser
            .expect_token(&Token::LParen)
            .map_err(parse_err)?;
        if self.df.parser.consume_token(&Token::RParen) {
            return Ok(out);
        }
        loop {
            let key = self.df.parse_option_key().map_err(df_parse_err)?;
            let value = match self.df.parse_option_value().map_err(df_parse_err)? {
                Value::SingleQuotedString(s)
                | Value::DoubleQuotedString(s)
                | Value::EscapedStringLiteral(s) => s,
                Value::Number(n, _) => n,
                other => other.to_string(),
            };
            if out.insert(key.clone(), value).is_some() {
                return Err(sql_err(format!("option '{key}' is given twice")));
            }
            if self.df.parser.consume_token(&Token::RParen) {
                return Ok(out);
            }
            self.df
                .parser
                .expect_token(&Token::Comma)
                .map_err(parse_err)?;
        }
    }

    fn identifier_list(&mut self) -> Result<Vec<String>> {
        self.df
            .parser
            .expect_token(&Token::LParen)
            .map_err(parse_err)?;
        let mut out = Vec::new();
        loop {
            out.push(self.df.parser.parse_identifier().map_err(parse_err)?.value);
            if self.df.parser.consume_token(&Token::RParen) {
                return Ok(out);
            }
            self.df
                .parser
                .expect_token(&Token::Comma)
                .map_err(parse_err)?;
        }
    }

    /// The next word, upper-cased, or an error saying what was expected after `after`.
    fn keyword(&mut self, after: &str, expected: &str) -> Result<String> {
        let w = self.word(0).ok_or_else(|| {
            let t = self.df.parser.peek_token();
            sql_err(format!(
                "expected {expected} after {after}, found '{}' at {}",
                t.token, t.span.start
            ))
        })?;
        self.df.parser.next_token();
        Ok(w)
    }

    /// A positive whole number; `example` shows the clause it belongs to.
    fn count(&mut self, example: &str) -> Result<u64> {
        match self.df.parser.next_token().token {
            Token::Number(n, _) => n.parse::<u64>().ok().filter(|n| *n > 0),
            _ => None,
        }
        .ok_or_else(|| sql_err(format!("expected a positive whole number: {example}")))
    }

    /// [`HakiriParser::count`] that fits a u32. Regression (found by
    /// fuzz_sql_hakiri_statements_round_trip): `SUSPEND AFTER 4294967296 FAILURES` was cut
    /// to 0 by `as u32`.
    fn count_u32(&mut self, example: &str) -> Result<u32> {
        let n = self.count(example)?;
        u32::try_from(n).map_err(|_| {
            sql_err(format!(
                "{n} is too large (at most {}): {example}",
                u32::MAX
            ))
        })
    }

    /// `CREATE PIPELINE name [CURSOR ...] [CHECKPOINT EVERY n PAGES] [MODE ...]
    /// [ON SCHEMA CHANGE ...] [SCHEDULE ...] AS INSERT INTO context.t SELECT ...`; clauses in
    /// any order.
    fn create_pipeline(&mut self, or_replace: bool) -> Result<HakiriStatement> {
        let name = self.name("pipeline")?;
        // The SQL is filled in after the clauses; the builder owns defaults and checks.
        let mut p = PipelineBuilder::new(name, String::new(), Origin::Sql);
        loop {
            if self.eat(&["CURSOR"]) {
                let kind =
                    CursorKind::parse(&self.keyword("CURSOR", "MONOTONIC, TOKEN or SNAPSHOT")?)?;
                let mut c = CursorSpec {
                    kind,
                    ..CursorSpec::default()
                };
                if kind == CursorKind::Monotonic {
                    let cols = self.identifier_list()?;
                    if cols.len() != 1 {
                        return Err(sql_err(
                            "a monotonic cursor names one column: CURSOR MONOTONIC (column)",
                        ));
                    }
                    c.column = cols.into_iter().next();
                }
                loop {
                    if self.eat(&["INITIAL"]) {
                        c.initial = Some(self.string()?);
                    } else if self.eat(&["LAG"]) {
                        c.lag = Some(self.string()?);
                    } else if self.eat(&["ON", "NULL"]) {
                        c.on_null =
                            NullRule::parse(&self.keyword("ON NULL", "FAIL, SKIP or LOAD")?)?;
                    } else {
                        break;
                    }
                }
                p.cursor = Some(c);
            } else if self.eat(&["CHECKPOINT", "EVERY"]) {
                p.checkpoint_pages = Some(self.count("CHECKPOINT EVERY 10 PAGES")?);
                self.expect("PAGES")?;
            } else if self.eat(&["SCHEDULE"]) {
                if self.eat(&["EVERY"]) {
                    p.schedule.every = Some(Interval::parse("SCHEDULE EVERY", &self.string()?)?);
                } else if self.eat(&["CRON"]) {
                    p.schedule.cron = Some(self.string()?);
                    if self.eat(&["TZ"]) {
                        p.schedule.tz = Some(self.string()?);
                    }
                } else {
                    return Err(sql_err(
                        "expected EVERY '15 minutes' or CRON '0 * * * *' after SCHEDULE",
                    ));
                }
            } else if self.eat(&["JITTER"]) {
                p.schedule.jitter = Some(Interval::parse("JITTER", &self.string()?)?);
            } else if self.eat(&["ON", "MISSED"]) {
                p.schedule.on_missed = Some(if self.eat(&["SKIP"]) {
                    MissedPolicy::Skip
                } else if self.eat(&["RUN", "ONCE"]) {
                    MissedPolicy::RunOnce
                } else {
                    return Err(sql_err("expected SKIP or RUN ONCE after ON MISSED"));
                });
            } else if self.eat(&["RETRY"]) {
                p.schedule.retries = Some(self.count_u32("RETRY 3 [BACKOFF '30 seconds']")?);
                if self.eat(&["BACKOFF"]) {
                    p.schedule.backoff = Some(Interval::parse("BACKOFF", &self.string()?)?);
                }
            } else if self.eat(&["SUSPEND", "AFTER"]) {
                p.schedule.suspend_after = Some(self.count_u32("SUSPEND AFTER 3 FAILURES")?);
                if !self.eat(&["FAILURES"]) {
                    self.expect("FAILURE")?;
                }
            } else if self.eat(&["MODE"]) {
                let m = WriteMode::parse(&self.keyword("MODE", "APPEND, MERGE or REPLACE")?)?;
                if m == WriteMode::Merge {
                    if !self.eat(&["KEY"]) {
                        return Err(sql_err(
                            "MODE MERGE needs the columns that identify a row: MODE MERGE KEY (id)",
                        ));
                    }
                    p.key = self.identifier_list()?;
                }
                p.mode = Some(m);
            } else if self.eat(&["ON", "SCHEMA", "CHANGE"]) {
                p.on_schema_change = Some(SchemaPolicy::parse(
                    &self.keyword("ON SCHEMA CHANGE", "EVOLVE, FREEZE or DISCARD")?,
                )?);
            } else {
                break;
            }
        }
        self.expect("AS")?;
        let stmt = self.df.parser.parse_statement().map_err(parse_err)?;
        PipelineBody::from_statement(&stmt)?;
        p.sql = stmt.to_string();
        let spec = p.build()?;
        Ok(HakiriStatement::CreatePipeline { spec, or_replace })
    }
}

/// A pipeline body split into its target table and the query that feeds it.
#[derive(Debug, Clone)]
pub struct PipelineBody {
    pub target: String,
    pub query: Box<Query>,
}

impl PipelineBody {
    fn from_statement(stmt: &SQLStatement) -> Result<Self> {
        let SQLStatement::Insert(insert) = stmt else {
            return Err(Error::InvalidInput(format!(
                "a pipeline body must be INSERT INTO context.<table> SELECT ..., found: {stmt}"
            )));
        };
        let TableObject::TableName(name) = &insert.table else {
            return Err(Error::InvalidInput(
                "a pipeline inserts into a table name: INSERT INTO context.<table>".into(),
            ));
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => Ok(i.value.clone()),
                other => Err(Error::InvalidInput(format!(
                    "unsupported table name part '{other}'"
                ))),
            })
            .collect::<Result<_>>()?;
        let target = match parts.as_slice() {
            [t] => t.clone(),
            [s, t] if s == "context" => t.clone(),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "a pipeline writes into the context store: use INSERT INTO context.<table> (got '{name}')"
                )));
            }
        };
        validate_name("table", &target)?;
        if !insert.columns.is_empty() {
            return Err(Error::Unsupported(
                "a column list after INSERT INTO is not supported: name the columns in the SELECT with AS".into(),
            ));
        }
        let query = insert.source.clone().ok_or_else(|| {
            Error::InvalidInput(
                "a pipeline body needs a query: INSERT INTO context.<table> SELECT ...".into(),
            )
        })?;
        if matches!(query.body.as_ref(), SetExpr::Values(_)) {
            return Err(Error::InvalidInput(
                "a pipeline reads from a source: use SELECT ... FROM <source>.<table>, not VALUES"
                    .into(),
            ));
        }
        Ok(PipelineBody { target, query })
    }
}

/// Parses a pipeline body (`INSERT INTO context.t SELECT ...`).
pub fn parse_pipeline_body(sql: &str) -> Result<PipelineBody> {
    let dialect = GenericDialect {};
    let mut stmts = Parser::parse_sql(&dialect, sql).map_err(parse_err)?;
    if stmts.len() != 1 {
        return Err(Error::InvalidInput(format!(
            "a pipeline body is one INSERT INTO ... SELECT statement, found {}",
            stmts.len()
        )));
    }
    PipelineBody::from_statement(&stmts.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_round_trips_through_display() {
        let sql = "CREATE OR REPLACE PIPELINE p CURSOR MONOTONIC (id) INITIAL '0' MODE APPEND AS INSERT INTO context.t SELECT * FROM s.e WHERE id > $cursor";
        let stmts = parse_statements(sql).unwrap();
        let again = parse_statements(&stmts[0].to_string()).unwrap();
        assert_eq!(stmts[0].to_string(), again[0].to_string());
        match &stmts[0] {
            HakiriStatement::CreatePipeline { spec, or_replace } => {
                assert!(or_replace);
                assert_eq!(spec.target, "t");
                assert_eq!(spec.cursor.as_ref().unwrap().column.as_deref(), Some("id"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn source_options_and_fallback() {
        let stmts = parse_statements(
            "CREATE SOURCE gh TYPE http OPTIONS ('base_url' 'http://x', header.Accept 'a/b'); SELECT 1; show pipelines",
        )
        .unwrap();
        assert_eq!(stmts.len(), 3);
        let HakiriStatement::CreateSource { spec, .. } = &stmts[0] else {
            panic!()
        };
        assert_eq!(spec.options["header.Accept"], "a/b");
        assert!(matches!(stmts[1], HakiriStatement::DataFusion(_)));
        assert!(matches!(stmts[2], HakiriStatement::ShowPipelines));
    }

    #[test]
    fn parse_errors_read_the_same_from_every_layer() {
        for sql in [
            "CREATE SOURCE 1x TYPE http",
            "CREATE SOURCE s TYPE http OPTIONS (a)",
            "selec 1",
        ] {
            let msg = parse_statements(sql).unwrap_err().to_string();
            assert!(msg.starts_with("SQL error: Expected"), "{sql}: {msg}");
        }
    }

    #[test]
    fn schedules_round_trip_and_alter_parses() {
        let sql = "CREATE PIPELINE p SUSPEND AFTER 3 FAILURES SCHEDULE CRON '0 9 * * *' TZ 'Europe/Berlin' RETRY 2 BACKOFF '10 seconds' JITTER '1 minute' ON MISSED RUN ONCE AS INSERT INTO context.t SELECT * FROM s.e";
        let stmts = parse_statements(sql).unwrap();
        let text = stmts[0].to_string();
        assert!(
            text.contains("SCHEDULE CRON '0 9 * * *' TZ 'Europe/Berlin' JITTER '1 minute' ON MISSED RUN ONCE RETRY 2 BACKOFF '10 seconds' SUSPEND AFTER 3 FAILURES AS"),
            "{text}"
        );
        assert_eq!(parse_statements(&text).unwrap()[0].to_string(), text);
        let every = parse_statements(
            "CREATE PIPELINE p SCHEDULE EVERY '15 minutes' AS INSERT INTO context.t SELECT * FROM s.e",
        )
        .unwrap();
        assert!(
            every[0]
                .to_string()
                .contains("SCHEDULE EVERY '15 minutes' AS")
        );
        assert!(matches!(
            parse_statements("alter pipeline p suspend").unwrap()[0],
            HakiriStatement::AlterPipeline { suspend: true, .. }
        ));
        for sql in [
            "ALTER PIPELINE p RESET CURSOR",
            "ALTER PIPELINE p RESET CURSOR TO '2026-01-01T00:00:00Z'",
            "ALTER PIPELINE p RESET CURSOR TO 'it''s'",
        ] {
            let stmt = parse_statements(sql).unwrap().remove(0);
            assert!(matches!(stmt, HakiriStatement::ResetCursor { .. }));
            assert_eq!(stmt.to_string(), sql);
        }
        for (bad, says) in [
            (
                "CREATE PIPELINE p RETRY 2 AS INSERT INTO context.t SELECT * FROM s.e",
                "RETRY goes with a schedule",
            ),
            (
                "CREATE PIPELINE p SCHEDULE HOURLY AS INSERT INTO context.t SELECT * FROM s.e",
                "expected EVERY",
            ),
            (
                "CREATE PIPELINE p SCHEDULE CRON 'nope' AS INSERT INTO context.t SELECT * FROM s.e",
                "five fields",
            ),
            (
                "ALTER PIPELINE p STOP",
                "expected SUSPEND, RESUME or RESET CURSOR",
            ),
        ] {
            let e = parse_statements(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_target_is_explained() {
        let err =
            parse_statements("CREATE PIPELINE p AS INSERT INTO other.t SELECT 1").unwrap_err();
        assert!(
            err.to_string().contains("INSERT INTO context.<table>"),
            "{err}"
        );
    }
}
