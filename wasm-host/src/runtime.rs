//! The wasmtime side: one engine per project (fuel, epoch interruption, the on-disk compile
//! cache), loading and checking components, and calls that each run in a fresh instance
//! under the source's limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store, Trap};

use crate::bindings::exports::hakiri::connector::source::{ReadRequest, ReadResponse};
use crate::bindings::hakiri::connector::types::{Config as GuestConfig, ConnectorSpec, TableInfo};
use crate::bindings::{Connector, ConnectorPre};
use crate::error::{GuestKind, Limit, Result, WasmError};
use crate::grant::Grant;
use crate::host::{LogBudget, MemoryCap, State};
use crate::limits::Limits;

/// How often the epoch ticks: the deadline's resolution.
const TICK: Duration = Duration::from_millis(10);

/// The engine and linker every component of a project is loaded with.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    cache: Option<Cache>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache.as_ref().map(|c| c.directory()))
            .finish()
    }
}

impl Runtime {
    /// An engine whose compiled components are cached in `cache_dir` (keyed by a hash of the
    /// component and the engine's settings), and a thread ticking its epoch.
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true).epoch_interruption(true);
        let cache = match cache_dir {
            Some(dir) => {
                let mut cc = CacheConfig::new();
                cc.with_directory(dir);
                let cache = Cache::new(cc).map_err(|e| {
                    WasmError::Internal(format!(
                        "cannot use {} as the compile cache: {e:#}",
                        dir.display()
                    ))
                })?;
                cfg.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine = Engine::new(&cfg)
            .map_err(|e| WasmError::Internal(format!("the wasmtime engine: {e:#}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("hakiri-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| WasmError::Internal(format!("the epoch thread: {e}")))?;
        let mut linker = Linker::new(&engine);
        Connector::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| WasmError::Internal(format!("linking the host: {e:#}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache,
        })
    }

    /// Components compiled and found in the cache so far.
    pub fn cache_counts(&self) -> (usize, usize) {
        self.cache
            .as_ref()
            .map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }

    /// Reads, checks and compiles the component at `path` (from the cache when it was
    /// compiled before).
    pub fn load(&self, path: &Path) -> Result<Loaded> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: shown.clone(),
            source,
        })?;
        self.load_bytes(&shown, &bytes)
    }

    /// [`Runtime::load`] of bytes; `shown` names them in errors.
    pub fn load_bytes(&self, shown: &str, bytes: &[u8]) -> Result<Loaded> {
        check_header(shown, bytes)?;
        let t0 = Instant::now();
        let component =
            Component::from_binary(&self.engine, bytes).map_err(|e| WasmError::Compile {
                path: shown.to_string(),
                message: format!("{e:#}"),
            })?;
        let compile_time = t0.elapsed();
        let exports = self.exports(&component);
        let ours = exports
            .iter()
            .find_map(|e| e.strip_prefix("hakiri:connector/source@"));
        match ours {
            Some(v) if v == crate::WIT_VERSION => {}
            Some(v) => {
                return Err(WasmError::WrongVersion {
                    path: shown.to_string(),
                    found: v.to_string(),
                });
            }
            None => {
                return Err(WasmError::WrongWorld {
                    path: shown.to_string(),
                    exports: if exports.is_empty() {
                        "nothing".to_string()
                    } else {
                        exports.join(", ")
                    },
                });
            }
        }
        // WASI or other imports link, but trap when called: a connector gets no sockets,
        // no files and no clocks but the host's.
        let mut linker = self.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .and_then(|()| linker.instantiate_pre(&component))
            .and_then(ConnectorPre::new)
            .map(|pre| Loaded {
                path: PathBuf::from(shown),
                pre,
                imports: self.imports(&component),
                exports,
                compile_time,
            })
            .map_err(|e| WasmError::Compile {
                path: shown.to_string(),
                message: format!("its imports do not match the host's: {e:#}"),
            })
    }

    fn exports(&self, c: &Component) -> Vec<String> {
        c.component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    fn imports(&self, c: &Component) -> Vec<String> {
        c.component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

/// Says what a file is when it is not a component.
fn check_header(shown: &str, bytes: &[u8]) -> Result<()> {
    let what = match bytes {
        [0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00, ..] => return Ok(()),
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => {
            "it is a core WebAssembly module; make it a component (wasm-tools component new, or a toolchain that targets wasm32-wasip2)".to_string()
        }
        [0, b'a', b's', b'm', ..] => "it has an unknown WebAssembly version".to_string(),
        _ if bytes.is_empty() => "it is empty".to_string(),
        _ => "it does not start with the WebAssembly magic bytes".to_string(),
    };
    Err(WasmError::NotAComponent {
        path: shown.to_string(),
        what,
    })
}

/// A compiled component, ready to instantiate.
pub struct Loaded {
    pub path: PathBuf,
    pre: ConnectorPre<State>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Compiling (or reading from the cache) took this long.
    pub compile_time: Duration,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("path", &self.path)
            .field("exports", &self.exports)
            .finish()
    }
}

/// Who calls, with what grant and limits.
#[derive(Debug, Clone)]
pub struct CallEnv {
    pub source_name: String,
    pub connector: String,
    pub grant: Arc<Grant>,
    pub limits: Limits,
    pub http: reqwest::Client,
}

/// What a call's instance left behind: log lines dropped over the rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub log_lines_dropped: u64,
}

