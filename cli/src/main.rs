//! The `hakiri` command: parses arguments, opens the project, dispatches, maps errors to
//! exit codes (0 ok, 1 a statement or run failed, 2 usage or configuration error).

mod alerts;
mod catalog;
mod commands;
mod init;
mod lineage;
mod output;
mod repl;
mod sync;
mod team;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hakiri_engine::{Error, ErrorCategory};

use crate::output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "hakiri",
    version,
    about = "SQL-first data ingestion into a local, queryable context store"
)]
struct Cli {
    /// The project folder (default: the nearest folder upwards holding hakiri.toml).
    #[arg(long, global = true, env = "HAKIRI_PROJECT")]
    project: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a project folder NAME with a manifest and sample data.
    Init {
        name: PathBuf,
        /// The manifest's format: hakiri.toml or hakiri.json (the same structure).
        #[arg(long, value_enum, default_value_t = init::ManifestFormat::Toml)]
        format: init::ManifestFormat,
    },
    /// Run a pipeline, or every pipeline with --all.
    Run {
        pipeline: Option<String>,
        #[arg(long, conflicts_with = "pipeline")]
        all: bool,
        /// Backfill: bind $cursor to this value instead of the committed cursor (a MODE
        /// MERGE pipeline with CURSOR MONOTONIC); the committed cursor never moves back.
        #[arg(long, requires = "pipeline", conflicts_with = "all")]
        from: Option<String>,
        /// Backfill: leave out rows whose cursor column is past this value.
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Run SQL: queries, and Hakiri's statements (CREATE PIPELINE, SHOW PIPELINES, ...).
    Query {
        sql: String,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The interactive SQL shell (or, with -c/-f, run statements and exit).
    Sql {
        /// Run these statements and exit (repeatable).
        #[arg(long, short)]
        command: Vec<String>,
        /// Run the statements of this file and exit.
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// Show what a run would do: manifest changes, the starting cursor and the physical plan.
    Plan { pipeline: Option<String> },
    /// Inspect pipelines.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Serve the project until stopped: the scheduler (pipelines with a SCHEDULE), a
    /// Postgres wire endpoint for psql, drivers and BI tools (users and roles from [serve]
    /// in hakiri.toml), and MCP over HTTP for agents.
    Serve {
        /// Scheduled runs at once; due pipelines wait for a free place.
        #[arg(long, default_value_t = hakiri_engine::scheduler::DEFAULT_MAX_CONCURRENT_RUNS)]
        max_concurrent_runs: usize,
        /// Seconds running runs get to reach a checkpoint after SIGTERM/Ctrl-C before they
        /// are stopped (what they committed stays; the next run resumes after it).
        #[arg(long, default_value_t = 30.0)]
        shutdown_grace: f64,
        /// Log lines on stderr as text or JSON (level from HAKIRI_LOG, default info).
        #[arg(long, value_enum, default_value_t = commands::LogFormat::Text)]
        log_format: commands::LogFormat,
        /// The Postgres endpoint's address (default: serve.pg_listen, else 127.0.0.1:5433).
        #[arg(long)]
        pg_listen: Option<String>,
        /// Also serve MCP over streamable HTTP at http://ADDR/mcp (loopback by default; any
        /// other address needs a bearer token in HAKIRI_MCP_TOKEN).
        #[arg(long)]
        mcp_listen: Option<String>,
        /// Be a node of this control plane: run what it assigns (its token in
        /// HAKIRI_NODE_TOKEN; the folder's manifest is the applied one, written as hakiri.json).
        #[arg(long, requires = "node_id")]
        control: Option<String>,
        /// This node's id, as placements name it (`node:ID`).
        #[arg(long, requires = "control")]
        node_id: Option<String>,
        /// The team project the node serves (default: HAKIRI_TEAM_PROJECT).
        #[arg(
            long = "team-project",
            env = "HAKIRI_TEAM_PROJECT",
            requires = "control"
        )]
        team_project: Option<String>,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 2.0, requires = "control")]
        heartbeat: f64,
    },
    /// Serve MCP on stdin/stdout, for an agent that starts Hakiri itself.
    Mcp,
    /// The manifest's JSON Schema, for editors and validators.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// WASM connectors: what a component is, needs and exports.
    Connector {
        #[command(subcommand)]
        command: ConnectorCommand,
    },
    /// Discover sources: their tables and sample rows.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Keep the context store in shape: compact a table's small files, prune old state rows.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Share the context store through the [sync] bucket or folder, as Delta Lake tables.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// The team's control plane: a shared pipeline document, sign-in, nodes and placement.
    Control {
        #[command(subcommand)]
        command: ControlCommand,
    },
    /// Work with a team's control plane: sign in, share this project's pipelines, apply.
    Team(TeamArgs),
}

