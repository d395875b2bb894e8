//! `hakiri connector inspect FILE`: what a component is, needs and exports, read without
//! granting it anything.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::grant::Grant;
use crate::limits::Limits;
use crate::runtime::{CallEnv, Runtime};

/// A component's description, as text.
pub async fn inspect(path: &Path) -> Result<String> {
    let runtime = Runtime::new(None)?;
    let loaded = runtime.load(path)?;
    let env = CallEnv {
        source_name: path.display().to_string(),
        connector: String::new(),
        // `spec` needs no capability: nothing is granted.
        grant: Arc::new(Grant::default()),
        limits: Limits::default(),
        http: reqwest::Client::new(),
    };
    let spec = loaded.spec(&env).await?;
    let mut out = String::new();
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let _ = writeln!(
        out,
        "component:  {} ({size} bytes, compiled in {:.0?})",
        path.display(),
        loaded.compile_time
    );
    let _ = writeln!(out, "connector:  {} {}", spec.name, spec.version);
    let _ = writeln!(out, "contract:   hakiri:connector@{}", crate::WIT_VERSION);
    let _ = writeln!(out, "options:");
    if spec.options.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for o in &spec.options {
        let mut flags = Vec::new();
        if o.required {
            flags.push("required");
        }
        if o.secret {
            flags.push("secret");
        }
        let flags = if flags.is_empty() {
            String::new()
        } else {
            format!(" ({})", flags.join(", "))
        };
        let _ = writeln!(out, "  {}{flags}: {}", o.name, o.help);
    }
    let list = |xs: &[String]| {
        if xs.is_empty() {
            "(none)".to_string()
        } else {
            xs.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "capabilities (grant them with the source's allow_hosts and allow_env):"
    );
    let _ = writeln!(out, "  hosts: {}", list(&spec.capabilities.hosts));
    let _ = writeln!(out, "  env:   {}", list(&spec.capabilities.env));
    let _ = writeln!(out, "exports:    {}", list(&loaded.exports));
    let _ = writeln!(out, "imports:    {}", list(&loaded.imports));
    Ok(out)
}
