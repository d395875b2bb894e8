//! The postgres connector against a real, throwaway PostgreSQL cluster (initdb + pg_ctl on
//! 127.0.0.1), with data written by the real psql client.

use crate::support::{PgCluster, Project, Run, hakiri};

const PASSWORD_ENV: &str = "HAKIRI_TEST_PGPASSWORD";

fn project(pg: &PgCluster, extra: &str) -> Project {
    Project::new(&format!(
        r#"
[sources.pg]
type = "postgres"
url = "{}"
password = "env:{PASSWORD_ENV}"
{extra}"#,
        pg.url()
    ))
}

fn run(p: &Project, args: &[&str]) -> Run {
    hakiri(p.path(), args, &[(PASSWORD_ENV, PgCluster::PASSWORD)])
}

fn csv(p: &Project, sql: &str) -> Vec<String> {
    let r = run(p, &["query", "--format", "csv", sql]).ok();
    r.stdout.lines().skip(1).map(str::to_string).collect()
}

fn events(pg: &PgCluster, from: i64, to: i64) {
    pg.psql(&format!(
        "INSERT INTO events SELECT i, CASE WHEN i % 3 = 0 THEN 'push' ELSE 'issue' END, i * 1.25,
                timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
         FROM generate_series({from}, {to}) AS i"
    ));
}

