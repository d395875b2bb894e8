//! The crate graph of ARCHITECTURE.md: dependencies point inward. Reads `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

/// Workspace crates each crate may depend on (normal and build dependencies).
fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("hakiri-engine", vec![]),
        ("hakiri-udfs", vec!["hakiri-engine"]),
        ("hakiri-table-providers", vec!["hakiri-engine"]),
        ("hakiri-manifests", vec!["hakiri-engine"]),
        ("hakiri-pgwire", vec!["hakiri-engine"]),
        ("hakiri-mcp", vec!["hakiri-engine"]),
        (
            "hakiri",
            vec![
                "hakiri-engine",
                "hakiri-udfs",
                "hakiri-table-providers",
                "hakiri-manifests",
                "hakiri-pgwire",
                "hakiri-mcp",
            ],
        ),
    ])
}

#[test]
fn no_forbidden_dependency_edges() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(crate::support::repo_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed = allowed();
    let members: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for m in &members {
        assert!(
            allowed.contains_key(m),
            "crate {m} is not in the dependency table of this test: add it"
        );
    }
    let mut violations = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if members.contains(&dep) && !allowed[name].contains(&dep) {
                violations.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden edges (see ARCHITECTURE.md): {violations:?}"
    );
    // The test checks itself: the edge table forbids what ARCHITECTURE.md forbids.
    assert!(
        !allowed["hakiri-engine"]
            .iter()
            .any(|d| d.starts_with("hakiri"))
    );
    assert!(!allowed["hakiri-table-providers"].contains(&"hakiri-udfs"));
    assert!(allowed.values().all(|deps| !deps.contains(&"hakiri")));
}

#[test]
fn one_copy_of_the_core_crates() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-d", "-e", "normal", "--depth", "0", "--offline"])
        .current_dir(crate::support::repo_root())
        .output()
        .expect("cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    for core in [
        "arrow ",
        "datafusion ",
        "parquet ",
        "object_store ",
        "reqwest ",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(core)),
            "two versions of {core}in the build:\n{text}"
        );
    }
}
