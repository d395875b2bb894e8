//! `hakiri control ...` (the control plane), `hakiri team ...` (its client) and the node
//! loop of `hakiri serve --control`.
//!
//! Credentials: `HAKIRI_TOKEN`, else the token `team login`/`team init` saved for the
//! control plane's URL in `$HAKIRI_HOME/credentials.json` (default `~/.config/hakiri`).
//! A folder's team project is recorded in `.hakiri/team.json` by `team init`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hakiri_control::client::{Api, NodeConfig, RunOutcome};
use hakiri_control::token::Right;
use serde_json::{Value, json};

use crate::{ControlCommand, Failure, TeamArgs, TeamCommand};

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        broken_pipe: false,
        code,
        message: message.into(),
    }
}

impl From<hakiri_control::Error> for Failure {
    fn from(e: hakiri_control::Error) -> Failure {
        let code = match e {
            hakiri_control::Error::Config(_) | hakiri_control::Error::Invalid(_) => 2,
            _ => 1,
        };
        fail(code, e.to_string())
    }
}

pub async fn control(command: ControlCommand) -> Result<(), Failure> {
    match command {
        ControlCommand::Serve {
            listen,
            data,
            public_url,
            oidc_issuer,
            oidc_client_id,
            oidc_client_secret_env,
            token_ttl,
            node_timeout,
            dispatch_every,
            log_format,
        } => {
            crate::commands::init_logs(Some(log_format));
            let listen: std::net::SocketAddr = listen
                .parse()
                .map_err(|e| fail(2, format!("--listen {listen}: {e} (use HOST:PORT)")))?;
            let config = hakiri_control::Config {
                listen,
                data,
                public_url,
                oidc: oidc_issuer.map(|issuer| hakiri_control::OidcConfig {
                    issuer,
                    client_id: oidc_client_id,
                    client_secret: std::env::var(&oidc_client_secret_env)
                        .ok()
                        .filter(|s| !s.is_empty()),
                }),
                token_ttl: token_ttl.into(),
                node_timeout: node_timeout.into(),
                dispatch_every: dispatch_every.into(),
            };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            Ok(hakiri_control::serve(config, shutdown).await?)
        }
        ControlCommand::Bench {
            url,
            team_project: project,
            editors,
            pipelines,
            transforms,
            duration,
            rate,
        } => {
            let token = std::env::var("HAKIRI_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    fail(
                        2,
                        "put a token in HAKIRI_TOKEN (`hakiri control token --sub NAME`)",
                    )
                })?;
            let report = hakiri_control::bench::run(hakiri_control::bench::BenchOptions {
                url,
                token,
                project,
                editors,
                pipelines,
                transforms,
                duration: duration.into(),
                rate,
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        ControlCommand::Token { data, sub, ttl } => {
            let store = hakiri_control::store::Store::open(&data)?;
            let key =
                store.root_key(|| hakiri_control::token::Keys::generate().to_private_bytes())?;
            let keys = hakiri_control::token::Keys::from_private_bytes(&key)
                .map_err(hakiri_control::Error::from)?;
            let grants: Vec<(String, Vec<Right>)> = store
                .grants_of(&sub)?
                .into_iter()
                .map(|(p, r)| (p, r.split(',').filter_map(Right::parse).collect()))
                .collect();
            println!(
                "{}",
                keys.mint_user(&sub, &grants, ttl.into())
                    .map_err(hakiri_control::Error::from)?
            );
            Ok(())
        }
    }
}

// --- local records

fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("HAKIRI_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hakiri")
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(json!({}))
}

fn write_json(path: &Path, v: &Value) -> Result<(), Failure> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v).unwrap_or_default())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Tokens are credentials.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn save_token(url: &str, token: &str) -> Result<(), Failure> {
    let path = home().join("credentials.json");
    let mut creds = read_json(&path);
    creds[url] = json!(token);
    write_json(&path, &creds)
}

struct Ctx {
    folder: PathBuf,
    url: String,
    project: Option<String>,
    api: Api,
}

fn team_file(folder: &Path) -> PathBuf {
    folder.join(".hakiri").join("team.json")
}

