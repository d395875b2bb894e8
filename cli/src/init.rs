//! `hakiri init NAME`: a project folder with a manifest and sample data, so the first run
//! works without network access.

use std::fmt::Write as _;
use std::path::Path;

use crate::Failure;

/// Rows in the sample `events` data.
const SAMPLE_ROWS: u64 = 1000;

pub const MANIFEST: &str = r#"# Hakiri project manifest. Every hakiri command brings the catalog in line with it.

[project]
name = "{name}"

# Sample data written by `hakiri init`: works offline.
[sources.samples]
type = "file"
tables.events.path = "data/events.csv"

# A JSON API: https://httpbin.org unless HAKIRI_HTTPBIN_URL points elsewhere.
[sources.httpbin]
type = "http"
base_url = "${HAKIRI_HTTPBIN_URL:-https://httpbin.org}"
tables.anything.path = "/anything"

# Incremental: each run loads the events whose id is past the committed cursor.
[pipelines.events]
cursor = { kind = "monotonic", column = "id", initial = "0" }
mode = "append"
sql = "INSERT INTO context.events SELECT * FROM samples.events WHERE id > $cursor"

# Each run appends the endpoint's answer as one row.
[pipelines.httpbin]
mode = "append"
sql = "INSERT INTO context.httpbin_anything SELECT * FROM httpbin.anything"
"#;

/// Deterministic sample events (a small linear congruential generator, no randomness).
pub fn sample_events() -> String {
    let users = [
        "ada", "grace", "linus", "margaret", "ken", "barbara", "dennis",
    ];
    let kinds = ["push", "issue", "pull_request", "release"];
    let mut out = String::from("id,updated_at,user_login,kind,amount\n");
    let mut state: u64 = 42;
    let start =
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid timestamp");
    for id in 1..=SAMPLE_ROWS {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = state >> 33;
        let at = start + chrono::Duration::minutes(37 * id as i64);
        let _ = writeln!(
            out,
            "{id},{},{},{},{:.2}",
            at.format("%Y-%m-%dT%H:%M:%SZ"),
            users[(r % users.len() as u64) as usize],
            kinds[((r >> 8) % kinds.len() as u64) as usize],
            (r % 100_000) as f64 / 100.0
        );
    }
    out
}

/// The format `hakiri init` writes the manifest in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    Toml,
    Json,
}

pub fn init(dir: &Path, format: ManifestFormat) -> Result<(), Failure> {
    let fail = |m: String| Failure {
        broken_pipe: false,
        code: 2,
        message: m,
    };
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(fail(format!(
            "{} exists and is not empty: pick another name or remove it",
            dir.display()
        )));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| fail(format!("'{}' does not name a folder", dir.display())))?;
    let io = |e: std::io::Error| fail(format!("cannot create {}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("data")).map_err(io)?;
    let manifest = MANIFEST.replace("{name}", &name);
    match format {
        ManifestFormat::Toml => std::fs::write(dir.join("hakiri.toml"), manifest).map_err(io)?,
        ManifestFormat::Json => {
            // The same manifest, converted: JSON has no comments, the README explains the keys.
            let table: toml::Table = manifest
                .parse()
                .map_err(|e| fail(format!("the built-in manifest does not parse: {e}")))?;
            let json = serde_json::to_string_pretty(&table)
                .map_err(|e| fail(format!("writing the manifest as JSON: {e}")))?;
            std::fs::write(dir.join("hakiri.json"), json + "\n").map_err(io)?
        }
    }
    std::fs::write(dir.join("data/events.csv"), sample_events()).map_err(io)?;
    std::fs::write(dir.join(".gitignore"), ".hakiri/\n").map_err(io)?;
    println!(
        "created project {} with pipelines events (sample data) and httpbin",
        dir.display()
    );
    println!(
        "next: cd {} && hakiri run events && hakiri query \"select count(*) from events\"",
        dir.display()
    );
    Ok(())
}
