//! The crate graph of ARCHITECTURE.md: dependencies point inward. Reads `cargo metadata`.

use std::collections::BTreeMap;
use std::process::Command;

/// What `cargo ARGS` prints in the repository (metadata and tree only: nothing is built).
fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(crate::support::repo_root())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// Workspace crates each crate may depend on (any kind of dependency). Connectors and the
/// manifest reader see the core only: never the engine's runtime, catalog or store.
fn allowed() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        ("hakiri-core", vec![]),
        ("hakiri-catalog", vec!["hakiri-core"]),
        ("hakiri-engine", vec!["hakiri-core", "hakiri-catalog"]),
        ("hakiri-udfs", vec![]),
        ("hakiri-table-providers", vec!["hakiri-core"]),
        // The sandbox is a connector: the core only (and itself, with its test guests).
        ("hakiri-wasm", vec!["hakiri-core", "hakiri-wasm"]),
        // The guest SDK is compiled into connectors, never into Hakiri: it depends on nothing
        // of Hakiri's but the WIT contract.
        ("hakiri-connector-sdk", vec![]),
        (
            "hakiri-sync",
            vec![
                "hakiri-core",
                "hakiri-catalog",
                "hakiri-engine",
                "hakiri-table-providers",
            ],
        ),
        ("hakiri-manifests", vec!["hakiri-core"]),
        // The control plane knows the manifest (apply validates with its parser), never the
        // engine: nodes run pipelines through the CLI's engine.
        ("hakiri-control", vec!["hakiri-core", "hakiri-manifests"]),
        ("hakiri-pgwire", vec!["hakiri-engine"]),
        ("hakiri-mcp", vec!["hakiri-engine"]),
        (
            "hakiri",
            vec![
                "hakiri-core",
                "hakiri-engine",
                "hakiri-udfs",
                "hakiri-table-providers",
                "hakiri-wasm",
                "hakiri-sync",
                "hakiri-control",
                "hakiri-manifests",
                "hakiri-pgwire",
                "hakiri-mcp",
            ],
        ),
    ])
}

/// The edges between workspace crates that `allowed` forbids.
fn violations(
    meta: &serde_json::Value,
    allowed: &BTreeMap<&'static str, Vec<&'static str>>,
) -> Vec<String> {
    let packages = meta["packages"].as_array().unwrap();
    let members: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut out = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            let ok = allowed.get(name).is_some_and(|a| a.contains(&dep));
            if members.contains(&dep) && !ok {
                out.push(format!("{name} -> {dep}"));
            }
        }
    }
    out
}

/// The check rejects what it must: a connector depending on the engine.
#[test]
fn a_connector_to_engine_edge_is_rejected() {
    let meta = serde_json::json!({"packages": [
        {"name": "hakiri-core", "dependencies": []},
        {"name": "hakiri-engine", "dependencies": [{"name": "hakiri-core"}]},
        {"name": "hakiri-table-providers", "dependencies": [
            {"name": "hakiri-core"}, {"name": "hakiri-engine"}, {"name": "datafusion"}
        ]},
    ]});
    assert_eq!(
        violations(&meta, &allowed()),
        vec!["hakiri-table-providers -> hakiri-engine"]
    );
}

#[test]
fn no_forbidden_dependency_edges() {
    let out = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]);
    let meta: serde_json::Value = serde_json::from_str(&out).unwrap();
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
    let violations = violations(&meta, &allowed);
    assert!(
        violations.is_empty(),
        "forbidden edges (see ARCHITECTURE.md): {violations:?}"
    );
    // The test checks itself: the edge table forbids what ARCHITECTURE.md forbids.
    assert!(
        !allowed["hakiri-core"]
            .iter()
            .any(|d| d.starts_with("hakiri"))
    );
    assert_eq!(
        allowed["hakiri-engine"],
        vec!["hakiri-core", "hakiri-catalog"]
    );
    assert_eq!(allowed["hakiri-catalog"], vec!["hakiri-core"]);
    for connector_side in ["hakiri-table-providers", "hakiri-manifests"] {
        assert!(!allowed[connector_side].contains(&"hakiri-engine"));
        assert!(!allowed[connector_side].contains(&"hakiri-catalog"));
    }
    assert!(!allowed["hakiri-table-providers"].contains(&"hakiri-udfs"));
    assert!(allowed.values().all(|deps| !deps.contains(&"hakiri")));
}

