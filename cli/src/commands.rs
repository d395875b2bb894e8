//! Opening the project and running each subcommand.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use hakiri_engine::{ChangeSet, Engine, EngineOptions, Error, Output, PlanReport, RunSummary};

use crate::output::{Format, print_stream};
use crate::{
    Cli, Command, ConnectorCommand, ContextCommand, Failure, PipelineCommand, SchemaCommand,
    SourceCommand,
};

fn config_err(msg: String) -> Failure {
    Failure {
        broken_pipe: false,
        code: 2,
        message: msg,
    }
}

/// Finds the project folder from `--project` or the working directory.
fn project_root(flag: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| config_err(format!("cannot read the working directory: {e}")))?;
    match flag {
        Some(dir) => {
            let dir = if dir.is_absolute() { dir } else { cwd.join(dir) };
            if !hakiri_manifests::is_project(&dir) {
                return Err(config_err(format!(
                    "{} holds no hakiri.toml (or hakiri.json): create a project with `hakiri init NAME`",
                    dir.display()
                )));
            }
            Ok(dir)
        }
        None => hakiri_manifests::find_project(&cwd).ok_or_else(|| {
            config_err(format!(
                "no hakiri.toml (or hakiri.json) in {} or any parent folder: run inside a project, pass --project DIR, or create one with `hakiri init NAME`",
                cwd.display()
            ))
        }),
    }
}

/// `HAKIRI_NOW=<RFC 3339 instant>` fixes the time the engine sees (run start times, the
/// `_hakiri_loaded_at` column): for tests and demos that replay several days.
fn fixed_clock() -> Result<Option<std::sync::Arc<dyn hakiri_engine::ports::Clock>>, Failure> {
    let Ok(at) = std::env::var("HAKIRI_NOW") else {
        return Ok(None);
    };
    let at = chrono::DateTime::parse_from_rfc3339(&at).map_err(|e| {
        config_err(format!(
            "HAKIRI_NOW={at} is not an RFC 3339 instant ({e}); write it like 2026-11-27T09:00:00Z, or unset it to use the system clock"
        ))
    })?;
    Ok(Some(std::sync::Arc::new(
        hakiri_engine::ports::ManualClock::new(at.with_timezone(&chrono::Utc)),
    )))
}

