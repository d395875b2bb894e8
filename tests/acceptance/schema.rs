//! `hakiri schema export`: the manifest's JSON Schema, checked by a real validator (Python's
//! `jsonschema`) against every manifest we ship or test with, and against invalid manifests
//! that hakiri rejects for the same reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{hakiri, repo_root, venv_bin};

/// `hakiri schema export --output FILE` into `dir`; also checks stdout gives the same text.
fn export(dir: &Path) -> PathBuf {
    let path = dir.join("hakiri.schema.json");
    let out = path.to_str().unwrap();
    let r = hakiri(dir, &["schema", "export", "--output", out], &[]).ok();
    assert!(
        r.stderr.contains("wrote the manifest's JSON Schema"),
        "{}",
        r.stderr
    );
    let stdout = hakiri(dir, &["schema", "export"], &[]).ok().stdout;
    assert_eq!(stdout, std::fs::read_to_string(&path).unwrap());
    path
}

/// The validator's verdict per file: the error messages (empty: valid).
fn validate(schema: &Path, files: &[PathBuf]) -> Vec<Vec<String>> {
    let out = Command::new(venv_bin("python3"))
        .arg(repo_root().join("tests/fixtures/validate_manifests.py"))
        .arg(schema)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "validator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    lines
        .iter()
        .map(|l| {
            l["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| format!("{} at {}", e["message"], e["path"]))
                .collect()
        })
        .collect()
}

/// The manifests in string literals of the acceptance tests that hakiri accepts (literals
/// used with `format!` are read with `{{` as `{`; ones with placeholders do not parse and
/// are left out).
fn test_manifests() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let dir = repo_root().join("tests/acceptance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, lit) in text.split("r#\"").skip(1).enumerate() {
            let Some(body) = lit.split("\"#").next() else {
                continue;
            };
            let looks_like_manifest = body.lines().any(|l| {
                ["[project]", "[sources.", "[pipelines.", "[serve"]
                    .iter()
                    .any(|h| l.trim_start().starts_with(h))
            });
            if !looks_like_manifest {
                continue;
            }
            for candidate in [body.to_string(), formatted(body)] {
                if hakiri_manifests::parse(&candidate).is_ok() {
                    let name = file.file_stem().unwrap().to_string_lossy();
                    found.push((format!("{name} literal {i}"), candidate));
                    break;
                }
            }
        }
    }
    found
}

