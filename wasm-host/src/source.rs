//! `TYPE wasm`: a source whose connector is a component. Loading checks what the component
//! needs against what the source grants; its tables are [`crate::table::WasmTable`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use hakiri_core::error::{Error, Result};
use hakiri_core::ports::{OptionSpec, Source, validate_options};
use hakiri_core::sources::resolve_value;
use hakiri_core::types::SourceSpec;

use crate::bindings::hakiri::connector::types::{ConnectorSpec, TableInfo};
use crate::error::WasmError;
use crate::grant::Grant;
use crate::limits::Limits;
use crate::runtime::{CallEnv, Loaded, Runtime};
use crate::table::WasmTable;

/// The options the host reads; every other option goes to the connector, checked against
/// the options its spec declares.
pub const HOST_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "component",
        required: true,
        secret: false,
        help: "the connector's .wasm component, relative to the project folder",
    },
    OptionSpec {
        name: "allow_hosts",
        required: false,
        secret: false,
        help: "hosts (or host:port) the connector may send requests to, comma-separated",
    },
    OptionSpec {
        name: "allow_env",
        required: false,
        secret: false,
        help: "environment variables the connector may read, comma-separated",
    },
    OptionSpec {
        name: "fuel",
        required: false,
        secret: false,
        help: "the operation budget of one call, in fuel units (about one per instruction; default 20000000000)",
    },
    OptionSpec {
        name: "timeout",
        required: false,
        secret: false,
        help: "the wall-clock deadline of one call, host requests included (default '60 seconds')",
    },
    OptionSpec {
        name: "memory",
        required: false,
        secret: false,
        help: "the memory cap of one call's instance, like '512 MiB' (the default)",
    },
    OptionSpec {
        name: "log_rate",
        required: false,
        secret: false,
        help: "log bytes per second a call may write, like '64 KiB' (the default); the rest is dropped and counted",
    },
    OptionSpec {
        name: "max_retries",
        required: false,
        secret: false,
        help: "retries of a read the connector failed as rate-limited or transient (default 5)",
    },
    OptionSpec {
        name: "retry_backoff_ms",
        required: false,
        secret: false,
        help: "first wait before retrying a transient failure, doubled each retry (default 250); a rate-limited read waits the connector's retry-after",
    },
];

fn is_host_option(key: &str) -> bool {
    HOST_OPTIONS.iter().any(|o| o.matches(key))
}

/// A loaded component and its spec, kept while the file is unchanged.
struct Cached {
    stamp: (SystemTime, u64),
    loaded: Arc<Loaded>,
    spec: Arc<ConnectorSpec>,
}

/// The `wasm` connector type.
pub struct WasmSource {
    root: PathBuf,
    cache_dir: Option<PathBuf>,
    runtime: OnceLock<std::result::Result<Arc<Runtime>, String>>,
    loaded: Mutex<HashMap<PathBuf, Cached>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for WasmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSource")
            .field("root", &self.root)
            .finish()
    }
}

/// A source's connector, loaded and checked against its grant.
pub struct Bound {
    pub loaded: Arc<Loaded>,
    pub spec: Arc<ConnectorSpec>,
    pub env: CallEnv,
    /// The connector's options, resolved, in name order.
    pub config: Vec<(String, String)>,
}

impl WasmSource {
    /// Components are read relative to `root`; compiled ones are cached in
    /// `<root>/.hakiri/wasm-cache`, or in `$HAKIRI_WASM_CACHE` when set (a folder several
    /// projects share, so a large component compiles once per machine).
    pub fn new(root: &Path) -> Self {
        let cache = match std::env::var_os("HAKIRI_WASM_CACHE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => root.join(".hakiri").join("wasm-cache"),
        };
        Self::with_cache(root, Some(cache))
    }

    pub fn with_cache(root: &Path, cache_dir: Option<PathBuf>) -> Self {
        WasmSource {
            root: root.to_path_buf(),
            cache_dir,
            runtime: OnceLock::new(),
            loaded: Mutex::new(HashMap::new()),
            // Redirects are not followed: one could leave the granted hosts.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The engine, made on first use (it starts the epoch thread).
    pub fn runtime(&self) -> Result<Arc<Runtime>> {
        self.runtime
            .get_or_init(|| {
                Runtime::new(self.cache_dir.as_deref())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|m| Error::from(WasmError::Internal(m)))
    }

    fn component_path(&self, spec: &SourceSpec) -> Result<PathBuf> {
        let rel = spec.options.get("component").ok_or_else(|| {
            option_error(
                spec,
                "needs option 'component': the connector's .wasm file".into(),
            )
        })?;
        let p = Path::new(rel);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        })
    }

    /// Loads `spec`'s component (once per file version), checks its needs against the
    /// grant and the connector's options against its spec.
    pub async fn bind(&self, spec: &SourceSpec) -> Result<Bound> {
        let path = self.component_path(spec)?;
        let get = |k: &str| spec.options.get(k).map(|v| v.as_str());
        let limits = Limits::from_options(get).map_err(|m| option_error(spec, m))?;
        let grant = Arc::new(Grant::new(get("allow_hosts"), get("allow_env")));
        let mut env = CallEnv {
            source_name: spec.name.clone(),
            connector: String::new(),
            grant,
            limits,
            http: self.http.clone(),
        };
        let (loaded, cspec) = self.load(&path, &env).await?;
        env.connector = cspec.name.clone();
        check_grant(spec, &cspec, &env.grant)?;
        let mut config = Vec::new();
        for (k, v) in spec.options.iter().filter(|(k, _)| !is_host_option(k)) {
            config.push((k.clone(), resolve_value(k, v)?));
        }
        check_options(spec, &cspec)?;
        Ok(Bound {
            loaded,
            spec: cspec,
            env,
            config,
        })
    }

    async fn load(&self, path: &Path, env: &CallEnv) -> Result<(Arc<Loaded>, Arc<ConnectorSpec>)> {
        let meta = std::fs::metadata(path).map_err(|source| WasmError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if let Some(c) = self.cached(path, stamp) {
            return Ok(c);
        }
        let runtime = self.runtime()?;
        let p = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&p))
            .await
            .map_err(|e| WasmError::Internal(format!("compiling a component: {e}")))??;
        let loaded = Arc::new(loaded);
        let spec = Arc::new(loaded.spec(env).await?);
        let mut cache = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(
            path.to_path_buf(),
            Cached {
                stamp,
                loaded: loaded.clone(),
                spec: spec.clone(),
            },
        );
        Ok((loaded, spec))
    }