#[derive(Subcommand, Debug)]
pub enum ControlCommand {
    /// Serve the control plane until stopped.
    Serve {
        #[arg(long, default_value = "127.0.0.1:7600")]
        listen: String,
        /// The folder holding control.db (the documents, versions, nodes and runs).
        #[arg(long, default_value = ".hakiri-control")]
        data: PathBuf,
        /// The URL people and nodes reach this server at (default: http://LISTEN).
        #[arg(long)]
        public_url: Option<String>,
        /// The OpenID Connect issuer people sign in with (authorization code with PKCE).
        #[arg(long, env = "HAKIRI_OIDC_ISSUER")]
        oidc_issuer: Option<String>,
        #[arg(long, env = "HAKIRI_OIDC_CLIENT_ID", default_value = "hakiri")]
        oidc_client_id: String,
        /// The client secret, if the provider wants one (from the environment only).
        #[arg(
            long = "oidc-client-secret-env",
            default_value = "HAKIRI_OIDC_CLIENT_SECRET"
        )]
        oidc_client_secret_env: String,
        /// How long a signed-in person's token lasts.
        #[arg(long, default_value = "12h")]
        token_ttl: humantime::Duration,
        /// A node silent for this long is gone: its runs go to another node.
        #[arg(long, default_value = "30s")]
        node_timeout: humantime::Duration,
        /// How often due runs are dispatched.
        #[arg(long, default_value = "1s")]
        dispatch_every: humantime::Duration,
        #[arg(long, value_enum, default_value_t = commands::LogFormat::Text)]
        log_format: commands::LogFormat,
    },
    /// Load-test a running control plane: simulated editors edit one project document;
    /// prints the edit-to-arrival latency percentiles, the edit rate and the snapshot size
    /// as JSON (the token in HAKIRI_TOKEN).
    Bench {
        #[arg(long)]
        url: String,
        /// A new team project to create for the run (not `--project`, the global project
        /// folder: two arguments with one id crash clap).
        #[arg(long = "team-project", default_value = "bench")]
        team_project: String,
        #[arg(long, default_value_t = 5)]
        editors: usize,
        #[arg(long, default_value_t = 200)]
        pipelines: usize,
        #[arg(long, default_value_t = 20)]
        transforms: usize,
        #[arg(long, default_value = "5m")]
        duration: humantime::Duration,
        /// Edits per second per editor.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
    },
    /// Print a token for SUB from the control plane's own key (for the first sign-in
    /// without OIDC, and for automation run on the control plane's machine).
    Token {
        #[arg(long, default_value = ".hakiri-control")]
        data: PathBuf,
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "12h")]
        ttl: humantime::Duration,
    },
}

#[derive(clap::Args, Debug)]
pub struct TeamArgs {
    /// The control plane's URL (default: HAKIRI_CONTROL, else the one `team login` or
    /// `team init` recorded).
    #[arg(long, global = true, env = "HAKIRI_CONTROL")]
    pub control: Option<String>,
    /// The team project (default: HAKIRI_TEAM_PROJECT, else the one `team init` recorded).
    #[arg(long = "team-project", global = true, env = "HAKIRI_TEAM_PROJECT")]
    pub team_project: Option<String>,
    #[command(subcommand)]
    pub command: TeamCommand,
}

