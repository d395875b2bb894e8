//! Helpers for the acceptance tests: the `hakiri` binary, throwaway projects, and real
//! servers (httpbin, the paginated fixture server) on 127.0.0.1, stopped on drop.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `hakiri` binary, built once per test run: `cargo test` builds a binary only for its
/// own package's integration tests, so this makes sure the tests never run a stale one.
pub fn hakiri_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target folder");
        let target_dir = profile_dir.parent().expect("target root");
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "hakiri", "--target-dir"])
            .arg(target_dir)
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p hakiri");
        assert!(status.success(), "cargo build -p hakiri failed");
        let bin = profile_dir.join("hakiri");
        assert!(
            bin.exists(),
            "{} is missing after cargo build",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A command's outcome, with stdout and stderr as text.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `hakiri` in `dir` with extra environment variables.
pub fn hakiri(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(hakiri_bin());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("HAKIRI_PROJECT")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run hakiri"))
}

/// A project in a temporary folder with the given manifest.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("hakiri.toml"), manifest).expect("write manifest");
        Project { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn hakiri(&self, args: &[&str]) -> Run {
        hakiri(self.path(), args, &[])
    }
    /// `hakiri query --format csv` without the header line.
    pub fn query_csv(&self, sql: &str) -> Vec<String> {
        let r = self.hakiri(&["query", "--format", "csv", sql]).ok();
        r.stdout.lines().skip(1).map(str::to_string).collect()
    }
}

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The paginated fixture server (tests/fixtures/paged_server.py).
    pub fn paged() -> Self {
        Self::fixture("paged_server.py")
    }

    /// The stand-in for GitHub's REST API (tests/fixtures/github_server.py).
    pub fn github() -> Self {
        Self::fixture("github_server.py")
    }

    /// A fixture server script under tests/fixtures that prints its port first.
    fn fixture(name: &str) -> Self {
        let script = repo_root().join("tests/fixtures").join(name);
        let mut child = Command::new(python())
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} printed '{line}'"));
        Server { child, port }
    }

    /// Debian's httpbin (package python3-httpbin) on a free port.
    pub fn httpbin() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "httpbin.core",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start httpbin: install the Debian package python3-httpbin");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "httpbin did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Server {
    /// GETs `path` from the server (HTTP/1.0, no keep-alive) and returns the body.
    pub fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(head.contains(" 200 "), "GET {path}: {head}");
        body.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter for fixture scripts (standard library only).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A throwaway PostgreSQL cluster (the machine's initdb/pg_ctl) on 127.0.0.1 and a free
/// port, with user `hakiri` and password [`PgCluster::PASSWORD`]; stopped and deleted on
/// drop. As root, the server runs as the `postgres` user (PostgreSQL refuses root).
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    pub const PASSWORD: &'static str = "hakiri-secret";

    fn bin(name: &str) -> PathBuf {
        let in_path = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        in_path
            .or_else(|| {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin").join(name))
                    .filter(|p| p.exists())
                    .collect();
                dirs.sort();
                dirs.pop()
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name} not found: install the PostgreSQL server (Debian package postgresql)"
                )
            })
    }

    fn run_as_server_user(dir: &Path, bin: &Path, args: &[&str]) -> Output {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(args)
            .current_dir(dir)
            .output()
            .expect("run a PostgreSQL program")
    }

    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        std::fs::write(dir.path().join("pw"), Self::PASSWORD).expect("pwfile");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown the cluster folder to postgres");
        }
        let data = dir.path().join("data");
        let out = Self::run_as_server_user(
            dir.path(),
            &Self::bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "hakiri",
                "--auth=scram-sha-256",
                "--pwfile",
                dir.path().join("pw").to_str().unwrap(),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        let out = Self::run_as_server_user(
            dir.path(),
            &Self::bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                dir.path().join("log").to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        PgCluster { dir, port }
    }

    /// `postgres://hakiri@127.0.0.1:<port>/postgres` (the password goes separately).
    pub fn url(&self) -> String {
        format!("postgres://hakiri@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with psql (the real client) and returns its output; panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url())
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", Self::PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Self::run_as_server_user(
            self.dir.path(),
            &Self::bin("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}
