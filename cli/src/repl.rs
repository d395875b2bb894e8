//! `hakiri sql`: the interactive SQL shell (rustyline: history, completion of table and
//! column names), and `-c SQL` / `-f FILE` for scripts.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::physical_plan::memory::MemoryStream;
use hakiri_engine::{Engine, Error, Output};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use crate::Failure;
use crate::commands::print_outputs;
use crate::output::Format;

const HELP: &str = "\
Statements end with ';' and may span lines. Besides SQL and Hakiri's statements
(CREATE PIPELINE, RUN PIPELINE, SHOW PIPELINES, ...):
  \\dt          list context and state tables
  \\d           the same
  \\d NAME      the columns of a table (NAME or SCHEMA.NAME)
  \\timing      toggle the time taken by each statement
  \\?           this help
  \\q           quit (also Ctrl-D)";

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "COUNT",
    "SUM",
    "DISTINCT",
    "EXPLAIN",
    "SHOW PIPELINES",
    "SHOW SOURCES",
    "CREATE PIPELINE",
    "RUN PIPELINE",
    "DROP PIPELINE",
    "INSERT INTO",
    "CURSOR",
    "MODE",
];

/// Table and column names offered on Tab.
#[derive(Default)]
struct Names {
    words: RwLock<BTreeSet<String>>,
}

struct Shell {
    names: Arc<Names>,
}

impl Completer for Shell {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let prefix = &line[start..pos];
        if prefix.is_empty() {
            return Ok((start, Vec::new()));
        }
        let lower = prefix.to_ascii_lowercase();
        let words = self.names.words.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = words
            .iter()
            .filter(|w| w.to_ascii_lowercase().starts_with(&lower))
            .cloned()
            .collect();
        out.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
                .map(|k| k.to_string()),
        );
        Ok((start, out))
    }
}

impl Hinter for Shell {
    type Hint = String;
}
impl Highlighter for Shell {}
impl Validator for Shell {}
impl Helper for Shell {}

/// Reads table and column names for completion, from the context and state schemas only
/// (never a source's, which could mean waiting on a remote system before the prompt).
async fn refresh(engine: &Engine, names: &Names) {
    let mut words = BTreeSet::new();
    let session = engine.session();
    for schema_name in ["context", "hakiri"] {
        let Some(schema) = session
            .catalog(&session.state().config().options().catalog.default_catalog)
            .and_then(|c| c.schema(schema_name))
        else {
            continue;
        };
        for table in schema.table_names() {
            let Ok(Some(provider)) = schema.table(&table).await else {
                continue;
            };
            for f in provider.schema().fields() {
                words.insert(f.name().to_string());
            }
            words.insert(format!("{schema_name}.{table}"));
            words.insert(table);
        }
    }
    *names.words.write().unwrap_or_else(|e| e.into_inner()) = words;
}

/// `\d NAME`: the columns of a table, as a query on information_schema.
/// `\d NAME` (context, then hakiri) or `\d SCHEMA.NAME`: the table's columns, read from
/// its provider. Not a query of `information_schema.columns`, which builds every table of
/// every schema, and so would wait on any source that cannot be reached.
async fn describe(engine: &Engine, name: &str) -> Result<Output, Failure> {
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let (schemas, table) = match name.split_once('.') {
        Some((s, t)) if valid(s) && valid(t) => (vec![s], t),
        None if valid(name) => (vec!["context", "hakiri"], name),
        _ => {
            return Err(Failure {
                broken_pipe: false,
                code: 1,
                message: format!("\\d takes a table name (NAME or SCHEMA.NAME), not '{name}'"),
            });
        }
    };
    let session = engine.session();
    let catalog = session
        .catalog(&session.state().config().options().catalog.default_catalog)
        .ok_or_else(|| Error::Internal("the session has no default catalog".into()))?;
    let (mut out_schema, mut column, mut ty, mut nullable) = (vec![], vec![], vec![], vec![]);
    for s in &schemas {
        let Some(provider) = catalog.schema(s) else {
            continue;
        };
        let Some(t) = provider.table(table).await.map_err(Error::from)? else {
            continue;
        };
        for f in t.schema().fields() {
            out_schema.push(s.to_string());
            column.push(f.name().clone());
            ty.push(f.data_type().to_string());
            nullable.push(if f.is_nullable() { "YES" } else { "NO" }.to_string());
        }
        break;
    }
    if column.is_empty() {
        return Err(Error::NotFound(format!(
            "no table '{name}' in {}: \\dt lists the tables",
            schemas.join(" or ")
        ))
        .into());
    }
    let fields = ["schema", "column", "type", "nullable"]
        .map(|n| Field::new(n, DataType::Utf8, false))
        .to_vec();
    let columns: Vec<ArrayRef> = [out_schema, column, ty, nullable]
        .into_iter()
        .map(|v| Arc::new(StringArray::from(v)) as ArrayRef)
        .collect();
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(Error::from)?;
    let stream =
        MemoryStream::try_new(vec![batch.clone()], batch.schema(), None).map_err(Error::from)?;
    Ok(Output::Stream(Box::pin(stream)))
}