#[derive(Subcommand, Debug)]
pub enum TeamCommand {
    /// Sign in through the control plane's identity provider (opens the browser).
    Login {
        /// Print the URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Create the team project NAME and record it for this folder.
    Init { name: String },
    /// Write this project's hakiri.toml (sources and pipelines) into the team's document.
    Push,
    /// Validate the document and make it the applied version nodes run.
    Apply {
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Nodes, their runs, and each pipeline's placement and last run.
    Status,
    /// Applied versions; or a diff between two; or roll back to one.
    Versions {
        /// Show the diff from this version to --to (default: the applied one).
        #[arg(long)]
        diff: Option<i64>,
        #[arg(long, requires = "diff")]
        to: Option<i64>,
        /// Apply this earlier version again (and write it back into the document).
        #[arg(long, conflicts_with = "diff")]
        rollback: Option<i64>,
    },
    /// Print a weaker copy of your token, made offline (e.g. read-only for a CI job).
    Token {
        /// Keep only these rights (read, edit, apply, run).
        #[arg(long, value_delimiter = ',', default_value = "read")]
        keep: Vec<String>,
        /// Limit it to the team project.
        #[arg(long)]
        only_project: bool,
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Print a token for node ID of the team project (`hakiri serve --control`).
    NodeToken { id: String },
}

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Upload what changed here (files, Delta commits, the project's state).
    Push,
    /// Make the remote's newest state this project's.
    Pull {
        /// Drop local commits that were never pushed.
        #[arg(long)]
        discard_local: bool,
    },
    /// Per table what is ahead and behind, and who holds each lease.
    Status,
    /// Single-writer leases of pipelines.
    Lease {
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Commit Delta tables back to the pushed state where a killed push left them ahead,
    /// and delete objects no Delta version or state names (left by a killed push), listing
    /// each.
    Gc {
        /// List them only.
        #[arg(long)]
        dry_run: bool,
        /// Leave objects younger than this (a push running now may not have committed
        /// them yet).
        #[arg(long, default_value = "1 hour", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Take (or renew) a pipeline's lease.
    Acquire {
        pipeline: String,
        /// Take a lease another project holds past its TTL.
        #[arg(long)]
        steal: bool,
    },
    /// Give up this project's lease of a pipeline.
    Release { pipeline: String },
    /// Who holds each lease (or one pipeline's).
    Status { pipeline: Option<String> },
}

#[derive(Subcommand, Debug)]
enum SourceCommand {
    /// List sources with their connector type.
    List,
    /// The tables of a source (a database's are discovered from the server).
    Tables { name: String },
    /// Discover the source's table schemas again (asking the source) and keep them for
    /// listings (\dt, information_schema, psql), which never ask the source themselves.
    Refresh { name: String },
    /// The first rows of a source table, read live.
    Sample {
        /// SOURCE.TABLE
        table: String,
        #[arg(long, short, default_value_t = 10)]
        limit: usize,
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand, Debug)]
enum ConnectorCommand {
    /// Show a component's spec (options, the capabilities it needs), exports and imports.
    Inspect { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Print the JSON Schema (draft 2020-12) of hakiri.toml and hakiri.json.
    Export {
        /// Write it to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ContextCommand {
    /// Merge a table's small files (or every table's) into files of about the target size,
    /// in one transaction per table; queries running meanwhile are unaffected.
    Compact {
        /// The table (default: every table).
        table: Option<String>,
        /// The file size to aim at, in MiB (default: [store] compact_target_mb, else 128).
        #[arg(long)]
        target_mb: Option<u64>,
        /// Sort the merged files by these columns ("a,b"; default: [store] sort_by).
        #[arg(long)]
        sort_by: Option<String>,
    },
    /// Rewrite every file not under the current store key ([store] encryption_key): files
    /// written with one of previous_keys, or plain ones from before encryption; then
    /// previous_keys can go.
    Rekey {
        /// The table (default: every table).
        table: Option<String>,
    },
    /// Delete state rows older than [retention] says (runs, events, cursor_history),
    /// keeping each pipeline's latest; `serve` does it daily.
    Prune,
}

#[derive(Subcommand, Debug)]
enum PipelineCommand {
    /// List pipelines with their last run.
    List,
    /// Show a pipeline's definition, cursor and recent runs.
    Describe { name: String },
}

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The output's reader went away (`hakiri query ... | head`): not a failure of ours,
    /// found in the error's chain of sources.
    pub broken_pipe: bool,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.category() {
            ErrorCategory::Config => 2,
            _ => 1,
        };
        Failure {
            code,
            broken_pipe: e.is_broken_pipe(),
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: 1,
            message: format!("writing output: {e}"),
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(async {
        let result = commands::dispatch(cli).await;
        lineage::flush().await;
        // The exporters flush from threads of their own, whose requests run on this
        // runtime: wait for them off its workers.
        let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
        result
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if f.broken_pipe => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