/// The store's keys from `[store]`: `encryption_key` and `previous_keys`, each a secret
/// reference resolved now.
fn store_keys(
    store: &hakiri_engine::types::StoreSpec,
) -> Result<Option<hakiri_engine::store::StoreKeys>, Failure> {
    let key = |option: &str, reference: &str| -> Result<hakiri_engine::store::StoreKey, Failure> {
        let text = hakiri_engine::sources::resolve_value(option, reference)?;
        let what = if reference.starts_with("env:") {
            format!("the store key ({reference})")
        } else {
            format!("the store key ({option})")
        };
        Ok(hakiri_engine::store::StoreKey::from_hex(&what, &text)?)
    };
    let Some(current) = &store.encryption_key else {
        return Ok(None);
    };
    let current = key("[store] encryption_key", current)?;
    let previous = store
        .previous_keys
        .iter()
        .map(|r| key("[store] previous_keys", r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(hakiri_engine::store::StoreKeys::new(
        current, previous,
    )))
}

/// Opens the project and brings the catalog in line with the manifest (or, with `apply`
/// false, only the session: `plan` shows the changes without writing them).
pub(crate) fn open(root: &std::path::Path, apply: bool) -> Result<(Engine, ChangeSet), Failure> {
    let manifest = hakiri_manifests::load(root)?;
    let manifest_file = hakiri_manifests::manifest_path(root)?;
    let manifest_file = manifest_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let options = EngineOptions {
        connectors: {
            let mut c = hakiri_table_providers::connectors(root);
            c.push(std::sync::Arc::new(hakiri_wasm::WasmSource::new(root)));
            c.push(std::sync::Arc::new(hakiri_sync::DeltaSource));
            c
        },
        table_factories: hakiri_table_providers::table_factories(),
        clock: fixed_clock()?,
        catalog: manifest
            .catalog
            .as_ref()
            .map(crate::catalog::open)
            .transpose()?,
        run_guard: match &manifest.sync {
            Some(spec) => Some(std::sync::Arc::new(hakiri_sync::Leases::new(
                root,
                spec,
                &manifest.project,
            ))),
            None => None,
        },
        store_key: store_keys(&manifest.store)?,
        observers: crate::lineage::from_env(&manifest.project)
            .map(|o| o as std::sync::Arc<dyn hakiri_engine::ports::RunObserver>)
            .into_iter()
            .chain(crate::telemetry::observer())
            .collect(),
    };
    let mut engine = Engine::open(root, options)?;
    crate::telemetry::watch_catalog(engine.catalog());
    hakiri_udfs::register_all(engine.session_mut()).map_err(Error::from)?;
    let rec = engine.recovery();
    if !rec.interrupted_runs.is_empty() {
        eprintln!(
            "recovered: {} run(s) left running by a stopped process are marked partial_failure: {}",
            rec.interrupted_runs.len(),
            rec.interrupted_runs.join(", ")
        );
    }
    if !rec.removed_files.is_empty() {
        eprintln!(
            "recovered: removed {} uncommitted file(s) from the context store",
            rec.removed_files.len()
        );
    }
    let changes = engine
        .sync_manifest(&manifest.sources, &manifest.pipelines, apply)
        .map_err(|e| Failure {
            broken_pipe: false,
            code: 2,
            message: format!("{manifest_file}: {e}"),
        })?;
    Ok((engine, changes))
}

pub async fn dispatch(cli: Cli) -> Result<(), Failure> {
    // serve and the control plane install their logs with OpenTelemetry themselves.
    if !matches!(cli.command, Command::Serve { .. } | Command::Control { .. })
        && crate::telemetry::configured()
    {
        init_logs(None);
    }
    match &cli.command {
        Command::Init { name, format } => return crate::init::init(name, *format),
        Command::Schema {
            command: SchemaCommand::Export { output },
        } => return export_schema(output.as_deref()),
        Command::Connector {
            command: ConnectorCommand::Inspect { file },
        } => {
            let text = hakiri_wasm::inspect::inspect(file)
                .await
                .map_err(Error::from)?;
            print!("{text}");
            return Ok(());
        }
        _ => {}
    }
    let cli = match cli.command {
        Command::Control { command } => return crate::team::control(command).await,
        Command::Team(args) => return crate::team::team(cli.project, args).await,
        Command::Serve {
            control: Some(url),
            node_id: Some(node_id),
            team_project,
            heartbeat,
            log_format,
            ..
        } => {
            init_logs(Some(log_format));
            let cwd = std::env::current_dir()?;
            let root = cli.project.map(|p| cwd.join(p)).unwrap_or(cwd);
            return crate::team::node(root, url, node_id, team_project, heartbeat).await;
        }
        command => Cli { command, ..cli },
    };
    let root = project_root(cli.project)?;
    match cli.command {
        Command::Init { .. }
        | Command::Schema { .. }
        | Command::Connector { .. }
        | Command::Control { .. }
        | Command::Team(_) => {
            unreachable!("handled above")
        }
        Command::Run {
            pipeline,
            all,
            from,
            to,
        } => {
            let (engine, _) = open(&root, true)?;
            if let (Some(name), Some(from)) = (&pipeline, from) {
                let window = hakiri_engine::rewind::Window { from, to };
                let summary = run_one(&engine, name, Some(window)).await?;
                println!("{}", summary_line(&summary));
                return Ok(());
            }
            let names: Vec<String> = match (pipeline, all) {
                (Some(p), _) => vec![p],
                (None, true) => engine.pipelines().into_iter().map(|p| p.name).collect(),
                (None, false) => {
                    let names: Vec<String> =
                        engine.pipelines().into_iter().map(|p| p.name).collect();
                    return Err(config_err(format!(
                        "name a pipeline to run, or pass --all; the pipelines are: {}",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    )));
                }
            };
            if names.len() == 1 {
                let summary = run_one(&engine, &names[0], None).await?;
                println!("{}", summary_line(&summary));
                return Ok(());
            }
            let mut failed = Vec::new();
            for name in names {
                match run_one(&engine, &name, None).await {
                    Ok(summary) => println!("{}", summary_line(&summary)),
                    Err(f) => {
                        eprintln!("error: {}", f.message);
                        failed.push(name);
                    }
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure {
                    broken_pipe: false,
                    code: 1,
                    message: format!(
                        "{} pipeline run(s) failed: {}",
                        failed.len(),
                        failed.join(", ")
                    ),
                })
            }
        }
        Command::Serve {
            pg_listen,
            mcp_listen,
            max_concurrent_runs,
            shutdown_grace,
            log_format,
            ..
        } => {
            let options = ServeOptions {
                pg_listen,
                mcp_listen,
                max_concurrent_runs,
                shutdown_grace: std::time::Duration::from_secs_f64(shutdown_grace),
                log_format,
            };
            serve(&root, options).await
        }
        Command::Mcp => {
            let (engine, _) = open(&root, true)?;
            hakiri_mcp::serve_stdio(std::sync::Arc::new(engine))
                .await
                .map_err(|e| Failure {
                    broken_pipe: false,
                    code: 1,
                    message: e,
                })
        }
        Command::Query { sql, format } => {
            let (engine, _) = open(&root, true)?;
            print_outputs(engine.execute(&sql).await?, format).await
        }
        Command::Sql { command, file } => {
            let (engine, _) = open(&root, true)?;
            crate::repl::sql(&engine, &root, command, file).await
        }
        Command::Plan { pipeline } => {
            let (engine, changes) = open(&root, false)?;
            print_changes(&changes);
            let names: Vec<String> = match pipeline {
                Some(p) => vec![p],
                None => engine.pipelines().into_iter().map(|p| p.name).collect(),
            };
            for name in names {
                println!();
                print_plan(&engine.plan_pipeline(&name).await?);
            }
            Ok(())
        }
        Command::Sync { command } => crate::sync::run(&root, command).await,
        Command::Source { command } => {
            let (engine, _) = open(&root, true)?;
            match command {
                SourceCommand::List => {
                    for s in engine.sources() {
                        println!("{}\t{}\t{}", s.name, s.connector, s.origin.as_str());
                    }
                }
                SourceCommand::Tables { name } => {
                    for t in engine.source_tables(&name).await? {
                        println!("{t}");
                    }
                }
                SourceCommand::Refresh { name } => {
                    for (table, schema) in engine.refresh_source(&name).await? {
                        let columns: Vec<String> = schema
                            .fields()
                            .iter()
                            .map(|f| format!("{} {}", f.name(), f.data_type()))
                            .collect();
                        println!("{name}.{table}: {}", columns.join(", "));
                    }
                }
                SourceCommand::Sample {
                    table,
                    limit,
                    format,
                } => {
                    let stream = engine.sample(&table, limit).await?;
                    print_stream(stream, format).await?;
                }
            }
            Ok(())
        }
        Command::Context {
            command: command @ (ContextCommand::Compact { .. } | ContextCommand::Rekey { .. }),
        } => {
            let (engine, _) = open(&root, true)?;
            let manifest = hakiri_manifests::load(&root)?;
            let mut options = hakiri_engine::maintain::CompactOptions::from_spec(&manifest.store);
            let table = match command {
                ContextCommand::Compact {
                    table,
                    target_mb,
                    sort_by,
                } => {
                    if let Some(mb) = target_mb {
                        options.target_bytes = Some(mb.clamp(1, 1 << 20) * 1024 * 1024);
                    }
                    if let (Some(cols), Some(t)) = (sort_by, &table) {
                        let cols = cols
                            .split(',')
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty());
                        options.sort_by.insert(t.clone(), cols.collect());
                    }
                    table
                }
                ContextCommand::Rekey { table } => {
                    if manifest.store.encryption_key.is_none() {
                        return Err(Error::Config(
                            "nothing to rekey: the store has no key; set [store] encryption_key (and previous_keys to the key it had) first".into(),
                        )
                        .into());
                    }
                    options.rekey = true;
                    table
                }
                ContextCommand::Prune => unreachable!("matched above"),
            };
            let progress = |line: &str| eprintln!("{line}");
            let done = engine
                .compact(table.as_deref(), &options, &progress)
                .await?;
            let failed = done.iter().any(|c| {
                c.skipped
                    .as_deref()
                    .is_some_and(|s| s.starts_with("failed"))
            });
            for c in done {
                match c.skipped {
                    Some(why) => println!(
                        "{}: {} files, nothing to do ({why})",
                        c.table, c.files_before
                    ),
                    None => println!(
                        "{}: {} files -> {} files ({} rows rewritten)",
                        c.table, c.files_before, c.files_after, c.rows
                    ),
                }
            }
            if options.rekey && !failed && table.is_none() {
                println!(
                    "every file of the store is now under the current key: remove [store] previous_keys once no running process still uses them"
                );
            }
            Ok(())
        }
        Command::Context {
            command: ContextCommand::Prune,
        } => {
            let (engine, _) = open(&root, true)?;
            let manifest = hakiri_manifests::load(&root)?;
            let r = &manifest.retention;
            if r.runs.is_none() && r.events.is_none() && r.cursor_history.is_none() {
                println!(
                    "nothing to prune: the manifest has no [retention] (e.g. runs = \"90 days\")"
                );
                return Ok(());
            }
            let p = engine.prune(r)?;
            let files = engine.purge_retired_files()?;
            println!(
                "pruned {} run(s), {} event(s), {} cursor history row(s); {files} retired file(s) deleted",
                p.runs, p.events, p.cursor_history
            );
            Ok(())
        }
        Command::Pipeline {
            command: PipelineCommand::List,
        } => {
            let (engine, _) = open(&root, true)?;
            let stream = engine
                .query(
                    "SELECT p.name, p.target_table, p.write_mode, p.cursor_kind, c.value AS cursor_value,
                            r.status AS last_status, r.started_at AS last_run, r.rows_written AS last_rows
                     FROM hakiri.pipelines p
                     LEFT JOIN hakiri.cursors c ON c.pipeline = p.name
                     LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY pipeline ORDER BY started_at DESC) AS n
                                FROM hakiri.runs) r ON r.pipeline = p.name AND r.n = 1
                     ORDER BY p.name",
                )
                .await?;
            print_stream(stream, Format::Table).await?;
            Ok(())
        }
        Command::Pipeline {
            command: PipelineCommand::Describe { name },
        } => {
            let (engine, _) = open(&root, true)?;
            let spec = engine.pipeline(&name)?;
            println!("pipeline:   {}", spec.name);
            println!("target:     context.{}", spec.target);
            println!("write mode: {}", spec.mode.as_str());
            println!("origin:     {}", spec.origin.as_str());
            match &spec.cursor {
                Some(c) => {
                    let committed = engine.catalog().cursor(&spec.name)?;
                    let boundary = engine.catalog().cursor_boundary(&spec.name)?;
                    let boundary = boundary
                        .and_then(|b| hakiri_engine::cursor::BoundaryRows::parse(&b, &name).ok())
                        .map(|b| format!(", {} record(s) at the boundary already loaded", b.rows()))
                        .unwrap_or_default();
                    println!(
                        "cursor:     {} ({}), initial {}, committed {}{boundary}",
                        c.kind.as_str(),
                        c.column.as_deref().unwrap_or("-"),
                        c.initial.as_deref().unwrap_or("none"),
                        match committed.as_deref() {
                            Some("") => "(the first page, read again)",
                            Some(v) => v,
                            None => "none yet",
                        }
                    );
                }
                None => println!("cursor:     none (every run reads everything)"),
            }
            if let Some(schedule) = &spec.schedule {
                let state = engine
                    .schedules()?
                    .into_iter()
                    .find(|(p, _)| p.name == spec.name)
                    .map(|(_, s)| s);
                println!("schedule:   {schedule}");
                if let Some(s) = state {
                    let when = s.next_fire_at.format("%Y-%m-%d %H:%M:%S UTC");
                    if s.suspended {
                        println!(
                            "            suspended ({}); ALTER PIPELINE {} RESUME to resume",
                            s.suspended_reason.as_deref().unwrap_or("by hand"),
                            spec.name
                        );
                    } else if s.attempt > 0 {
                        println!(
                            "            retry {} at {when} (hakiri serve runs it)",
                            s.attempt
                        );
                    } else {
                        println!("            next run at {when} (hakiri serve runs it)");
                    }
                    if s.consecutive_failures > 0 {
                        println!(
                            "            {} failed run(s) in a row",
                            s.consecutive_failures
                        );
                    }
                }
            } else {
                println!("schedule:   none (run it with hakiri run {})", spec.name);
            }
            println!("definition: {spec}");
            let runs = engine.catalog().runs(Some(&spec.name))?;
            println!(
                "runs:       {} in all{}",
                runs.len(),
                if runs.is_empty() { "" } else { "; the latest:" }
            );
            for r in runs.iter().rev().take(5) {
                println!(
                    "  {}  {}  {}  rows_written={} pages={}{}",
                    r.started_at.format("%Y-%m-%d %H:%M:%S"),
                    r.run_id,
                    r.status,
                    r.counters.rows_written,
                    r.counters.pages,
                    r.error
                        .as_deref()
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// Prints statement outputs: rows, acknowledgements, run summaries, plans.
pub(crate) async fn print_outputs(outputs: Vec<Output>, format: Format) -> Result<(), Failure> {
    for output in outputs {
        match output {
            Output::Stream(s) => {
                print_stream(s, format).await?;
            }
            Output::Message(m) => {
                if format == Format::Table {
                    println!("{m}");
                } else {
                    eprintln!("{m}");
                }
            }
            Output::Run(s) => println!("{}", summary_line(&s)),
            Output::Plan(p) => print_plan(&p),
        }
    }
    Ok(())
}

pub(crate) async fn run_one(
    engine: &Engine,
    name: &str,
    window: Option<hakiri_engine::rewind::Window>,
) -> Result<RunSummary, Failure> {
    let tty = std::io::stderr().is_terminal();
    let progress = move |p: &hakiri_engine::RunProgress| {
        if tty {
            let secs = p.elapsed.as_secs_f64().max(1e-3);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{}: {} pages, {} rows, {:.0} rows/s   ",
                p.pipeline,
                p.pages,
                p.rows,
                p.rows as f64 / secs
            );
            let _ = err.flush();
        }
    };
    let result = match window {
        Some(w) => engine.backfill(name, w, &progress).await,
        None => engine.run_pipeline(name, &progress).await,
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(result?)
}

fn summary_line(s: &RunSummary) -> String {
    let secs = s.elapsed.as_secs_f64();
    format!(
        "{}: {} run {} -> context.{}: {} rows written, {} pages, {:.2}s ({:.0} rows/s){}",
        s.pipeline,
        s.status.as_str(),
        s.run_id,
        s.table,
        s.counters.rows_written,
        s.counters.pages,
        secs,
        s.counters.rows_written as f64 / secs.max(1e-6),
        s.cursor_end
            .as_deref()
            .map(|c| format!(", cursor {c}"))
            .unwrap_or_default()
    )
}

fn print_changes(c: &ChangeSet) {
    println!("Manifest changes against the catalog:");
    if c.is_empty() {
        println!("  none: the catalog matches hakiri.toml");
        return;
    }
    let groups = [
        ("+ source", &c.sources_added),
        ("~ source", &c.sources_changed),
        ("- source", &c.sources_removed),
        ("+ pipeline", &c.pipelines_added),
        ("~ pipeline", &c.pipelines_changed),
        ("- pipeline", &c.pipelines_removed),
    ];
    for (label, names) in groups {
        for n in names {
            println!("  {label} {n}");
        }
    }
}

fn print_plan(p: &PlanReport) {
    let spec = &p.pipeline;
    println!(
        "Pipeline {} -> context.{} (write mode {})",
        spec.name,
        spec.target,
        spec.mode.as_str()
    );
    match (&spec.cursor, &p.cursor) {
        (Some(c), Some(v)) => println!(
            "  cursor: {}{}, the run starts from {v}{}{}",
            c.kind.as_str(),
            c.column
                .as_deref()
                .map(|col| format!(" on {col}"))
                .unwrap_or_default(),
            if p.cursor_is_initial {
                " (INITIAL: no committed cursor yet)"
            } else {
                " (committed)"
            },
            match (&c.lag, p.cursor_is_initial) {
                (Some(lag), false) => format!(", minus LAG {lag}"),
                _ => String::new(),
            }
        ),
        (Some(c), None) => println!(
            "  cursor: {} with no committed or initial value",
            c.kind.as_str()
        ),
        (None, _) => println!("  cursor: none: the run reads everything"),
    }
    if p.pushdown.is_empty() {
        println!("  pushed into sources: nothing (every row is read, then filtered)");
    } else {
        println!("  pushed into sources:");
        for f in &p.pushdown {
            println!(
                "    {}: {} ({})",
                f.table,
                f.filter,
                if f.exact {
                    "Exact: the source applies it"
                } else {
                    "Inexact: the source narrows the read, Hakiri filters again"
                }
            );
        }
    }
    println!("  physical plan:");
    for line in p.physical_plan.lines() {
        println!("    {line}");
    }
}

/// `hakiri serve`: the Postgres endpoint until SIGINT or SIGTERM.
async fn serve(root: &std::path::Path, options: ServeOptions) -> Result<(), Failure> {
    let ServeOptions {
        pg_listen,
        mcp_listen,
        max_concurrent_runs,
        shutdown_grace,
        log_format,
    } = options;
    init_logs(Some(log_format));
    let manifest = hakiri_manifests::load(root)?;
    let (engine, _) = open(root, true)?;
    let engine = std::sync::Arc::new(engine);
    let users = manifest
        .serve
        .users
        .iter()
        .map(hakiri_pgwire::User::from_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match (&manifest.serve.tls_cert, &manifest.serve.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            return Err(config_err(
                "hakiri.toml: serve.tls_cert and serve.tls_key go together".into(),
            ));
        }
    };
    // The Postgres endpoint needs users: without them it is left out unless asked for.
    let postgres = if users.is_empty() && pg_listen.is_none() && manifest.serve.pg_listen.is_none()
    {
        eprintln!(
            "no [serve.users] in hakiri.toml: no Postgres endpoint (add users to serve Postgres)"
        );
        None
    } else {
        let listen = pg_listen
            .or(manifest.serve.pg_listen.clone())
            .unwrap_or_else(|| hakiri_pgwire::DEFAULT_LISTEN.to_string());
        let names: Vec<String> = users
            .iter()
            .map(|u| format!("{} ({})", u.name, u.role.as_str()))
            .collect();
        let server = hakiri_pgwire::Server::bind(
            engine.clone(),
            hakiri_pgwire::ServeOptions { listen, users, tls },
        )
        .await?;
        let addr = server.local_addr()?;
        println!(
            "postgres endpoint on {addr}{}: psql \"postgresql://USER@{addr}/hakiri\"; users: {}",
            if manifest.serve.tls_cert.is_some() {
                " (TLS offered)"
            } else {
                ""
            },
            names.join(", ")
        );
        Some(server)
    };
    let mcp = match mcp_listen {
        Some(listen) => {
            let token = std::env::var(hakiri_mcp::TOKEN_VAR)
                .ok()
                .filter(|t| !t.is_empty());
            let server = hakiri_mcp::HttpServer::bind(engine.clone(), &listen, token.clone())
                .await
                .map_err(config_err)?;
            let addr = server.local_addr().map_err(config_err)?;
            println!(
                "MCP endpoint on http://{addr}/mcp{}",
                if token.is_some() {
                    " (bearer token required)"
                } else {
                    ""
                }
            );
            Some(server)
        }
        None => None,
    };
    let scheduled = engine
        .pipelines()
        .iter()
        .filter(|p| p.schedule.is_some())
        .count();
    // On stderr: stdout carries the endpoints' banner lines, which callers may read and
    // then close.
    eprintln!(
        "scheduler: {scheduled} scheduled pipeline(s), at most {max_concurrent_runs} run(s) at once; on SIGTERM or Ctrl-C running runs get {}s to reach a checkpoint",
        shutdown_grace.as_secs()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(
        hakiri_engine::scheduler::Scheduler::new(engine.clone(), max_concurrent_runs)
            .run(stopped, shutdown_grace),
    );
    // A synced project keeps the leases it holds while it serves (runs renew them too).
    let renewal = manifest.sync.as_ref().map(|spec| {
        let leases = hakiri_sync::Leases::new(root, spec, &manifest.project);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(leases.renew_every());
            loop {
                tick.tick().await;
                if let Err(e) = leases.renew_held().await {
                    eprintln!("warning: renewing this project's sync leases: {e}");
                }
            }
        })
    });
    let alerts = tokio::spawn(crate::alerts::watch(
        engine.clone(),
        manifest.project.clone(),
        manifest.alerts.clone(),
    ));
    let mut store = manifest.store.clone();
    if manifest.sync.is_some() && store.compact_every.is_none() {
        // A compaction changes a table, and a push of it needs the leases of every
        // pipeline writing it: in a synced project it runs only when asked for.
        eprintln!(
            "compaction: off by default in a synced project (set [store] compact_every, or run `hakiri context compact` where the table's writers run)"
        );
        store.compact_every = Some(hakiri_engine::schedule::Interval::parse(
            "compact_every",
            "0 seconds",
        )?);
    }
    let upkeep = tokio::spawn(upkeep(engine.clone(), store, manifest.retention.clone()));
    std::io::stdout().flush()?;
    let postgres = async {
        match postgres {
            Some(server) => server.serve().await,
            None => std::future::pending().await,
        }
    };
    let mcp = async {
        match mcp {
            Some(server) => server.serve().await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let served = tokio::select! {
        () = postgres => Ok(()),
        result = mcp => result.map_err(|e| Failure { code: 1, message: e, broken_pipe: false }),
        _ = tokio::signal::ctrl_c() => { eprintln!("stopping (interrupt): no new runs"); Ok(()) }
        _ = term.recv() => { eprintln!("stopping (terminate): no new runs"); Ok(()) }
    };
    // No new runs; running ones reach a checkpoint within the grace or are stopped, and
    // either way end with what they committed recorded.
    let _ = stop.send(true);
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    // Safe at any point: an interrupted compaction commits nothing, and the next command
    // sweeps what it wrote.
    upkeep.abort();
    alerts.abort();
    match scheduler.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("error: stopping the scheduler: {e}"),
        Err(e) => eprintln!("error: the scheduler task ended: {e}"),
    }
    eprintln!("stopped");
    served
}

/// `serve`'s housekeeping: compaction every `[store] compact_every` (default an hour), the
/// `[retention]` prune daily, and the purge of retired files every minute. Failures are
/// reported and retried at the next tick; they never stop the server.
async fn upkeep(
    engine: std::sync::Arc<Engine>,
    store: hakiri_engine::types::StoreSpec,
    retention: hakiri_engine::types::RetentionSpec,
) {
    use std::time::{Duration, Instant};
    let compact_every = store
        .compact_every
        .as_ref()
        .map_or(Duration::from_secs(3600), |i| i.duration);
    let options = hakiri_engine::maintain::CompactOptions::from_spec(&store);
    let prune = retention.runs.is_some()
        || retention.events.is_some()
        || retention.cursor_history.is_some();
    let (mut next_compact, mut next_prune) = (Instant::now() + compact_every, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if prune && now >= next_prune {
            next_prune = now + Duration::from_secs(24 * 3600);
            match engine.prune(&retention) {
                Ok(p) if p.runs + p.events + p.cursor_history > 0 => eprintln!(
                    "retention: pruned {} run(s), {} event(s), {} cursor history row(s)",
                    p.runs, p.events, p.cursor_history
                ),
                Ok(_) => {}
                Err(e) => eprintln!("warning: retention prune failed (retried tomorrow): {e}"),
            }
        }
        if !compact_every.is_zero() && now >= next_compact {
            next_compact = now + compact_every;
            match engine.compact(None, &options, &|_| {}).await {
                Ok(done) => {
                    for c in done.iter().filter(|c| c.skipped.is_none()) {
                        eprintln!(
                            "compaction: {} {} files -> {} files",
                            c.table, c.files_before, c.files_after
                        );
                    }
                }
                Err(e) => eprintln!("warning: compaction failed (retried next time): {e}"),
            }
        }
        ticks += 1;
        if ticks.is_multiple_of(60)
            && let Err(e) = engine.purge_retired_files()
        {
            eprintln!("warning: deleting retired files failed (retried in a minute): {e}");
        }
    }
}

/// What `hakiri serve` was asked for on its command line.
pub struct ServeOptions {
    pub pg_listen: Option<String>,
    pub mcp_listen: Option<String>,
    pub max_concurrent_runs: usize,
    pub shutdown_grace: std::time::Duration,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr (level from `HAKIRI_LOG`, default `info`): scheduler and run
/// events carry `pipeline` and `run_id` fields.
/// Logs on stderr in `format` (serve and nodes; other commands log nothing), and spans to
/// OpenTelemetry when an OTLP endpoint is configured.
pub(crate) fn init_logs(format: Option<LogFormat>) {
    use tracing_subscriber::prelude::*;
    // Each output its own level: `HAKIRI_LOG=warn` quiets stderr without dropping the run
    // spans OpenTelemetry exports (`HAKIRI_TRACE`, default info).
    let level = |var: &str| {
        tracing_subscriber::EnvFilter::try_from_env(var)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let text = matches!(format, Some(LogFormat::Text)).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(level("HAKIRI_LOG"))
    });
    let json = matches!(format, Some(LogFormat::Json)).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(level("HAKIRI_LOG"))
    });
    let spans = crate::telemetry::layer().map(|l| l.with_filter(level("HAKIRI_TRACE")));
    let _ = tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(spans)
        .try_init();
}

/// `hakiri schema export [--output FILE]`: needs no project.
fn export_schema(output: Option<&std::path::Path>) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(&hakiri_manifests::json_schema())
        .map_err(|e| Error::Internal(format!("rendering the JSON Schema: {e}")))?;
    text.push('\n');
    match output {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(path) => {
            std::fs::write(path, text).map_err(|e| Error::io(path, e))?;
            eprintln!("wrote the manifest's JSON Schema to {}", path.display());
        }
    }
    Ok(())
}