impl Loaded {
    fn store(&self, env: &CallEnv) -> Result<Store<State>> {
        let mut store = Store::new(
            self.pre.engine(),
            State {
                source_name: env.source_name.clone(),
                connector: env.connector.clone(),
                grant: env.grant.clone(),
                http: env.http.clone(),
                limits: env.limits.clone(),
                memory: MemoryCap {
                    max: env.limits.memory,
                    hit: false,
                },
                log: LogBudget::new(),
                denied: None,
            },
        );
        store.limiter(|s| &mut s.memory);
        store
            .set_fuel(env.limits.fuel)
            .map_err(|e| WasmError::Internal(format!("setting fuel: {e:#}")))?;
        let ticks = (env.limits.deadline.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        Ok(store)
    }

    /// The connector's spec.
    pub async fn spec(&self, env: &CallEnv) -> Result<ConnectorSpec> {
        let mut store = self.store(env)?;
        let r = tokio::time::timeout(env.limits.deadline, async {
            let c = self.pre.instantiate_async(&mut store).await?;
            c.hakiri_connector_source().call_spec(&mut store).await
        })
        .await;
        finish(env, "spec", &mut store, r.map(|r| r.map(Ok)))
    }

    /// The tables of a source with `config`.
    pub async fn discover(&self, env: &CallEnv, config: &GuestConfig) -> Result<Vec<TableInfo>> {
        let mut store = self.store(env)?;
        let r = tokio::time::timeout(env.limits.deadline, async {
            let c = self.pre.instantiate_async(&mut store).await?;
            c.hakiri_connector_source()
                .call_discover(&mut store, config)
                .await
        })
        .await;
        finish(env, "discover", &mut store, r)
    }

    /// One page of `table`.
    pub async fn read(
        &self,
        env: &CallEnv,
        config: &GuestConfig,
        table: &str,
        request: &ReadRequest,
    ) -> Result<(ReadResponse, CallStats)> {
        let mut store = self.store(env)?;
        let r = tokio::time::timeout(env.limits.deadline, async {
            let c = self.pre.instantiate_async(&mut store).await?;
            c.hakiri_connector_source()
                .call_read(&mut store, config, table, request)
                .await
        })
        .await;
        let stats = CallStats {
            log_lines_dropped: store.data().log.dropped_lines,
        };
        finish(env, "read", &mut store, r).map(|r| (r, stats))
    }
}

type Outcome<T> = std::result::Result<
    wasmtime::Result<std::result::Result<T, crate::bindings::hakiri::connector::types::Error>>,
    tokio::time::error::Elapsed,
>;

/// Turns a call's outcome into its value or the error naming what stopped it: a limit, a
/// refused capability (even when the guest carried on after the refusal), a trap, or the
/// guest's own error.
fn finish<T>(
    env: &CallEnv,
    call: &'static str,
    store: &mut Store<State>,
    r: Outcome<T>,
) -> Result<T> {
    use crate::bindings::hakiri::connector::types::Error as G;
    let limit = |limit: Limit| WasmError::Limit {
        source_name: env.source_name.clone(),
        call,
        limit,
        value: match limit {
            Limit::Fuel => format!("{} units", env.limits.fuel),
            Limit::Deadline => format!("{:?}", env.limits.deadline),
            Limit::Memory => format!("{} bytes", env.limits.memory),
        },
    };
    let r = match r {
        Err(_elapsed) => return Err(limit(Limit::Deadline)),
        Ok(r) => r,
    };
    if let Some(denied) = store.data_mut().denied.take() {
        return Err(denied);
    }
    let answer = match r {
        Ok(answer) => answer,
        Err(e) => {
            if store.data().memory.hit {
                return Err(limit(Limit::Memory));
            }
            return Err(match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => limit(Limit::Fuel),
                Some(Trap::Interrupt) => limit(Limit::Deadline),
                _ => WasmError::Trap {
                    source_name: env.source_name.clone(),
                    call,
                    message: format!("{e:#}"),
                },
            });
        }
    };
    answer.map_err(|g| {
        let (kind, message, retry_after_ms) = match g {
            G::InvalidConfig(m) => (GuestKind::InvalidConfig, m, None),
            G::Auth(m) => (GuestKind::Auth, m, None),
            G::RateLimited(r) => (GuestKind::RateLimited, r.message, Some(r.retry_after_ms)),
            G::Transient(m) => (GuestKind::Transient, m, None),
            G::Fatal(m) => (GuestKind::Fatal, m, None),
            G::CapabilityDenied(m) => (GuestKind::CapabilityDenied, m, None),
        };
        WasmError::Guest {
            source_name: env.source_name.clone(),
            call,
            kind,
            message,
            retry_after_ms,
        }
    })
}