const LIST_TABLES: &str = "SELECT table_schema AS schema, table_name AS name, table_type AS type \
    FROM information_schema.tables WHERE table_schema IN ('context', 'hakiri') \
    ORDER BY table_schema, table_name";

/// Runs statements (or one backslash command) and prints their results.
async fn run(engine: &Engine, text: &str, timing: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let outputs = match text.trim() {
        "\\dt" | "\\d" => engine.execute(LIST_TABLES).await?,
        t if t.starts_with("\\d ") => vec![describe(engine, t[3..].trim()).await?],
        t => engine.execute(t).await?,
    };
    print_outputs(outputs, Format::Table).await?;
    if timing {
        println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// `hakiri sql`: scripts with -c/-f (or on a non-terminal stdin), else the shell.
pub async fn sql(
    engine: &Engine,
    root: &Path,
    commands: Vec<String>,
    file: Option<PathBuf>,
) -> Result<(), Failure> {
    if !commands.is_empty() || file.is_some() {
        // `-c '\timing'` turns on timing lines for the commands after it, as in psql.
        let mut timing = false;
        for command in &commands {
            if command.trim() == "\\timing" {
                timing = !timing;
                continue;
            }
            run(engine, command, timing).await?;
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(&file).map_err(|e| Failure {
                broken_pipe: false,
                code: 2,
                message: format!("cannot read {}: {e}", file.display()),
            })?;
            run(engine, &text, false).await?;
        }
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return run(engine, &text, false).await;
    }
    interactive(engine, root).await
}

async fn interactive(engine: &Engine, root: &Path) -> Result<(), Failure> {
    let names = Arc::new(Names::default());
    refresh(engine, &names).await;
    let mut editor: Editor<Shell, DefaultHistory> = Editor::new().map_err(|e| Failure {
        broken_pipe: false,
        code: 1,
        message: format!("cannot start the shell: {e}"),
    })?;
    editor.set_helper(Some(Shell {
        names: names.clone(),
    }));
    let history = root.join(".hakiri").join("sql_history");
    let _ = editor.load_history(&history);
    println!("hakiri sql: statements end with ';'. \\? for help, \\q to quit.");
    let mut timing = false;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "hakiri> "
        } else {
            "   ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                return Err(Failure {
                    broken_pipe: false,
                    code: 1,
                    message: format!("reading input: {e}"),
                });
            }
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match trimmed {
                "\\q" => break,
                "\\?" => println!("{HELP}"),
                "\\timing" => {
                    timing = !timing;
                    println!("Timing is {}.", if timing { "on" } else { "off" });
                }
                command => {
                    if let Err(f) = run(engine, command, timing).await {
                        eprintln!("error: {}", f.message);
                    }
                }
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !buffer.trim_end().ends_with(';') {
            continue;
        }
        let statement = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(statement.trim());
        if let Err(f) = run(engine, &statement, timing).await {
            eprintln!("error: {}", f.message);
        }
        refresh(engine, &names).await;
    }
    let _ = editor.save_history(&history);
    Ok(())
}
