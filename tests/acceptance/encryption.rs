//! `[store] encryption_key`: every Parquet file of the context store encrypted (Parquet
//! modular encryption, footer and columns). Runs, queries, compaction and the Postgres wire
//! read them transparently; a copied file is unreadable without the key (DuckDB cannot open
//! it, and no value shows in its bytes); a missing or wrong key is a clear error.

use std::process::Command;

use crate::support::{HakiriServer, Project, hakiri, psql, venv_bin};

const KEY: &str = "8f1c2a4b6d8e0f1a3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f";
const OTHER: &str = "00112233445566778899aabbccddeeff";

fn files(p: &Project) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(p.path().join(".hakiri/store/orders"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

#[test]
fn an_encrypted_store_is_read_transparently_and_unreadable_without_its_key() {
    let p = Project::new(
        r#"
[store]
encryption_key = "env:HAKIRI_STORE_KEY"

[serve.users.admin]
password = "env:TEST_ADMIN_PASSWORD"
role = "admin"

[sources.files]
type = "file"
tables.orders.path = "data/*.csv"

[pipelines.orders]
cursor = { kind = "monotonic", column = "id", initial = "0" }
sql = "INSERT INTO context.orders SELECT id, customer, amount FROM files.orders WHERE id > $cursor"
"#,
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(
        p.path().join("data/a.csv"),
        "id,customer,amount\n1,ada_lovelace,120\n2,grace_hopper,75\n",
    )
    .unwrap();
    let env = [("HAKIRI_STORE_KEY", KEY), ("TEST_ADMIN_PASSWORD", "pw")];
    let run = |args: &[&str]| hakiri(p.path(), args, &env);
    run(&["run", "orders"]).ok();
    std::fs::write(
        p.path().join("data/b.csv"),
        "id,customer,amount\n3,linus_torvalds,300\n",
    )
    .unwrap();
    run(&["run", "orders"]).ok();
    let q = run(&[
        "query",
        "--format",
        "csv",
        "select count(*), sum(amount), max(customer) from context.orders",
    ])
    .ok();
    assert_eq!(q.stdout.lines().nth(1), Some("3,495,linus_torvalds"));
    // Compaction reads and writes with the key.
    let out = run(&["context", "compact"]).ok().stdout;
    assert!(out.contains("2 files -> 1 files"), "{out}");
    let q = run(&[
        "query",
        "--format",
        "csv",
        "select id from context.orders order by id",
    ])
    .ok();
    assert_eq!(q.stdout, "id\n1\n2\n3\n");

    // The Postgres wire reads them too.
    let server = HakiriServer::start(p.path(), &env);
    let r = psql(
        &server.url("admin", "pw"),
        &["-A", "-t", "-c", "select customer from orders order by id"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "ada_lovelace\ngrace_hopper\nlinus_torvalds\n");
    drop(server);

    // A copied file: no value in its bytes, and DuckDB cannot read it.
    for f in files(&p) {
        let bytes = std::fs::read(&f).unwrap();
        for value in ["ada_lovelace", "grace_hopper", "customer"] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} in plain text in {}",
                f.display()
            );
        }
        let out = Command::new(venv_bin("python3"))
            .args(["-c", "import duckdb, sys; print(duckdb.sql(f\"select * from read_parquet('{sys.argv[1]}')\").fetchall())"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "DuckDB read an encrypted file: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains("encrypt"), "{err}");
    }

    // No key in the environment: the reference says which variable.
    let r = hakiri(
        p.path(),
        &["query", "select count(*) from context.orders"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("HAKIRI_STORE_KEY"), "{}", r.stderr);
    // The wrong key.
    let r = hakiri(
        p.path(),
        &["query", "select count(*) from context.orders"],
        &[("HAKIRI_STORE_KEY", OTHER)],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("is written with store key")
            && r.stderr
                .contains("add the key it was written with to [store] previous_keys"),
        "{}",
        r.stderr
    );
    // Not a key.
    let r = hakiri(
        p.path(),
        &["query", "select 1"],
        &[("HAKIRI_STORE_KEY", "swordfish")],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("must be 32 or 64 hex digits"),
        "{}",
        r.stderr
    );
    // The manifest without [store] key, over encrypted files.
    let manifest = std::fs::read_to_string(p.path().join("hakiri.toml")).unwrap();
    std::fs::write(
        p.path().join("hakiri.toml"),
        manifest.replace("[store]\nencryption_key = \"env:HAKIRI_STORE_KEY\"\n", ""),
    )
    .unwrap();
    let r = hakiri(
        p.path(),
        &["query", "select count(*) from context.orders"],
        &env,
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("is encrypted and this project has no store key"),
        "{}",
        r.stderr
    );
}

/// Key rotation: a plain store gets a key, then a new key with the old one in
/// `previous_keys`; files under all three read as one table, `hakiri context rekey`
/// rewrites the plain and old-key files under the new key, and then the old key can go.
#[test]
fn the_store_key_rotates_with_previous_keys_and_rekey() {
    let manifest = |store: &str| {
        format!(
            r#"
{store}
[sources.files]
type = "file"
tables.orders.path = "data/*.csv"

[pipelines.orders]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.orders SELECT id, customer, amount FROM files.orders WHERE id > $cursor"
"#
        )
    };
    let p = Project::new(&manifest(""));
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    let env = [("OLD_KEY", OTHER), ("NEW_KEY", KEY)];
    let run = |args: &[&str]| hakiri(p.path(), args, &env);
    let load = |file: &str, row: &str| {
        std::fs::write(
            p.path().join(format!("data/{file}.csv")),
            format!("id,customer,amount\n{row}\n"),
        )
        .unwrap();
        run(&["run", "orders"]).ok();
    };
    let answer = || {
        run(&[
            "query",
            "--format",
            "csv",
            "select count(*), sum(amount), string_agg(customer, '+' order by id) from context.orders",
        ])
        .ok()
        .stdout
    };
    let write_manifest = |store: &str| {
        std::fs::write(p.path().join("hakiri.toml"), manifest(store)).unwrap();
    };
    load("a", "1,ada_lovelace,120");
    write_manifest("[store]\nencryption_key = \"env:OLD_KEY\"");
    load("b", "2,grace_hopper,75");
    write_manifest("[store]\nencryption_key = \"env:NEW_KEY\"\nprevious_keys = [\"env:OLD_KEY\"]");
    load("c", "3,linus_torvalds,300");
    let before = answer();
    assert!(
        before.ends_with("3,495,ada_lovelace+grace_hopper+linus_torvalds\n"),
        "{before}"
    );

    // Without the old key, the old file says which key it needs.
    write_manifest("[store]\nencryption_key = \"env:NEW_KEY\"");
    let r = run(&["query", "select count(*) from context.orders"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("is written with store key")
            && r.stderr
                .contains("add the key it was written with to [store] previous_keys"),
        "{}",
        r.stderr
    );

    write_manifest("[store]\nencryption_key = \"env:NEW_KEY\"\nprevious_keys = [\"env:OLD_KEY\"]");
    let out = run(&["context", "rekey"]).ok().stdout;
    assert!(
        out.contains("orders: 3 files -> 2 files (2 rows rewritten)"),
        "{out}"
    );
    let again = run(&["context", "rekey"]).ok().stdout;
    assert!(
        again.contains("every file is under the current store key"),
        "{again}"
    );

    // The old key is no longer needed; every current file is encrypted (the plain one
    // too; the files it replaced stay for the grace period, for readers).
    write_manifest("[store]\nencryption_key = \"env:NEW_KEY\"");
    assert_eq!(answer(), before);
    let current = run(&[
        "query",
        "--format",
        "csv",
        "select path from hakiri.files where retired_at is null",
    ])
    .ok()
    .stdout;
    let current: Vec<&str> = current.lines().skip(1).collect();
    assert_eq!(current.len(), 2, "{current:?}");
    for f in current {
        let f = p.path().join(".hakiri/store").join(f);
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"ada_lovelace"),
            "{} is not encrypted",
            f.display()
        );
    }

    // Rekey needs a key; previous_keys alone is refused.
    write_manifest("");
    let r = run(&["context", "rekey"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("nothing to rekey"), "{}", r.stderr);
    write_manifest("[store]\nprevious_keys = [\"env:OLD_KEY\"]");
    let r = run(&["query", "select 1"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("previous_keys needs encryption_key"),
        "{}",
        r.stderr
    );
}