#[test]
fn one_copy_of_the_core_crates() {
    let text = cargo(&["tree", "-d", "-e", "normal", "--depth", "0", "--offline"]);
    for core in ["arrow ", "datafusion ", "parquet ", "object_store "] {
        assert!(
            !text.lines().any(|l| l.starts_with(core)),
            "two versions of {core}in the build:\n{text}"
        );
    }
    // One reqwest for Hakiri (0.12, the one object_store uses). deltalake 1.1's kernel
    // (buoyant_kernel_engine) depends on reqwest 0.13 without a feature to leave it out;
    // Hakiri never calls it. Any other second copy, or another crate on 0.13, fails here.
    let versions: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("reqwest v"))
        .map(|v| v.split_whitespace().next().unwrap_or_default())
        .collect();
    for v in versions.iter().filter(|v| !v.starts_with("0.12.")) {
        let users = cargo(&[
            "tree",
            "-e",
            "normal",
            "-i",
            &format!("reqwest@{v}"),
            "--depth",
            "1",
            "--prefix",
            "none",
            "--offline",
        ]);
        let others: Vec<&str> = users
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty() && !l.starts_with("buoyant_kernel"))
            .collect();
        assert!(
            others.is_empty(),
            "reqwest {v} is used beyond deltalake's kernel: {others:?}"
        );
    }
}

/// Each dependency's features, as `cargo tree` resolves them for `args`: path (workspace)
/// crates left out, since a rebuild of our own crates is expected.
fn resolved_features(args: &[&str]) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut all = vec!["tree", "--offline", "--prefix", "none", "-f", "{p}|{f}"];
    all.extend(args);
    let out = cargo(&all);
    let mut map: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in out.lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        if package.contains(" (/") {
            continue;
        }
        let entry = map.entry(package.to_string()).or_default();
        entry.extend(
            features
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_string),
        );
    }
    map
}

/// Dependencies of the binary that the whole workspace's tests resolve with other features
/// (each would be compiled twice).
fn feature_differences(
    binary: &BTreeMap<String, std::collections::BTreeSet<String>>,
    tests: &BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<String> {
    binary
        .iter()
        .filter_map(|(p, f)| {
            let g = tests.get(p)?;
            (g != f).then(|| format!("{p}: {f:?} for the binary, {g:?} for the tests"))
        })
        .collect()
}

/// `./scripts/demo` (`cargo build -p hakiri`) and `./scripts/test` (`cargo test --workspace`)
/// resolve every shared dependency with the same features, so a fresh machine builds each
/// once (issue 16 item 12; regression: the tests' sqllogictest turned on md-5's and
/// getrandom's `std`, and DataFusion, arrow and object_store were built twice).
#[test]
fn the_binary_and_the_tests_build_each_dependency_once() {
    let one = |p: &str, f: &[&str]| {
        (
            p.to_string(),
            f.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>(),
        )
    };
    // The check sees a difference when there is one.
    let binary = BTreeMap::from([one("md-5 v0.10.6", &[]), one("tokio v1", &["rt"])]);
    let tests = BTreeMap::from([one("md-5 v0.10.6", &["std"]), one("tokio v1", &["rt"])]);
    assert_eq!(feature_differences(&binary, &tests).len(), 1);

    let binary = resolved_features(&["-p", "hakiri", "-e", "normal,build"]);
    let tests = resolved_features(&["--workspace", "-e", "normal,build,dev"]);
    assert!(binary.keys().any(|p| p.starts_with("datafusion v")));
    let differ = feature_differences(&binary, &tests);
    assert!(
        differ.is_empty(),
        "these would be built twice: declare the tests' features in cli/Cargo.toml's feature unification: {differ:#?}"
    );
}