fn context(project_flag: Option<PathBuf>, args: &TeamArgs) -> Result<Ctx, Failure> {
    let cwd = std::env::current_dir()?;
    let folder = match project_flag {
        Some(p) => cwd.join(p),
        None => hakiri_manifests::find_project(&cwd).unwrap_or(cwd),
    };
    let recorded = read_json(&team_file(&folder));
    let url = args
        .control
        .clone()
        .or_else(|| recorded["control"].as_str().map(str::to_string))
        .ok_or_else(|| {
            fail(2, "which control plane? pass --control URL (or set HAKIRI_CONTROL), or run `hakiri team init` here")
        })?;
    let url = url.trim_end_matches('/').to_string();
    let project = args
        .team_project
        .clone()
        .or_else(|| recorded["project"].as_str().map(str::to_string));
    let token = std::env::var("HAKIRI_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            read_json(&home().join("credentials.json"))[&url]
                .as_str()
                .map(str::to_string)
        });
    Ok(Ctx {
        folder,
        api: Api::new(&url, token),
        url,
        project,
    })
}

impl Ctx {
    fn project(&self) -> Result<&str, Failure> {
        self.project.as_deref().ok_or_else(|| {
            fail(2, "which team project? pass --team-project NAME (or set HAKIRI_TEAM_PROJECT), or run `hakiri team init NAME` here")
        })
    }

    fn token(&self) -> Result<&str, Failure> {
        self.api.token.as_deref().ok_or_else(|| {
            fail(
                2,
                format!("not signed in to {}: run `hakiri team login`", self.url),
            )
        })
    }
}

