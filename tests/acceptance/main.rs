//! End-to-end tests with real servers and the real `hakiri` binary. One test binary with
//! modules keeps link time down.

#[allow(dead_code)]
mod support;

mod abuse;
mod access;
mod alerts;
mod catalog;
mod conformance;
mod control;
mod crash;
mod demo;
mod depcheck;
mod encryption;
mod errors;
mod exactly_once;
mod examples;
mod faults;
mod files;
mod github;
mod incremental;
mod introspection;
mod lineage;
mod maintain;
mod mcp;
mod migrations;
mod pagination;
mod pgwire;
mod postgres;
mod readme;
mod s3;
mod schedule;
mod schema;
mod slt;
mod sql_shell;
mod sync;
mod telemetry;
mod wasm;
