//! `hakiri sql`: the interactive shell through a pseudo-terminal, and scripts.

use crate::pgwire::project;

#[test]
fn the_sql_shell_completes_reads_multi_line_statements_and_quits() {
    let p = project();
    let out = std::process::Command::new(crate::support::python())
        .arg(crate::support::repo_root().join("tests/fixtures/repl_pty.py"))
        .arg(crate::support::hakiri_bin())
        .arg(p.path())
        .output()
        .expect("run repl_pty.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "completion ok",
        "multi-line ok",
        "\\dt ok",
        "\\d ok",
        "quit ok",
    ] {
        assert!(
            stdout.contains(check),
            "missing '{check}':\n{stdout}\n{stderr}"
        );
    }
    // History is kept in the project.
    let history = std::fs::read_to_string(p.path().join(".hakiri/sql_history")).unwrap();
    assert!(history.contains("from events"), "{history}");
}

#[test]
fn sql_runs_scripts_with_c_and_f() {
    let p = project();
    let out = p
        .hakiri(&["sql", "-c", "select count(*) as n from events;"])
        .ok()
        .stdout;
    assert!(out.contains("1000"), "{out}");
    // `-c '\timing'` adds a timing line after each later command (the benchmark reads them).
    let out = p
        .hakiri(&[
            "sql",
            "-c",
            "select 1 as a;",
            "-c",
            "\\timing",
            "-c",
            "select 2 as b;",
        ])
        .ok()
        .stdout;
    assert_eq!(out.matches("Time: ").count(), 1, "{out}");
    assert!(out.find("Time: ") > out.find('2'), "{out}");
    std::fs::write(
        p.path().join("script.sql"),
        "select 1 as one;\nselect max(id) as top from events;\n",
    )
    .unwrap();
    let out = p.hakiri(&["sql", "-f", "script.sql"]).ok().stdout;
    assert!(out.contains("one") && out.contains("1000"), "{out}");
    let err = p.hakiri(&["sql", "-c", "select nope from events"]);
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.contains("nope"), "{}", err.stderr);
}
