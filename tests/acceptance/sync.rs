//! `hakiri sync` against a real S3-compatible server (moto's standalone server on
//! 127.0.0.1, which enforces conditional writes: `If-None-Match: *` and `If-Match`): two
//! project folders share one bucket, DuckDB reads the pushed Delta tables, leases hand a
//! token pipeline from one project to the other, and bad remotes fail with the fix.

use std::collections::BTreeMap;

use crate::support::{Moments, Project, Run, S3Server, Server, hakiri, venv_bin};
use serde_json::Value;

const KEYS: [(&str, &str); 2] = [
    ("TEST_S3_KEY_ID", "hakiri-test"),
    ("TEST_S3_SECRET", "not-a-real-secret"),
];

/// A project with a monotonic pipeline (`grow`) and a token pipeline (`feed`) over the
/// fixture API, synced to `url`.
fn manifest(name: &str, api: &str, url: &str, endpoint: &str) -> String {
    format!(
        r#"
[project]
name = "{name}"

[sources.api]
type = "http"
base_url = "{api}"

[sources.api.tables.grow]
path = "/grow"
records = "items"
pagination = "next_url"
query = {{ size = "25" }}
filter = {{ id = "since_id" }}
schema = "id bigint, name text, amount bigint"

[sources.api.tables.feed]
path = "/feed"
records = "items"
pagination = "cursor"
cursor_path = "next_cursor"
cursor_param = "after"
has_more_path = "has_more"
query = {{ size = "25" }}
schema = "id bigint, name text, amount bigint"

[pipelines.grow]
cursor = {{ kind = "monotonic", column = "id", initial = "0" }}
sql = "INSERT INTO context.grow SELECT * FROM api.grow WHERE id > $cursor"

[pipelines.feed]
cursor = {{ kind = "token" }}
sql = "INSERT INTO context.feed SELECT * FROM api.feed"

[sync]
url = "{url}"
endpoint = "{endpoint}"
access_key_id = "env:TEST_S3_KEY_ID"
secret_access_key = "env:TEST_S3_SECRET"
"#
    )
}

fn run(p: &Project, args: &[&str]) -> Run {
    hakiri(p.path(), args, &KEYS)
}

fn csv(p: &Project, sql: &str) -> Vec<String> {
    let out = run(p, &["query", "--format", "csv", sql]).ok().stdout;
    out.lines().skip(1).map(str::to_string).collect()
}

