//! Sandboxed connectors: a component of world `hakiri:connector/connector` (`wit/`) runs in
//! wasmtime with only what its source grants (hosts, environment variables) and under
//! per-call limits (fuel, a deadline, a memory cap, a log rate). A source of `TYPE wasm` is
//! a [`hakiri_core::ports::Source`] like the built-in ones.
//!
//! Its own crate: wasmtime and Cranelift are by far the largest dependency tree of the
//! build, and here they stay out of the connectors' and the engine's rebuilds.

pub mod error;
pub mod grant;
mod host;
pub mod inspect;
pub mod limits;
pub mod runtime;

/// The version of the contract this host speaks (`package hakiri:connector@...`).
pub const WIT_VERSION: &str = "0.1.0";

/// The generated bindings of `wit/connector.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "connector",
        imports: {
            "hakiri:connector/host.http-request": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub use error::WasmError;
pub use runtime::{CallEnv, Loaded, Runtime};
pub mod source;
pub mod table;
#[cfg(feature = "testing")]
pub mod testing;

pub use source::WasmSource;
#[cfg(test)]
mod tests;
