//! Writes the pass-through test guest (a WAT component that hands each page body to the
//! host as NDJSON, following the `x-next-token` header) with the given columns, for
//! bench/run's WASM workload:
//!
//!     cargo build --workspace --examples && target/debug/examples/pass_through_guest \
//!         OUT.wasm HOST 'id:int64, kind:utf8, tags:json, ...'
use hakiri_wasm::testing::{Behaviour, Guest, build};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, host, columns] = &args[..] else {
        eprintln!("usage: pass_through_guest OUT.wasm HOST 'name:type, ...'");
        std::process::exit(2);
    };
    let types = [
        "boolean",
        "int64",
        "float64",
        "utf8",
        "timestamp_us",
        "json",
    ];
    let mut guest = Guest::new("pass-through", &[host.as_str()], Behaviour::PassThrough);
    guest.fields = columns
        .split(',')
        .map(|c| {
            let (name, ty) = c.trim().split_once(':').unwrap_or_else(|| {
                eprintln!("column '{c}' is not name:type");
                std::process::exit(2)
            });
            let t = types
                .iter()
                .position(|t| *t == ty.trim())
                .unwrap_or_else(|| {
                    eprintln!("column '{c}': the type is one of {}", types.join(", "));
                    std::process::exit(2)
                });
            (name.trim().to_string(), t as u32, name.trim() != "id")
        })
        .collect();
    std::fs::write(out, build(&guest)).unwrap_or_else(|e| {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1)
    });
}