/// A `format!` string with its placeholders (`{url}`, `{}`, `{n:?}`) filled with `1` and
/// `{{`/`}}` read as braces.
fn formatted(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(end) = tail.find('}').filter(|end| {
            tail.starts_with('{')
                && tail[1..*end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:?.".contains(c))
        }) {
            out.push('1');
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The README's ```toml blocks, and its ```json blocks that are manifests (not, say, an MCP
/// client's configuration).
fn readme_manifests() -> Vec<(String, String, &'static str)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut out = Vec::new();
    for ext in ["toml", "json"] {
        for (i, block) in readme.split(&format!("```{ext}\n")).skip(1).enumerate() {
            let body = block.split("```").next().unwrap().to_string();
            let manifest = ext == "toml"
                || ["\"project\"", "\"sources\"", "\"pipelines\"", "\"serve\""]
                    .iter()
                    .any(|k| body.contains(k));
            if !manifest {
                continue;
            }
            out.push((format!("README ```{ext} block {i}"), body, ext));
        }
    }
    out
}

fn example_manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let dir = e.unwrap().path();
        for name in ["hakiri.toml", "hakiri.json"] {
            if dir.join(name).is_file() {
                out.push(dir.join(name));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_exported_schema_validates_every_shipped_and_tested_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let schema = export(dir.path());
    let text = std::fs::read_to_string(&schema).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "draft 2020-12"
    );
    // The copy editors point at (`#:schema` in the examples) is the exported one.
    let shipped = std::fs::read_to_string(repo_root().join("docs/hakiri.schema.json")).unwrap();
    assert_eq!(
        shipped, text,
        "docs/hakiri.schema.json is stale: run `hakiri schema export --output docs/hakiri.schema.json`"
    );

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let write = |files: &mut Vec<(String, PathBuf)>, origin: String, body: &str, ext: &str| {
        let path = dir.path().join(format!("m{}.{ext}", files.len()));
        std::fs::write(&path, body).unwrap();
        files.push((origin, path));
    };
    for (origin, body, ext) in readme_manifests() {
        // Every README manifest is one hakiri reads, not only one the schema likes.
        let read = if ext == "json" {
            hakiri_manifests::parse_json(&body)
        } else {
            hakiri_manifests::parse(&body)
        };
        if let Err(e) = read {
            panic!("{origin} is not a valid manifest: {e}\n{body}");
        }
        write(&mut files, origin, &body, ext);
    }
    let examples = example_manifests();
    assert!(examples.len() >= 3, "examples/ holds the example projects");
    for path in examples {
        files.push((path.display().to_string(), path));
    }
    for format in ["toml", "json"] {
        let at = dir.path().join(format!("init_{format}"));
        hakiri(
            dir.path(),
            &["init", at.to_str().unwrap(), "--format", format],
            &[],
        )
        .ok();
        files.push((
            format!("hakiri init --format {format}"),
            at.join(format!("hakiri.{format}")),
        ));
    }
    let tested = test_manifests();
    assert!(
        tested.len() >= 15,
        "the extraction finds the tests' manifests: only {}",
        tested.len()
    );
    for (origin, body) in tested {
        write(&mut files, origin, &body, "toml");
    }
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let verdicts = validate(&schema, &paths);
    let invalid: Vec<String> = files
        .iter()
        .zip(&verdicts)
        .filter(|(_, errors)| !errors.is_empty())
        .map(|((origin, path), errors)| {
            format!(
                "{origin} ({}): {}\n{}",
                path.display(),
                errors.join("; "),
                std::fs::read_to_string(path).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        invalid.is_empty(),
        "{} of {} manifests fail the schema:\n{}",
        invalid.len(),
        files.len(),
        invalid.join("\n")
    );
}

/// Each invalid manifest, in TOML and in JSON: what hakiri says, and what the schema says.
const INVALID: &[(&str, &str, &str, &str)] = &[
    (
        "an unknown key",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\nmodee = \"merge\"\n",
        "unknown field `modee`, expected one of `sql`, `cursor`, `mode`",
        "'modee' was unexpected",
    ),
    (
        "a wrong type",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\ncheckpoint_pages = \"ten\"\n",
        "invalid type: string \"ten\", expected u64",
        "'ten' is not of type 'integer'",
    ),
    (
        "a bad cursor kind",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\ncursor = { kind = \"montonic\", column = \"id\" }\n",
        "unknown cursor kind 'montonic': valid kinds are monotonic, token",
        "'montonic' is not one of ['monotonic', 'token'",
    ),
    (
        "a bad cursor key",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\ncursor = { kind = \"monotonic\", col = \"id\" }\n",
        "unknown field `col`, expected one of `kind`, `column`, `initial`, `lag`, `on_null`",
        "'col' was unexpected",
    ),
    (
        "a bad write mode",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\nmode = \"upsert\"\n",
        "unknown write mode 'upsert': valid modes are append, merge, replace",
        "'upsert' is not one of ['append', 'merge', 'replace']",
    ),
    (
        "a pipeline without sql",
        "[pipelines.p]\nmode = \"append\"\n",
        "missing field `sql`",
        "'sql' is a required property",
    ),
    (
        "a source without a type",
        "[sources.s]\nbase_url = \"http://127.0.0.1:9\"\n",
        "missing field `type`",
        "'type' is a required property",
    ),
    (
        "a bad pipeline name",
        "[pipelines.\"bad-name\"]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\n",
        "invalid pipeline name 'bad-name'",
        "'bad-name' does not match",
    ),
    (
        "an unknown section",
        "[pipeline.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\n",
        "unknown field `pipeline`, expected one of `$schema`, `project`, `sources`, `pipelines`, `serve`",
        "'pipeline' was unexpected",
    ),
    (
        "a negative retry count",
        "[pipelines.p]\nsql = \"INSERT INTO context.t SELECT * FROM s.t\"\nschedule = { every = \"1 hour\", retries = -1 }\n",
        "invalid value: integer `-1`, expected u32",
        "-1 is less than the minimum of 0",
    ),
];

#[test]
fn invalid_manifests_are_rejected_by_the_schema_and_by_hakiri_for_the_same_reason() {
    let dir = tempfile::tempdir().unwrap();
    let schema = export(dir.path());
    let mut files = Vec::new();
    for (i, (what, toml_text, hakiri_says, _)) in INVALID.iter().enumerate() {
        let table: toml::Table = toml_text.parse().unwrap();
        let json_text = serde_json::to_string_pretty(&table).unwrap();
        for (file, text) in [
            ("hakiri.toml", toml_text.to_string()),
            ("hakiri.json", json_text),
        ] {
            let project = dir.path().join(format!("p{i}_{file}"));
            std::fs::create_dir_all(&project).unwrap();
            std::fs::write(project.join(file), &text).unwrap();
            let r = hakiri(&project, &["pipeline", "list"], &[]);
            assert_eq!(r.code, 2, "{what} in {file}: {}", r.stderr);
            assert!(
                r.stderr.contains(hakiri_says) && r.stderr.contains(&format!("{file}, line ")),
                "{what} in {file}: hakiri says {}",
                r.stderr
            );
            files.push(project.join(file));
        }
    }
    let verdicts = validate(&schema, &files);
    for (i, (what, _, _, schema_says)) in INVALID.iter().enumerate() {
        for errors in &verdicts[2 * i..2 * i + 2] {
            assert!(
                errors.iter().any(|e| e.contains(schema_says)),
                "{what}: the schema says {errors:?}, not {schema_says}"
            );
        }
    }
}
