//! Sandboxed connectors through the binary: `hakiri connector inspect`, a source of
//! `type = "wasm"` listed and queried live, and a component asking for more than it is
//! granted refused with the option that would grant it.

use crate::support::{Project, Server};
use hakiri_wasm::testing::{Behaviour, Guest, build};

fn project(server: &Server, hosts: &[&str], allow: &str) -> Project {
    let p = Project::new(&format!(
        r#"
[sources.x]
type = "wasm"
component = "connectors/c.wasm"
allow_hosts = "{allow}"
url = "{}/ndjson_grow?size=10"
"#,
        server.url()
    ));
    std::fs::create_dir_all(p.path().join("connectors")).unwrap();
    std::fs::write(
        p.path().join("connectors/c.wasm"),
        build(&Guest::new("pass", hosts, Behaviour::PassThrough)),
    )
    .unwrap();
    p
}

#[test]
fn a_wasm_source_is_inspected_listed_and_queried_live() {
    let server = Server::paged();
    server.get("/admin/grow?n=25");
    let p = project(&server, &["127.0.0.1"], "127.0.0.1");
    let inspect = p
        .hakiri(&["connector", "inspect", "connectors/c.wasm"])
        .ok();
    for line in [
        "connector:  pass 0.1.0",
        "  url (required): the page URL",
        "  hosts: 127.0.0.1",
        "exports:    hakiri:connector/source@0.1.0",
        "imports:    hakiri:connector/types@0.1.0, hakiri:connector/host@0.1.0",
    ] {
        assert!(inspect.stdout.contains(line), "{line}:\n{}", inspect.stdout);
    }
    let tables = p.hakiri(&["source", "tables", "x"]).ok();
    assert!(tables.stdout.contains("items"), "{}", tables.stdout);
    assert_eq!(
        p.query_csv("select id from x.items where id > 5 limit 3"),
        vec!["6", "7", "8"]
    );
    let bad = p.hakiri(&["connector", "inspect", "hakiri.toml"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains(
            "is not a WebAssembly component: it does not start with the WebAssembly magic bytes"
        ),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_component_needing_more_than_granted_is_refused_with_the_grant_to_add() {
    let server = Server::paged();
    let p = project(&server, &["api.example.com"], "127.0.0.1");
    let r = p.hakiri(&["query", "select * from x.items"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("capability denied: source 'x' (connector 'pass') needs host 'api.example.com', which is not granted: add it to the source's option 'allow_hosts'"),
        "{}",
        r.stderr
    );
}