pub async fn team(project_flag: Option<PathBuf>, args: TeamArgs) -> Result<(), Failure> {
    let ctx = context(project_flag, &args)?;
    match args.command {
        TeamCommand::Login { no_browser } => login(&ctx, no_browser).await,
        TeamCommand::Init { name } => {
            ctx.token()?;
            let r = ctx.api.post("/api/projects", json!({ "id": name })).await?;
            // The new token carries the rights on the new project.
            if let Some(t) = r["token"].as_str() {
                save_token(&ctx.url, t)?;
            }
            write_json(
                &team_file(&ctx.folder),
                &json!({ "control": ctx.url, "project": name }),
            )?;
            println!(
                "created team project {name} on {}; recorded in {}",
                ctx.url,
                team_file(&ctx.folder).display()
            );
            Ok(())
        }
        TeamCommand::Push => {
            let project = ctx.project()?;
            let path = hakiri_manifests::manifest_path(&ctx.folder)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(2, format!("cannot read {}: {e}", path.display())))?;
            let manifest = if path.extension().is_some_and(|x| x == "json") {
                hakiri_control::doc::manifest_json_from_json(&text)?
            } else {
                hakiri_control::doc::manifest_json_from_toml(&text)?
            };
            let n = |k: &str| manifest[k].as_object().map_or(0, |o| o.len());
            ctx.api
                .post(
                    &format!("/api/projects/{project}/import"),
                    json!({ "manifest": manifest }),
                )
                .await?;
            println!(
                "pushed {} ({} sources, {} pipelines) into team project {project}; `hakiri team apply` makes it the version nodes run",
                path.display(),
                n("sources"),
                n("pipelines")
            );
            Ok(())
        }
        TeamCommand::Apply { note } => {
            let project = ctx.project()?;
            let r = ctx
                .api
                .post(
                    &format!("/api/projects/{project}/apply"),
                    json!({ "note": note }),
                )
                .await?;
            if r["changed"].as_bool() == Some(false) {
                println!(
                    "nothing to apply: version {} is the document as it is",
                    r["version"]
                );
            } else {
                println!("applied version {} of {project}", r["version"]);
            }
            Ok(())
        }
        TeamCommand::Status => {
            let project = ctx.project()?;
            let s = ctx
                .api
                .get(&format!("/api/projects/{project}/status"))
                .await?;
            println!(
                "team project {project} on {}: applied version {}",
                ctx.url,
                s["applied_version"]
                    .as_i64()
                    .map_or("none".into(), |v| v.to_string())
            );
            println!("nodes:");
            for n in s["nodes"].as_array().into_iter().flatten() {
                println!(
                    "  {}\t{}\tlast seen {}\t{} runs, {} failed, running: {}",
                    n["id"].as_str().unwrap_or_default(),
                    if n["alive"].as_bool() == Some(true) {
                        "alive"
                    } else {
                        "gone"
                    },
                    n["last_seen"].as_str().unwrap_or_default(),
                    n["runs"],
                    n["failed"],
                    n["running"].as_array().map_or(0, |a| a.len())
                );
            }
            println!("pipelines:");
            for p in s["pipelines"].as_array().into_iter().flatten() {
                let last = &p["last_run"];
                let last = if last.is_null() {
                    "never run".to_string()
                } else {
                    format!(
                        "last run {} on {} ({}{})",
                        last["slot"].as_str().unwrap_or_default(),
                        last["node"].as_str().unwrap_or_default(),
                        last["state"].as_str().unwrap_or_default(),
                        last["rows"]
                            .as_i64()
                            .map_or(String::new(), |r| format!(", {r} rows"))
                    )
                };
                let note = p["note"]
                    .as_str()
                    .map_or(String::new(), |n| format!(" [{n}]"));
                println!(
                    "  {}\t{}\t{last}{note}",
                    p["name"].as_str().unwrap_or_default(),
                    p["placement"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        TeamCommand::Versions { diff, to, rollback } => {
            let project = ctx.project()?;
            if let Some(v) = rollback {
                let r = ctx
                    .api
                    .post(
                        &format!("/api/projects/{project}/rollback"),
                        json!({ "version": v }),
                    )
                    .await?;
                println!(
                    "rolled back: version {} (a copy of version {v}) is applied",
                    r["version"]
                );
                return Ok(());
            }
            if let Some(from) = diff {
                let q = to.map_or(String::new(), |t| format!("&to={t}"));
                print!(
                    "{}",
                    ctx.api
                        .text(&format!("/api/projects/{project}/diff?from={from}{q}"))
                        .await?
                );
                return Ok(());
            }
            let versions = ctx
                .api
                .get(&format!("/api/projects/{project}/versions"))
                .await?;
            for v in versions.as_array().into_iter().flatten() {
                println!(
                    "{}{}\t{}\t{}\t{}",
                    v["version"],
                    if v["current"].as_bool() == Some(true) {
                        " (applied)"
                    } else {
                        ""
                    },
                    v["applied_at"].as_str().unwrap_or_default(),
                    v["applied_by"].as_str().unwrap_or_default(),
                    v["note"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        TeamCommand::Token {
            keep,
            only_project,
            ttl,
        } => {
            let keep: Vec<Right> = keep
                .iter()
                .map(|k| {
                    Right::parse(k).ok_or_else(|| {
                        fail(
                            2,
                            format!("--keep {k}: rights are read, edit, apply and run"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            let project = if only_project {
                Some(ctx.project()?)
            } else {
                None
            };
            let t =
                hakiri_control::token::attenuate(ctx.token()?, &keep, project, ttl.map(Into::into))
                    .map_err(|e| fail(2, e.to_string()))?;
            println!("{t}");
            Ok(())
        }
        TeamCommand::NodeToken { id } => {
            let project = ctx.project()?;
            let r = ctx
                .api
                .post(
                    &format!("/api/projects/{project}/nodes/{id}/token"),
                    json!({}),
                )
                .await?;
            println!("{}", r["token"].as_str().unwrap_or_default());
            Ok(())
        }
    }
}

/// Opens the control plane's sign-in with a loopback return address, and waits for the
/// token to come back to it.
async fn login(ctx: &Ctx, no_browser: bool) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let return_to = format!("http://127.0.0.1:{port}/callback");
    let mut url = url::Url::parse(&format!("{}/auth/login", ctx.url))
        .map_err(|e| fail(2, format!("--control {}: {e}", ctx.url)))?;
    url.query_pairs_mut().append_pair("return_to", &return_to);
    let opened = !no_browser && open_browser(url.as_str());
    if !opened {
        println!("open this URL to sign in:\n{url}");
    } else {
        println!("signing in through your browser; if it did not open, visit:\n{url}");
    }
    let token = tokio::time::timeout(Duration::from_secs(600), wait_for_token(listener))
        .await
        .map_err(|_| {
            fail(
                1,
                "no sign-in within 10 minutes: run `hakiri team login` again",
            )
        })??;
    save_token(&ctx.url, &token)?;
    println!(
        "signed in to {}; the token is saved in {}",
        ctx.url,
        home().join("credentials.json").display()
    );
    Ok(())
}

fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Serves one request on the loopback listener: `GET /callback?token=...`.
async fn wait_for_token(listener: tokio::net::TcpListener) -> Result<String, Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let n = sock.read(&mut buf).await?;
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head.split_whitespace().nth(1).unwrap_or("/");
        let token = url::Url::parse(&format!("http://127.0.0.1{target}"))
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            });
        let body = if token.is_some() {
            "Signed in to Hakiri. You can close this tab."
        } else {
            "Waiting for the sign-in to finish."
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        if let Some(t) = token {
            return Ok(t);
        }
    }
}

// --- the node

pub async fn node(
    root: PathBuf,
    url: String,
    node_id: String,
    team_project: Option<String>,
    heartbeat: f64,
) -> Result<(), Failure> {
    let project = team_project.ok_or_else(|| {
        fail(2, "which team project does this node serve? pass --team-project NAME (or set HAKIRI_TEAM_PROJECT)")
    })?;
    let token = std::env::var("HAKIRI_NODE_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
        fail(2, format!("no node token: put the output of `hakiri team node-token {node_id}` in HAKIRI_NODE_TOKEN"))
    })?;
    if root.join(hakiri_manifests::MANIFEST_FILE).exists() {
        return Err(fail(
            2,
            format!(
                "{} holds a hakiri.toml: a node's folder is managed by the control plane (it writes the applied manifest as hakiri.json); use an empty folder",
                root.display()
            ),
        ));
    }
    std::fs::create_dir_all(&root)?;
    eprintln!(
        "node {node_id} of team project {project} at {url}, folder {}",
        root.display()
    );
    let install_root = root.clone();
    let install: hakiri_control::client::InstallFn = Arc::new(move |version, manifest| {
        let path = install_root.join(hakiri_manifests::JSON_MANIFEST_FILE);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
        // Checked before it replaces the running manifest.
        hakiri_manifests::parse_json(&text)
            .map_err(|e| format!("applied version {version} does not load here: {e}"))?;
        std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
    });
    // Runs and console queries are serialised on this node: one engine at a time over the
    // folder's catalog (opening one recovers runs it finds unfinished).
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let (query_root, query_lock) = (root.clone(), lock.clone());
    let query: hakiri_control::client::QueryFn = Arc::new(move |sql| {
        let (root, lock) = (query_root.clone(), query_lock.clone());
        Box::pin(async move {
            let _g = lock.lock().await;
            if !hakiri_manifests::is_project(&root) {
                return Err(
                    "this node has no applied manifest yet: `hakiri team apply`".to_string()
                );
            }
            let (engine, _) = crate::commands::open(&root, false).map_err(|f| f.message)?;
            hakiri_mcp::read_only_query(&engine, &sql, 10_000, Duration::from_secs(60)).await
        })
    });
    let run_root = root.clone();
    let run: hakiri_control::client::RunFn = Arc::new(move |pipeline| {
        let (root, lock) = (run_root.clone(), lock.clone());
        Box::pin(async move {
            let _g = lock.lock().await;
            let engine = match crate::commands::open(&root, true) {
                Ok((engine, _)) => engine,
                Err(f) => {
                    return RunOutcome {
                        result: Err(f.message),
                        run_id: None,
                    };
                }
            };
            // The run's id is known before it starts, so a failed run's events can be found.
            let run_id = engine.new_run_id(&pipeline);
            let result = engine
                .run_pipeline_as(&pipeline, run_id.clone(), &|_| {})
                .await
                .map(|s| {
                    eprintln!("{pipeline}: {} rows written", s.counters.rows_written);
                    s.counters.rows_written as i64
                })
                .map_err(|e| e.to_string());
            RunOutcome {
                result,
                run_id: Some(run_id),
            }
        })
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    let cfg = NodeConfig {
        api: Api::new(&url, Some(token)),
        project,
        node_id,
        heartbeat: Duration::from_secs_f64(heartbeat.max(0.05)),
    };
    Ok(hakiri_control::client::run_node(cfg, install, (run, query), stop_rx).await?)
}