#[test]
fn live_queries_push_filters_and_pipelines_load_exactly() {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text NOT NULL, amount numeric(10,2), created_at timestamptz);
         CREATE TABLE kinds (kind text PRIMARY KEY, label text)",
    );
    pg.psql("INSERT INTO kinds VALUES ('push', 'Pushes'), ('issue', 'Issues')");
    events(&pg, 1, 100);
    let p = project(
        &pg,
        r#"
[pipelines.ev]
cursor = { kind = "monotonic", column = "id", initial = "0" }
sql = "INSERT INTO context.ev SELECT * FROM pg.events WHERE id > $cursor"

[pipelines.ev_snapshot]
cursor = { kind = "snapshot" }
sql = "INSERT INTO context.ev_snapshot SELECT id, kind, amount FROM pg.events"
"#,
    );
    // Discovery and a live query whose filter and projection land in PostgreSQL's WHERE.
    let tables = run(&p, &["source", "tables", "pg"]).ok().stdout;
    assert_eq!(tables.lines().collect::<Vec<_>>(), vec!["events", "kinds"]);
    let plan = csv(
        &p,
        "explain select id from pg.events where id > 90 and kind = 'push'",
    );
    let plan = plan.join("\n").replace("\"\"", "\"");
    assert!(
        plan.contains(r#"PostgresExec: table=public.events, sql=SELECT "id" FROM "public"."events" WHERE ("id" > 90) AND ("kind" = 'push')"#),
        "{plan}"
    );
    assert!(
        !plan.contains("FilterExec"),
        "an exact filter needs no FilterExec: {plan}"
    );
    assert_eq!(
        csv(
            &p,
            "select count(*), sum(id) from pg.events where id > 90 and kind = 'push'"
        ),
        vec!["3,288"]
    );
    let sample = run(&p, &["source", "sample", "pg.events", "--limit", "2"])
        .ok()
        .stdout;
    assert!(
        sample.contains("issue") && sample.lines().count() >= 3,
        "{sample}"
    );

    // Incremental: the cursor predicate is pushed as WHERE; each run loads only new rows.
    // (`id` is NOT NULL, so DataFusion drops the cursor's `OR id IS NULL`.)
    run(&p, &["run", "ev"]).ok();
    events(&pg, 101, 150);
    let plan = run(&p, &["plan", "ev"]).ok().stdout;
    assert!(
        plan.contains(r#"FROM "public"."events" WHERE ("id" > 100)"#)
            && plan.contains("(Exact: the source applies it)"),
        "{plan}"
    );
    let out = run(&p, &["run", "ev"]).ok().stdout;
    assert!(out.contains("50 rows written"), "{out}");
    assert_eq!(
        csv(&p, "select count(*), count(distinct id), sum(id) from ev"),
        vec!["150,150,11325"]
    );
    assert_eq!(csv(&p, "select sum(amount) from ev"), vec!["14156.25"]);

    // Snapshot: loads the table, skips an unchanged one, replaces a changed one.
    run(&p, &["run", "ev_snapshot"]).ok();
    let again = run(&p, &["run", "ev_snapshot"]).ok().stdout;
    assert!(again.contains("skipped"), "{again}");
    pg.psql("UPDATE events SET kind = 'release' WHERE id = 7");
    run(&p, &["run", "ev_snapshot"]).ok();
    assert_eq!(
        csv(
            &p,
            "select count(*), count(*) filter (where kind = 'release') from ev_snapshot"
        ),
        vec!["150,1"]
    );

    // A live source table joined with a context table.
    let joined = csv(
        &p,
        "select k.label, count(*) from pg.kinds k join ev e on e.kind = k.kind group by k.label order by k.label",
    );
    assert_eq!(joined, vec!["Issues,100", "Pushes,50"]);
}

#[test]
fn every_type_round_trips_with_nulls() {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE alltypes (
            id int4, i2 int2, i8 int8, n numeric(12,3), nu numeric, f4 float4, f8 float8, b bool,
            t text, vc varchar(10), c char(3), d date, tm time, ts timestamp, tstz timestamptz,
            iv interval, u uuid, j json, jb jsonb, by bytea, ia int4[], ta text[], ip inet);
         INSERT INTO alltypes VALUES
           (1, -12, 9007199254740993, 12345.678, 3.14159265358979323846, 1.5, -2.25, true,
            'héllo', 'varchar', 'ab', '2026-02-03', '04:05:06.789', '2026-02-03 04:05:06.123456',
            '2026-02-03 04:05:06.5+02', '1 mon 2 days 03:04:05', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{\"a\": 1}', '{\"b\": [true, null]}', '\\xdeadbeef', '{1,NULL,3}', '{x,\"y z\"}', '192.168.0.1/24'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    let p = project(
        &pg,
        r#"
[pipelines.alltypes]
sql = "INSERT INTO context.alltypes SELECT * FROM pg.alltypes"
"#,
    );
    run(&p, &["run", "alltypes"]).ok();
    let cols = "i2, i8, n, nu, f4, f8, b, t, vc, c, d, tm, ts, tstz, iv, u, j, jb, encode(by, 'hex'), ia, ta, ip";
    // Into the context store and back out: the same values as live from PostgreSQL.
    let stored = csv(&p, &format!("select {cols} from alltypes order by id"));
    let live = csv(&p, &format!("select {cols} from pg.alltypes order by id"));
    assert_eq!(stored, live);
    assert_eq!(
        stored[0],
        "-12,9007199254740993,12345.678,3.14159265358979323846,1.5,-2.25,true,héllo,varchar,ab ,2026-02-03,04:05:06.789,2026-02-03T04:05:06.123456,2026-02-03T02:05:06.500Z,1 mons 2 days 3 hours 4 mins 5.000000000 secs,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,\"{\"\"a\"\": 1}\",\"{\"\"b\"\": [true, null]}\",deadbeef,\"[1, , 3]\",\"[x, y z]\",192.168.0.1/24"
    );
    // The NULL row is NULL in every column.
    assert_eq!(stored[1], ",".repeat(21));
    let types = csv(
        &p,
        "select column_name, data_type from information_schema.columns where table_name = 'alltypes' and table_schema = 'context' and column_name in ('n', 'nu', 'tstz', 'iv', 'ia', 'by') order by column_name",
    );
    // Queries read text and binary columns as views (the files store Utf8 and Binary).
    assert_eq!(
        types,
        vec![
            "by,BinaryView",
            "ia,List(Int32)",
            "iv,Utf8View",
            "n,\"Decimal128(12, 3)\"",
            "nu,Utf8View",
            "tstz,\"Timestamp(µs, \"\"UTC\"\")\"",
        ]
    );
}

#[test]
fn connection_problems_name_the_source_and_the_fix() {
    let pg = PgCluster::start();
    pg.psql("CREATE TABLE events (id int)");
    let p = project(&pg, "");
    let unknown = run(&p, &["query", "select * from pg.nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("source 'pg' has no table 'nope' in schema 'public': its tables are events"),
        "{}",
        unknown.stderr
    );
    let wrong = hakiri(
        p.path(),
        &["query", "select * from pg.events"],
        &[(PASSWORD_ENV, "wrong")],
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("source 'pg'")
            && wrong.stderr.contains("password authentication failed")
            && wrong
                .stderr
                .contains("check the user and the password option"),
        "{}",
        wrong.stderr
    );
    // Regression: with no password option the server's request for one read as "cannot
    // reach PostgreSQL".
    let no_password = Project::new(&format!(
        "[sources.pg]\ntype = \"postgres\"\nurl = \"{}\"\n",
        pg.url()
    ));
    let missing = no_password.hakiri(&["query", "select * from pg.events"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("source 'pg' (postgres ")
            && missing.stderr.contains("the source has no password option")
            && !missing.stderr.contains("cannot reach"),
        "{}",
        missing.stderr
    );
    let down = Project::new(
        "[sources.pg]\ntype = \"postgres\"\nurl = \"postgres://hakiri@127.0.0.1:1/postgres\"\nconnect_timeout_ms = \"2000\"\n",
    );
    let unreachable = down.hakiri(&["query", "select * from pg.events"]);
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable
            .stderr
            .contains("source 'pg': cannot reach PostgreSQL at hakiri@127.0.0.1:1/postgres")
            && unreachable.stderr.contains("check host and port"),
        "{}",
        unreachable.stderr
    );
}

/// A large table is read over several connections (page ranges, one exported snapshot):
/// the plan says so, and the snapshot pipeline loads every row exactly once, also while
/// another session updates rows (moving them to other pages) during the scan.
#[test]
fn large_tables_are_read_in_parallel_in_one_snapshot() {
    let pg = PgCluster::start();
    pg.psql(
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text NOT NULL, version int NOT NULL);
         INSERT INTO big SELECT i, repeat(md5(i::text), 3), 1 FROM generate_series(1, 60000) AS i",
    );
    pg.psql("VACUUM ANALYZE big");
    let p = project(
        &pg,
        r#"
[pipelines.big]
sql = "INSERT INTO context.big SELECT id, version FROM pg.big"
mode = "replace"
"#,
    );
    let plan = run(&p, &["plan", "big"]).ok().stdout;
    assert!(
        plan.contains("connections=2 (one snapshot)") && plan.contains("ctid >= '("),
        "{plan}"
    );
    // Updates from another session while runs read: each run must still see one state.
    let writer = {
        let url = pg.url();
        std::thread::spawn(move || {
            for round in 2..40 {
                let _ = std::process::Command::new("psql")
                    .arg(&url)
                    .env("PGPASSWORD", PgCluster::PASSWORD)
                    .args([
                        "-X",
                        "-q",
                        "-c",
                        &format!("UPDATE big SET version = {round} WHERE id % 7 = 0"),
                    ])
                    .output();
            }
        })
    };
    for _ in 0..3 {
        run(&p, &["run", "big"]).ok();
        // One snapshot: every id once, and every updated row at one version.
        assert_eq!(
            csv(
                &p,
                "select count(*), count(distinct id), sum(id), count(distinct version) filter (where id % 7 = 0) from big"
            ),
            vec!["60000,60000,1800030000,1"]
        );
    }
    writer.join().unwrap();
    // The writer really wrote (the checks above were not vacuous).
    run(&p, &["run", "big"]).ok();
    assert_eq!(
        csv(
            &p,
            "select min(version), max(version) from big where id % 7 = 0"
        ),
        vec!["39,39"]
    );
}

/// Each sslmode against a cluster that accepts only TLS, whose certificate names
/// `localhost` and is signed by the cluster's own CA.
#[test]
fn sslmodes_against_a_tls_only_cluster() {
    let pg = PgCluster::start_tls();
    pg.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)");
    let ca = pg.dir().join("ca.crt");
    let other = pg.dir().join("other-ca.crt");
    let source = |name: &str, host: &str, mode: &str, root: Option<&std::path::Path>| {
        format!(
            "[sources.{name}]\ntype = \"postgres\"\nhost = \"{host}\"\nport = \"{}\"\nuser = \"hakiri\"\ndbname = \"postgres\"\npassword = \"env:{PASSWORD_ENV}\"\nsslmode = \"{mode}\"\n{}\n",
            pg.port,
            root.map_or(String::new(), |r| format!(
                "sslrootcert = \"{}\"",
                r.display()
            ))
        )
    };
    let p = Project::new(
        &[
            source("off", "127.0.0.1", "disable", None),
            source("pref", "127.0.0.1", "prefer", None),
            source("req", "127.0.0.1", "require", None),
            source("ca", "127.0.0.1", "verify-ca", Some(&ca)),
            source("ca_other", "127.0.0.1", "verify-ca", Some(&other)),
            source("full", "localhost", "verify-full", Some(&ca)),
            source("full_ip", "127.0.0.1", "verify-full", Some(&ca)),
        ]
        .concat(),
    );
    for ok in ["pref", "req", "ca", "full"] {
        let r = run(
            &p,
            &[
                "query",
                "--format",
                "csv",
                &format!("select sum(id) from {ok}.t"),
            ],
        );
        assert_eq!(r.code, 0, "sslmode of {ok}: {}", r.stderr);
        assert!(r.stdout.ends_with("3\n"), "{ok}: {}", r.stdout);
    }
    // disable: the server refuses a plain connection (its pg_hba says hostnossl reject).
    let r = run(&p, &["query", "select * from off.t"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no encryption") && r.stderr.contains("SQLSTATE 28000"),
        "{}",
        r.stderr
    );
    // verify-ca with a CA that did not sign the server's certificate.
    let r = run(&p, &["query", "select * from ca_other.t"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the TLS handshake failed") && r.stderr.contains("UnknownIssuer"),
        "{}",
        r.stderr
    );
    // verify-full to an address the certificate does not name.
    let r = run(&p, &["query", "select * from full_ip.t"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the TLS handshake failed") && r.stderr.contains("not valid for name"),
        "{}",
        r.stderr
    );
    // verify-full without a root certificate is refused before connecting.
    let bad = Project::new(&source("x", "localhost", "verify-full", None));
    let r = run(&bad, &["source", "tables", "x"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("needs sslrootcert"), "{}", r.stderr);
}
