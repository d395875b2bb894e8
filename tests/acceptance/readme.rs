//! The README's main-job command, run exactly as written, works offline.

use std::process::Command;

#[test]
fn readme_main_job_command_works_offline() {
    let root = crate::support::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let marker = "<!-- main-job -->";
    let start = readme
        .find(marker)
        .expect("README marks its main-job command with <!-- main-job -->");
    let block = &readme[start + marker.len()..];
    let cmd = block
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```sh block after the marker")
        .trim();
    let mut bash = Command::new("bash");
    crate::support::without_cargo_test_env(&mut bash);
    let out = bash
        .args(["-c", cmd])
        .current_dir(&root)
        // Offline: an unreachable proxy makes any attempt at the network fail.
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`{cmd}` failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("events: succeeded") && stdout.contains("1000 rows written"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pull_request"),
        "the demo query prints its result: {stdout}"
    );
}