/// A table's fingerprint: its count, the sum of its ids, and a hash of all its rows
/// ordered by id.
/// `absent` when there is no such table.
fn fingerprint(p: &Project, table: &str) -> String {
    let sql = format!("select id, name, amount from {table} order by id");
    let out = run(p, &["query", "--format", "csv", &sql]);
    if out.code != 0 && out.stderr.contains("no context table named") {
        return "absent".into();
    }
    let rows: Vec<String> = out
        .ok()
        .stdout
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let sum: i64 = rows
        .iter()
        .map(|r| r.split(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    format!(
        "{} rows, sum {sum}, hash {:016x}",
        rows.len(),
        fnv(&rows.join("\n"))
    )
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// DuckDB from PyPI with the httpfs and delta extensions loaded from their wheels' files
/// (autoinstall and autoload off), and a secret for the S3 server at `argv[1]`.
const DUCKDB: &str = r#"
import glob, json, os, sys, duckdb
endpoint = sys.argv[1]
site = os.path.dirname(os.path.dirname(duckdb.__file__))
con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
con.execute("SET enable_progress_bar = false")
for ext in ("httpfs", "delta"):
    path = glob.glob(os.path.join(site, f"duckdb_extension_{ext}", "extensions", "*", f"{ext}.duckdb_extension"))[0]
    con.execute(f"LOAD '{path}'")
host = endpoint.split("://", 1)[1]
con.execute(f"""CREATE SECRET s (TYPE s3, KEY_ID 'hakiri-test', SECRET 'not-a-real-secret',
    REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)""")
"#;

/// Runs `DUCKDB` then `script` with `args` after the endpoint; its stdout.
fn duckdb(endpoint: &str, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(venv_bin("python"))
        .arg("-c")
        .arg(format!("{DUCKDB}{script}"))
        .arg(endpoint)
        .args(args)
        .output()
        .expect("run python with duckdb");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// DuckDB reads `tables` of the bucket with `delta_scan`: per table the same fingerprint
/// as [`fingerprint`], `absent` when the table has no Delta log, or `error: ...`.
fn duckdb_fingerprints(endpoint: &str, url: &str, tables: &[&str]) -> BTreeMap<String, String> {
    let script = r#"
url, tables = sys.argv[2], sys.argv[3:]
out = {}
def fnv(text):
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h
for t in tables:
    if con.execute(f"select count(*) from glob('{url}/tables/{t}/_delta_log/*.json')").fetchone()[0] == 0:
        out[t] = "absent"
        continue
    try:
        rows = con.execute(f"select id, name, amount from delta_scan('{url}/tables/{t}') order by id").fetchall()
        lines = [",".join("" if v is None else str(v) for v in r) for r in rows]
        out[t] = f"{len(rows)} rows, sum {sum(r[0] for r in rows)}, hash {fnv(chr(10).join(lines)):016x}"
    except Exception as e:
        out[t] = f"error: {e}"
print(json.dumps(out))
"#;
    let mut args = vec![url];
    args.extend_from_slice(tables);
    serde_json::from_str(&duckdb(endpoint, script, &args)).expect("duckdb's json")
}

fn token_of(p: &Project, pipeline: &str) -> String {
    let rows = csv(
        p,
        &format!("select value from hakiri.cursors where pipeline = '{pipeline}'"),
    );
    rows.into_iter().next().unwrap_or_default()
}

/// Seed M1.2: two project folders, one bucket. A runs a monotonic and a token pipeline and
/// pushes; B pulls and every table is the same. Then the token pipeline's lease moves from
/// A to B, B continues from A's token, pushes, and A pulls B's rows. DuckDB reads each
/// pushed state from the bucket.
#[test]
fn two_projects_share_one_bucket_and_hand_a_token_pipeline_over() {
    let s3 = S3Server::start();
    s3.create_bucket("team");
    let api = Server::paged();
    api.get("/admin/grow?n=120");
    let url = "s3://team/shared";
    let a = Project::new(&manifest("alpha", &api.url(), url, &s3.endpoint()));
    let b = Project::new(&manifest("beta", &api.url(), url, &s3.endpoint()));

    run(&a, &["run", "grow"]).ok();
    run(&a, &["run", "feed"]).ok();
    let pushed = run(&a, &["sync", "push"]).ok().stdout;
    assert!(pushed.contains("pushed state 1"), "{pushed}");
    assert!(pushed.contains("grow: Delta version 0"), "{pushed}");

    // A push with nothing new makes no commit and is quick.
    let started = std::time::Instant::now();
    let again = run(&a, &["sync", "push"]).ok().stdout;
    assert!(again.contains("nothing to push"), "{again}");
    assert!(started.elapsed().as_secs_f64() < 5.0);

    let pulled = run(&b, &["sync", "pull"]).ok().stdout;
    assert!(
        pulled.contains("pulled state 1 (pushed by alpha@"),
        "{pulled}"
    );
    for t in ["grow", "feed"] {
        assert_eq!(fingerprint(&a, t), fingerprint(&b, t), "{t} after B's pull");
    }
    assert!(fingerprint(&b, "feed").starts_with("120 rows, sum 7260, "));
    assert_eq!(token_of(&a, "feed"), token_of(&b, "feed"));
    let duck = duckdb_fingerprints(&s3.endpoint(), url, &["grow", "feed"]);
    for t in ["grow", "feed"] {
        assert_eq!(duck[t], fingerprint(&a, t), "DuckDB's {t}");
    }

    // B may not run the token pipeline while A holds its lease: the error names A.
    let refused = run(&b, &["run", "feed"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("pipeline 'feed' is leased to alpha@")
            && refused.stderr.contains("hakiri sync lease release feed"),
        "{}",
        refused.stderr
    );

    // Hand-off: A releases, B acquires, the API grows, B runs from A's token and pushes.
    run(&a, &["sync", "lease", "release", "feed"]).ok();
    let got = run(&b, &["sync", "lease", "acquire", "feed"]).ok().stdout;
    assert!(got.contains("feed\theld by beta@"), "{got}");
    let a_token = token_of(&a, "feed");
    let log_before: Vec<Value> = serde_json::from_str(&api.get("/admin/log?path=/feed")).unwrap();
    api.get("/admin/grow?n=55");
    run(&b, &["run", "feed"]).ok();
    let log: Vec<Value> = serde_json::from_str(&api.get("/admin/log?path=/feed")).unwrap();
    let first = &log[log_before.len()];
    assert_eq!(
        first["query"]["after"].as_str(),
        Some(a_token.as_str()),
        "B's first request must continue from A's last token: {first}"
    );
    run(&b, &["sync", "push"]).ok();

    // A's run of the pipeline now fails, naming B.
    let refused = run(&a, &["run", "feed"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("pipeline 'feed' is leased to beta@"),
        "{}",
        refused.stderr
    );
    let pulled = run(&a, &["sync", "pull"]).ok().stdout;
    assert!(
        pulled.contains("pulled state 2 (pushed by beta@"),
        "{pulled}"
    );
    a.assert_ids_once("feed", 175, "after A pulled B's run");
    for t in ["grow", "feed"] {
        assert_eq!(fingerprint(&a, t), fingerprint(&b, t), "{t} after A's pull");
    }
    let duck = duckdb_fingerprints(&s3.endpoint(), url, &["feed"]);
    assert_eq!(
        duck["feed"],
        fingerprint(&b, "feed"),
        "DuckDB after B's push"
    );

    // A third project reads the bucket's tables live, without pulling.
    let c = Project::new(&format!(
        r#"
[sources.shared]
type = "delta"
url = "{url}"
endpoint = "{}"
access_key_id = "env:TEST_S3_KEY_ID"
secret_access_key = "env:TEST_S3_SECRET"
"#,
        s3.endpoint()
    ));
    let tables = run(&c, &["source", "tables", "shared"]).ok().stdout;
    assert!(
        tables.contains("feed") && tables.contains("grow"),
        "{tables}"
    );
    assert_eq!(fingerprint(&c, "shared.feed"), fingerprint(&b, "feed"));
    assert_eq!(
        csv(&c, "select count(*) from shared.grow where id > 100"),
        vec!["20"]
    );

    let status = run(&a, &["sync", "status"]).ok().stdout;
    assert!(status.contains("feed\t0\t0\tin sync"), "{status}");
    assert!(status.contains("feed\theld by beta@"), "{status}");
}

/// Leases are conditional writes: of two projects acquiring the same free lease at once,
/// exactly one wins, and the other is told who holds it.
#[test]
fn of_concurrent_lease_acquires_exactly_one_wins() {
    let s3 = S3Server::start();
    s3.create_bucket("race");
    let api = Server::paged();
    let url = "s3://race/p";
    let projects: Vec<Project> = (0..4)
        .map(|i| Project::new(&manifest(&format!("p{i}"), &api.url(), url, &s3.endpoint())))
        .collect();
    for round in 0..3 {
        let pipeline = if round % 2 == 0 { "grow" } else { "feed" };
        if round == 2 {
            // Free it again: its holder releases.
            for p in &projects {
                let _ = run(p, &["sync", "lease", "release", "grow"]);
            }
        }
        let outcomes: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = projects
                .iter()
                .map(|p| s.spawn(move || run(p, &["sync", "lease", "acquire", pipeline])))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = outcomes.iter().filter(|r| r.code == 0).count();
        assert_eq!(winners, 1, "round {round}: {outcomes:#?}");
        for r in outcomes.iter().filter(|r| r.code != 0) {
            assert!(
                r.stderr
                    .contains(&format!("pipeline '{pipeline}' is leased to p")),
                "{}",
                r.stderr
            );
        }
    }
}

/// Wrong credentials, a missing bucket and an unreachable endpoint each fail with what went
/// wrong and the option to fix, and change nothing.
#[test]
fn bad_remotes_say_what_to_fix_and_change_nothing() {
    let s3 = S3Server::start();
    s3.create_bucket("real");
    let api = Server::paged();
    api.get("/admin/grow?n=30");
    let p = Project::new(&manifest(
        "solo",
        &api.url(),
        "s3://missing/x",
        &s3.endpoint(),
    ));
    // The run needs the lease, so a missing bucket stops it too, before it reads anything.
    let r = run(&p, &["run", "grow"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("bucket 'missing' does not exist"),
        "{}",
        r.stderr
    );
    let r = run(&p, &["sync", "push"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("bucket 'missing' does not exist") && r.stderr.contains("[sync] url"),
        "{}",
        r.stderr
    );
    assert_eq!(csv(&p, "select count(*) from hakiri.runs"), vec!["0"]);

    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());
    let q = Project::new(&manifest("solo", &api.url(), "s3://real/x", &dead));
    let r = run(&q, &["sync", "pull"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot reach") && r.stderr.contains("[sync] endpoint"),
        "{}",
        r.stderr
    );

    // moto checking credentials refuses a key its IAM does not know.
    let checking = S3Server::start_checking_credentials(1);
    checking.create_bucket("locked");
    let w = Project::new(&manifest(
        "solo",
        &api.url(),
        "s3://locked/x",
        &checking.endpoint(),
    ));
    let r = run(&w, &["sync", "push"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("refused the credentials")
            && r.stderr
                .contains("[sync] access_key_id and secret_access_key"),
        "{}",
        r.stderr
    );
    assert!(!w.path().join(".hakiri/sync/base.json").exists());

    let none = Project::new("");
    let r = run(&none, &["sync", "push"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no [sync] section"), "{}", r.stderr);
    assert!(!p.path().join(".hakiri/sync/base.json").exists());
}

/// After a replace (snapshot) run and a push, DuckDB reads the new snapshot; after a
/// column is added and pushed, DuckDB reads the older rows with NULL in it.
#[test]
fn duckdb_sees_replaced_tables_and_added_columns() {
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let api = Server::paged();
    api.get("/admin/grow?n=40");
    let url = "s3://lake/h";
    let with_select = |select: &str| {
        manifest("solo", &api.url(), url, &s3.endpoint())
            .replace(
                "SELECT * FROM api.grow WHERE",
                &format!("SELECT {select} FROM api.grow WHERE"),
            )
            .replace(
                "[pipelines.grow]",
                r#"[sources.api.tables.snap]
path = "/snapshot"
schema = "id bigint, version bigint, label text"

[pipelines.snap]
cursor = { kind = "snapshot" }
sql = "INSERT INTO context.snap SELECT * FROM api.snap"

[pipelines.grow]"#,
            )
    };
    let p = Project::new(&with_select("id, name"));
    run(&p, &["run", "grow"]).ok();
    run(&p, &["run", "snap"]).ok();
    run(&p, &["sync", "push"]).ok();
    let script_rows = |sql: &str| duckdb_query(&s3.endpoint(), url, sql);
    assert_eq!(
        script_rows("select count(*), max(version) from delta_scan('URL/tables/snap')"),
        vec!["10,1"]
    );

    // The snapshot changes: the run replaces the table, the push removes the old file.
    api.get("/admin/snapshot?version=3");
    run(&p, &["run", "snap"]).ok();
    let pushed = run(&p, &["sync", "push"]).ok().stdout;
    assert!(
        pushed.contains("snap: Delta version 1 (+1 file(s), -1 file(s))"),
        "{pushed}"
    );
    assert_eq!(
        script_rows(
            "select count(*), min(version), max(version) from delta_scan('URL/tables/snap')"
        ),
        vec!["20,3,3"]
    );

    // The replaced file is still held by the Delta table's version 0: gc keeps it.
    let kept = run(&p, &["sync", "gc", "--dry-run", "--grace", "0s"])
        .ok()
        .stdout;
    assert!(kept.contains("0 object(s) to delete"), "{kept}");
    assert_eq!(
        script_rows("select count(*) from delta_scan('URL/tables/snap', version => 0)"),
        vec!["10"]
    );

    // A column is added: the new rows have it, the old ones read NULL.
    std::fs::write(p.path().join("hakiri.toml"), with_select("*")).unwrap();
    api.get("/admin/grow?n=5");
    run(&p, &["run", "grow"]).ok();
    let pushed = run(&p, &["sync", "push"]).ok().stdout;
    assert!(
        pushed.contains("grow: Delta version 1 (+1 file(s), -0 file(s), schema)"),
        "{pushed}"
    );
    assert_eq!(
        script_rows(
            "select count(*), count(amount), sum(amount) from delta_scan('URL/tables/grow')"
        ),
        vec![format!("45,5,{}", (41..=45).map(|i| i * 10).sum::<i64>())]
    );
}

/// Runs `sql` in DuckDB over the bucket (`URL` in it stands for `url`): its rows as CSV.
fn duckdb_query(endpoint: &str, url: &str, sql: &str) -> Vec<String> {
    let script = r#"
for row in con.execute(sys.argv[2]).fetchall():
    print(",".join("" if v is None else str(v) for v in row))
"#;
    duckdb(endpoint, script, &[&sql.replace("URL", url)])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts `hakiri args` in `p` and SIGKILLs it after `ms`; `true` when it was still running.
fn kill_after(p: &Project, args: &[&str], ms: u64) -> bool {
    let mut child = std::process::Command::new(crate::support::hakiri_bin())
        .current_dir(p.path())
        .args(args)
        .envs(KEYS)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hakiri");
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let running = child.try_wait().expect("poll").is_none();
    let _ = child.kill();
    child.wait().expect("reap");
    running
}

/// Item 6: `sync push` and `sync pull` are SIGKILLed at seeded random moments. After every
/// kill the bucket's Delta tables (read by DuckDB) hold some state that a push set out to
/// publish, and the pulling project holds its tables as before or as after the pull, never
/// a mix. Running the command again completes it; `sync gc` removes what killed pushes
/// left.
#[test]
fn push_and_pull_survive_kills_at_random_moments() {
    let s3 = S3Server::start();
    s3.create_bucket("kills");
    let api = Server::paged();
    let url = "s3://kills/k";
    // The token pipeline commits every page of 2 rows: many small files, so a push and a
    // pull take long enough to be cut.
    let many_files = manifest("alpha", &api.url(), url, &s3.endpoint())
        .replace(
            "has_more_path = \"has_more\"\nquery = { size = \"25\" }",
            "has_more_path = \"has_more\"\nquery = { size = \"2\" }",
        )
        .replace(
            "[pipelines.feed]\n",
            "[pipelines.feed]\ncheckpoint_pages = 1\n",
        );
    assert!(many_files.contains("checkpoint_pages = 1") && many_files.contains("size = \"2\""));
    let a = Project::new(&many_files);
    let b = Project::new(&many_files.replace("\"alpha\"", "\"beta\""));
    api.get("/admin/grow?n=600");
    run(&a, &["run", "feed"]).ok();
    let mut moments = Moments(0x5DEE_CE66_D1CE_4E5B);
    // What A set out to publish at each push (a push may be cut before it commits).
    let mut published = vec![String::from("absent")];
    let (mut cut, mut behind) = (0, 0);
    // Until 12 kills have landed while the push ran (a moment past its end kills nothing).
    for round in 0..40 {
        if cut == 12 {
            break;
        }
        if round > 0 {
            // New rows, so this push has files to upload and a commit to make.
            api.get("/admin/grow?n=40");
            run(&a, &["run", "feed"]).ok();
        }
        published.push(fingerprint(&a, "feed"));
        if kill_after(&a, &["sync", "push"], moments.next_ms(30, 600)) {
            cut += 1;
        }
        let seen = duckdb_fingerprints(&s3.endpoint(), url, &["feed"])["feed"].clone();
        assert!(
            published.contains(&seen),
            "round {round}: the bucket's feed is {seen}, not a state a push set out to publish: {published:?}"
        );
        if &seen != published.last().unwrap() {
            behind += 1;
        }
    }
    assert_eq!(cut, 12, "only {cut} of 40 pushes were killed while running");
    // Some kills landed before the commit: the bucket kept an earlier state.
    assert!(
        behind >= 2,
        "only {behind} killed pushes left the bucket behind"
    );
    let started = std::time::Instant::now();
    run(&a, &["sync", "push"]).ok();
    eprintln!("the completing push took {:?}", started.elapsed());
    // A file a killed push uploaded and the project then retired (a replace run) is named by
    // no Delta log and no state: gc lists it and deletes it, and nothing else.
    s3.put(
        "kills",
        "k/tables/feed/feed-left-by-a-killed-push.parquet",
        b"PAR1",
    );
    let young = run(&a, &["sync", "gc", "--dry-run"]).ok().stdout;
    assert!(
        young.contains("0 object(s) to delete"),
        "younger than the grace: {young}"
    );
    let dry = run(&a, &["sync", "gc", "--dry-run", "--grace", "0s"])
        .ok()
        .stdout;
    assert!(
        dry.contains("would delete tables/feed/feed-left-by-a-killed-push.parquet")
            && dry.contains("1 object(s) to delete"),
        "{dry}"
    );
    let gc = run(&a, &["sync", "gc", "--grace", "0s"]).ok().stdout;
    assert!(gc.contains("1 object(s) deleted"), "{gc}");
    let again = run(&a, &["sync", "gc", "--dry-run", "--grace", "0s"])
        .ok()
        .stdout;
    assert!(again.contains("0 object(s) to delete"), "{again}");
    assert_eq!(
        duckdb_fingerprints(&s3.endpoint(), url, &["feed"])["feed"],
        fingerprint(&a, "feed")
    );

    // Pulls cut at random moments: B is as before or as after, never a mix.
    let before = (fingerprint(&b, "feed"), token_of(&b, "feed"));
    let after = (fingerprint(&a, "feed"), token_of(&a, "feed"));
    let (mut cut, mut unchanged) = (0, 0);
    for round in 0..40 {
        if cut == 12 {
            break;
        }
        if kill_after(&b, &["sync", "pull"], moments.next_ms(30, 1200)) {
            cut += 1;
        }
        let now = (fingerprint(&b, "feed"), token_of(&b, "feed"));
        if now == before {
            unchanged += 1;
        }
        assert!(
            now == before || now == after,
            "round {round}: B's feed and token are {now:?}: neither {before:?} nor {after:?}"
        );
        if now == after {
            // Start over: B drops what it pulled (as a fresh project would be).
            std::fs::remove_dir_all(b.path().join(".hakiri")).unwrap();
        }
    }
    assert_eq!(cut, 12, "only {cut} of 40 pulls were killed while running");
    assert!(
        unchanged >= 2,
        "only {unchanged} killed pulls left B as it was"
    );
    eprintln!(
        "{behind} of 12 killed pushes before their commit; {unchanged} of 12 killed pulls before theirs"
    );
    let started = std::time::Instant::now();
    run(&b, &["sync", "pull"]).ok();
    eprintln!("the completing pull took {:?}", started.elapsed());
    assert_eq!((fingerprint(&b, "feed"), token_of(&b, "feed")), after);
    let check = csv(
        &b,
        "select count(*) from hakiri.files where retired_at is null",
    );
    assert_eq!(
        check,
        csv(
            &a,
            "select count(*) from hakiri.files where retired_at is null"
        )
    );
}

/// A lease lasts its TTL: `serve` renews the leases its project holds, so another project
/// cannot take one with `--steal` while it serves; once it stops, the lease lapses and
/// `--steal` takes it (without `--steal` a lapsed lease is still refused, naming the
/// flag).
#[test]
fn serve_renews_leases_and_a_lapsed_one_is_taken_with_steal() {
    let s3 = S3Server::start();
    s3.create_bucket("ttl");
    let api = Server::paged();
    let url = "s3://ttl/t";
    let short = |name: &str| {
        manifest(name, &api.url(), url, &s3.endpoint())
            .replace("[sync]\n", "[sync]\nlease_ttl = \"3 seconds\"\n")
    };
    let a = Project::new(&short("alpha"));
    let b = Project::new(&short("beta"));
    run(&a, &["sync", "lease", "acquire", "feed"]).ok();
    let server = crate::support::HakiriServer::start_mcp(a.path(), &KEYS);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let refused = run(&b, &["sync", "lease", "acquire", "feed", "--steal"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("pipeline 'feed' is leased to alpha@"),
        "{}",
        refused.stderr
    );
    server.stop();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let plain = run(&b, &["sync", "lease", "acquire", "feed"]);
    assert_ne!(plain.code, 0);
    assert!(
        plain.stderr.contains("take it with --steal"),
        "{}",
        plain.stderr
    );
    let stolen = run(&b, &["sync", "lease", "acquire", "feed", "--steal"])
        .ok()
        .stdout;
    assert!(stolen.contains("feed\theld by beta@"), "{stolen}");
    let status = run(&a, &["sync", "lease", "status", "feed"]).ok().stdout;
    assert!(status.contains("feed\theld by beta@"), "{status}");
}

/// After a hand-off, a run from a cursor older than the remote's is refused until the new
/// holder pulls: it would load the rows the old holder loaded again.
#[test]
fn a_new_lease_holder_pulls_before_it_runs() {
    let s3 = S3Server::start();
    s3.create_bucket("handoff");
    let api = Server::paged();
    api.get("/admin/grow?n=30");
    let url = "s3://handoff/h";
    let a = Project::new(&manifest("alpha", &api.url(), url, &s3.endpoint()));
    let b = Project::new(&manifest("beta", &api.url(), url, &s3.endpoint()));
    run(&a, &["run", "feed"]).ok();
    run(&a, &["sync", "push"]).ok();
    run(&a, &["sync", "lease", "release", "feed"]).ok();
    run(&b, &["sync", "lease", "acquire", "feed"]).ok();
    let refused = run(&b, &["run", "feed"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("pipeline 'feed' moved on in the sync remote (state 1, pushed by alpha@")
            && refused.stderr.contains("run 'hakiri sync pull' first"),
        "{}",
        refused.stderr
    );
    assert_eq!(csv(&b, "select count(*) from hakiri.runs"), vec!["0"]);
    run(&b, &["sync", "pull"]).ok();
    api.get("/admin/grow?n=5");
    run(&b, &["run", "feed"]).ok();
    b.assert_ids_once("feed", 35, "after the pull and B's run");
}

/// A push stopped between its Delta commit and its state leaves the table ahead of every
/// pushed state (made here by deleting the newest state object, which is what such a push
/// leaves). If that push is never run again (its project pulled with `--discard-local`),
/// `sync gc` commits the table back to the pushed state's files; DuckDB then reads the
/// pushed state.
#[test]
fn gc_commits_a_delta_table_back_to_the_pushed_state() {
    let s3 = S3Server::start();
    s3.create_bucket("repair");
    let api = Server::paged();
    api.get("/admin/grow?n=30");
    let url = "s3://repair/r";
    let a = Project::new(&manifest("alpha", &api.url(), url, &s3.endpoint()));
    run(&a, &["run", "grow"]).ok();
    run(&a, &["sync", "push"]).ok();
    let pushed = duckdb_fingerprints(&s3.endpoint(), url, &["grow"])["grow"].clone();
    api.get("/admin/grow?n=10");
    run(&a, &["run", "grow"]).ok();
    run(&a, &["sync", "push"]).ok();
    s3.delete("repair", "r/state/00000000000000000002.json");
    run(&a, &["sync", "pull", "--discard-local"]).ok();
    a.assert_ids_once("grow", 30, "after the pull of state 1");
    let ahead = duckdb_fingerprints(&s3.endpoint(), url, &["grow"])["grow"].clone();
    assert!(ahead.starts_with("40 rows"), "{ahead}");

    let young = run(&a, &["sync", "gc", "--dry-run"]).ok().stdout;
    assert!(
        !young.contains("repair"),
        "a commit younger than the grace is left alone: {young}"
    );
    let dry = run(&a, &["sync", "gc", "--dry-run", "--grace", "0s"])
        .ok()
        .stdout;
    assert!(
        dry.contains("would repair grow: its Delta table differs from the pushed state (+0 file(s), -1 file(s)"),
        "{dry}"
    );
    let done = run(&a, &["sync", "gc", "--grace", "0s"]).ok().stdout;
    assert!(done.contains("repaired grow"), "{done}");
    assert_eq!(
        duckdb_fingerprints(&s3.endpoint(), url, &["grow"])["grow"],
        pushed
    );
    let again = run(&a, &["sync", "gc", "--dry-run", "--grace", "0s"])
        .ok()
        .stdout;
    assert!(!again.contains("repair"), "{again}");
}

/// Issue 21: a compaction in a synced project is pushed as one Delta commit that removes
/// the small files and adds the merged one; DuckDB reads the same rows before and after,
/// and the version before the compaction stays readable.
#[test]
fn a_compaction_is_pushed_as_one_delta_commit_of_removes_and_adds() {
    let s3 = S3Server::start();
    s3.create_bucket("compact");
    let api = Server::paged();
    let url = "s3://compact/c";
    let p = Project::new(&manifest("solo", &api.url(), url, &s3.endpoint()));
    for n in [20, 15, 10] {
        api.get(&format!("/admin/grow?n={n}"));
        run(&p, &["run", "grow"]).ok();
    }
    assert_eq!(
        csv(&p, "select files from hakiri.tables where name = 'grow'"),
        vec!["3"]
    );
    let pushed = run(&p, &["sync", "push"]).ok().stdout;
    assert!(
        pushed.contains("grow: Delta version 0 (+3 file(s)"),
        "{pushed}"
    );
    let before = duckdb_fingerprints(&s3.endpoint(), url, &["grow"])["grow"].clone();
    assert!(before.starts_with("45 rows"), "{before}");
    assert_eq!(before, fingerprint(&p, "grow"));

    let compacted = run(&p, &["context", "compact", "grow"]).ok();
    assert_eq!(
        csv(&p, "select files from hakiri.tables where name = 'grow'"),
        vec!["1"],
        "{}",
        compacted.stdout
    );
    let pushed = run(&p, &["sync", "push"]).ok().stdout;
    assert!(
        pushed.contains("grow: Delta version 1 (+1 file(s), -3 file(s))"),
        "one commit, removes plus adds: {pushed}"
    );
    // The commit's actions, as the Delta log holds them.
    let log = duckdb_query(
        &s3.endpoint(),
        url,
        "select count(*) filter (where \"add\" is not null), count(*) filter (where remove is not null) from read_json_auto('URL/tables/grow/_delta_log/00000000000000000001.json', format = 'newline_delimited')",
    );
    assert_eq!(log, vec!["1,3"]);
    assert_eq!(
        duckdb_fingerprints(&s3.endpoint(), url, &["grow"])["grow"],
        before
    );
    assert_eq!(
        duckdb_query(
            &s3.endpoint(),
            url,
            "select count(*) from delta_scan('URL/tables/grow', version => 0)"
        ),
        vec!["45"]
    );
}