    fn cached(
        &self,
        path: &Path,
        stamp: (SystemTime, u64),
    ) -> Option<(Arc<Loaded>, Arc<ConnectorSpec>)> {
        let cache = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(path)
            .filter(|c| c.stamp == stamp)
            .map(|c| (c.loaded.clone(), c.spec.clone()))
    }

    /// The tables the connector reports for `spec`.
    pub async fn tables(&self, spec: &SourceSpec) -> Result<(Bound, Vec<TableInfo>)> {
        let bound = self.bind(spec).await?;
        let tables = bound.loaded.discover(&bound.env, &bound.config).await?;
        Ok((bound, tables))
    }
}

fn option_error(spec: &SourceSpec, message: String) -> Error {
    WasmError::Option {
        source_name: spec.name.clone(),
        message,
    }
    .into()
}

/// A component fails to load when its declared needs exceed the source's grant.
fn check_grant(spec: &SourceSpec, cspec: &ConnectorSpec, grant: &Grant) -> Result<()> {
    let denied = |what, name: &str, option| WasmError::CapabilityDenied {
        source_name: spec.name.clone(),
        connector: cspec.name.clone(),
        asked: "needs",
        what,
        name: name.to_string(),
        option,
    };
    if let Some(h) = cspec
        .capabilities
        .hosts
        .iter()
        .find(|h| !grant.covers_host(h))
    {
        return Err(denied("host", h, "allow_hosts").into());
    }
    if let Some(v) = cspec
        .capabilities
        .env
        .iter()
        .find(|v| !grant.env.contains_key(*v))
    {
        return Err(denied("environment variable", v, "allow_env").into());
    }
    Ok(())
}

/// The connector's options (those that are not the host's) against its spec.
fn check_options(spec: &SourceSpec, cspec: &ConnectorSpec) -> Result<()> {
    // validate_options wants static names; the connector's come from its spec.
    let names: Vec<String> = cspec.options.iter().map(|o| o.name.clone()).collect();
    let guest: Vec<&String> = spec.options.keys().filter(|k| !is_host_option(k)).collect();
    for key in &guest {
        if !names.iter().any(|n| n == *key) {
            let mut valid: Vec<&str> = HOST_OPTIONS.iter().map(|o| o.name).collect();
            valid.extend(names.iter().map(|s| s.as_str()));
            return Err(Error::InvalidInput(format!(
                "unknown option '{key}' for source '{}' (type wasm, connector '{}'): valid options are {}",
                spec.name,
                cspec.name,
                valid.join(", ")
            )));
        }
    }
    if let Some(o) = cspec
        .options
        .iter()
        .find(|o| o.required && !spec.options.contains_key(&o.name))
    {
        return Err(Error::InvalidInput(format!(
            "source '{}' (type wasm, connector '{}') needs option '{}': {}",
            spec.name, cspec.name, o.name, o.help
        )));
    }
    Ok(())
}

#[async_trait]
impl Source for WasmSource {
    fn connector(&self) -> &'static str {
        "wasm"
    }

    fn options(&self) -> &'static [OptionSpec] {
        HOST_OPTIONS
    }

    /// The host's options are checked here, without I/O; the connector's own options when
    /// the component loads (its spec declares them).
    fn validate(&self, spec: &SourceSpec) -> Result<()> {
        let host: Vec<&String> = spec.options.keys().filter(|k| is_host_option(k)).collect();
        validate_options(
            &format!("source '{}' (type wasm)", spec.name),
            HOST_OPTIONS,
            host,
        )?;
        let get = |k: &str| spec.options.get(k).map(|v| v.as_str());
        Limits::from_options(get).map_err(|m| option_error(spec, m))?;
        Ok(())
    }

    fn table_names(&self, _spec: &SourceSpec) -> Vec<String> {
        Vec::new()
    }

    async fn discover(&self, spec: &SourceSpec) -> Result<Vec<String>> {
        let (_, tables) = self.tables(spec).await?;
        Ok(tables.into_iter().map(|t| t.name).collect())
    }

    async fn table(
        &self,
        spec: &SourceSpec,
        table: &str,
        _hint: Option<SchemaRef>,
    ) -> Result<Arc<dyn TableProvider>> {
        let (bound, tables) = self.tables(spec).await?;
        let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
        let Some(info) = tables.into_iter().find(|t| t.name == table) else {
            return Err(Error::SourceTableNotFound {
                name: spec.name.clone(),
                table: table.to_string(),
                message: format!(
                    "source '{}' (connector '{}') has no table '{table}': its tables are {}",
                    spec.name,
                    bound.spec.name,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        };
        Ok(Arc::new(WasmTable::try_new(Arc::new(bound), info)?))
    }
}
