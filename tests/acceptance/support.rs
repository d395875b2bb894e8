//! Helpers for the acceptance tests: the `hakiri` binary, throwaway projects, and real
//! servers (httpbin, the paginated fixture server, moto's S3 server) on 127.0.0.1, stopped
//! on drop.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `hakiri` binary cargo built for these tests (`CARGO_BIN_EXE_hakiri`: the tests are
/// in the binary's package, so `cargo test` builds it first; nothing builds inside a test).
///
/// Run through a hard link of this process's own: another cargo command (the README test
/// runs `scripts/demo`) may re-link `target/debug/hakiri` meanwhile, and a spawn must never
/// fall in that gap or run another build.
pub fn hakiri_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_hakiri"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hakiri-bin");
        let _ = std::fs::create_dir_all(&dir);
        // Links left by earlier runs whose process is gone.
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let link = dir.join(std::process::id().to_string());
        let _ = std::fs::remove_file(&link);
        match std::fs::hard_link(&built, &link) {
            Ok(()) => link,
            Err(_) => built,
        }
    })
    .clone()
}

/// Copies the folder `from` (files and subfolders) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's folder");
    for e in std::fs::read_dir(from).expect("read the folder to copy") {
        let e = e.expect("a folder entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("its type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy a file");
        }
    }
}

/// Removes the variables cargo sets for a test process from a command that runs cargo:
/// build scripts that watch them (ring watches CARGO_MANIFEST_DIR) would otherwise rebuild
/// half the tree (DataFusion included) on every switch between that build and a plain one.
pub fn without_cargo_test_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    // `cargo test` sets CARGO_MANIFEST_DIR (cli/) when it runs a test; prefer it to the
    // compiled-in path, which is stale when two checkouts share one target folder.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().expect("repo root").to_path_buf()
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

/// With `HAKIRI_TEST_STORE_KEY` set (64 hex digits), projects encrypt their store with it:
/// the suites run again that way (scripts/test), and each project checks on drop that
/// every file it wrote is encrypted.
pub fn test_store_key() -> Option<String> {
    std::env::var("HAKIRI_TEST_STORE_KEY")
        .ok()
        .filter(|k| !k.is_empty())
}

/// `manifest` with `[store] encryption_key` from `HAKIRI_TEST_STORE_KEY`, when set and the
/// manifest sets no key itself (nor syncs, which an encrypted store may not).
pub fn with_test_store_key(manifest: &str) -> String {
    if test_store_key().is_none()
        || manifest.contains("encryption_key")
        || manifest.contains("[sync]")
    {
        return manifest.to_string();
    }
    let key = "encryption_key = \"env:HAKIRI_TEST_STORE_KEY\"\n";
    match manifest.find("[store]\n") {
        Some(at) => {
            let after = at + "[store]\n".len();
            format!("{}{key}{}", &manifest[..after], &manifest[after..])
        }
        None => format!("[store]\n{key}\n{manifest}"),
    }
}

impl Project {
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("hakiri.toml"),
            with_test_store_key(manifest),
        )
        .expect("write manifest");
        Project { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn hakiri(&self, args: &[&str]) -> Run {
        hakiri(self.path(), args, &[])
    }
    /// Asserts the context table holds ids 1..=n, each once (count, distinct ids and their
    /// sum); `when` says at which point of the test.
    pub fn assert_ids_once(&self, table: &str, n: u64, when: &str) {
        let got = self.query_csv(&format!(
            "select count(*), count(distinct id), coalesce(sum(id), 0) from {table}"
        ));
        assert_eq!(
            got,
            vec![format!("{n},{n},{}", n * (n + 1) / 2)],
            "{table} {when}: count, distinct ids and sum of ids must be the source's"
        );
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
        Self::fixture_with(name, &[])
    }

    /// [`Server::fixture`] with arguments for the script.
    pub fn fixture_with(name: &str, args: &[&str]) -> Self {
        let script = repo_root().join("tests/fixtures").join(name);
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
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
        let port = free_port();
        let mut child = Command::new("/usr/bin/python3")
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
        wait_for_port("httpbin", port, &mut child);
        Server { child, port }
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

/// `hakiri serve` in a project, on a free port; stopped on drop.
pub struct HakiriServer {
    child: Child,
    pub port: u16,
    /// Its stderr, when started with [`HakiriServer::start_logged`].
    log: Option<tempfile::NamedTempFile>,
}

impl HakiriServer {
    /// Starts `hakiri serve --pg-listen 127.0.0.1:0` with extra environment variables and
    /// waits for its first line, which names the bound address.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, &["serve", "--pg-listen", "127.0.0.1:0"], env, None)
    }

    /// [`HakiriServer::start`] with its stderr (the log) kept in a file, read by
    /// [`HakiriServer::log`].
    pub fn start_logged(dir: &Path, env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        Self::start_with(
            dir,
            &["serve", "--pg-listen", "127.0.0.1:0"],
            env,
            Some(log),
        )
    }

    /// What the server logged so far (empty unless started with `start_logged`).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|l| std::fs::read_to_string(l.path()).expect("read the serve log"))
            .unwrap_or_default()
    }

    /// Starts `hakiri serve --mcp-listen 127.0.0.1:0` (MCP only when the project has no
    /// serve users); `port` is the MCP endpoint's.
    pub fn start_mcp(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, &["serve", "--mcp-listen", "127.0.0.1:0"], env, None)
    }

    /// The MCP endpoint's URL.
    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn start_with(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<tempfile::NamedTempFile>,
    ) -> Self {
        let mut cmd = Command::new(hakiri_bin());
        let stderr = match &log {
            Some(l) => Stdio::from(l.reopen().expect("reopen the log file")),
            None => Stdio::inherit(),
        };
        cmd.current_dir(dir)
            .args(args)
            .env_remove("HAKIRI_PROJECT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start hakiri serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the serve banner");
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        let mut server = HakiriServer {
            child,
            port: 0,
            log,
        };
        server.port = port
            .unwrap_or_else(|| panic!("hakiri serve printed '{line}'; its log:\n{}", server.log()));
        server
    }

    /// A libpq connection string for `user`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/hakiri?sslmode=disable",
            self.port
        )
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for hakiri serve")
    }
}

impl Drop for HakiriServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real `psql` client with `args` against `url`, without reading ~/.psqlrc.
pub fn psql(url: &str, args: &[&str]) -> Run {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run psql (install postgresql-client)");
    Run::from(out)
}

/// A program from the test virtual environment that `scripts/test` makes from
/// `tests/requirements.txt` (`$HAKIRI_VENV`, default `~/.cache/hakiri-venv`).
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("HAKIRI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/hakiri-venv")
        });
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test once, which installs tests/requirements.txt into {}",
        bin.display(),
        venv.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound, then released for a server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for_port(what: &str, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on port {port}: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// moto's standalone S3-compatible server (PyPI package `moto[server]`) on 127.0.0.1: a real
/// S3 REST endpoint. It accepts any credentials, so objects are written with plain unsigned
/// HTTP requests of the S3 API.
pub struct S3Server {
    server: Server,
}

impl S3Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// moto checking credentials: after the first `free` requests (unsigned, e.g. creating
    /// a bucket), a request signed with a key moto's IAM does not know is refused with 403.
    pub fn start_checking_credentials(free: u32) -> Self {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &free.to_string())])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_for_port("moto_server", port, &mut child);
        S3Server {
            server: Server { child, port },
        }
    }

    pub fn endpoint(&self) -> String {
        self.server.url()
    }

    /// Deletes `key` with boto3 (moto refuses an unsigned DELETE).
    pub fn delete(&self, bucket: &str, key: &str) {
        let out = Command::new(venv_bin("python"))
            .args([
                "-c",
                "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='hakiri-test', aws_secret_access_key='not-a-real-secret').delete_object(Bucket=sys.argv[2], Key=sys.argv[3])",
                &self.endpoint(),
                bucket,
                key,
            ])
            .output()
            .expect("run boto3");
        assert!(
            out.status.success(),
            "delete {bucket}/{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `PUT /{bucket}/{key}` (or `PUT /{bucket}` to create a bucket when `key` is empty).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let path = if key.is_empty() {
            format!("/{bucket}")
        } else {
            format!("/{bucket}/{key}")
        };
        self.request("PUT", &path, body, "HTTP/1.1 200");
    }

    fn request(&self, method: &str, path: &str, body: &[u8], expect: &str) {
        use std::io::{Read, Write};
        // A server just started may reset the first connection (seen under load): the
        // request is idempotent, so it is sent again.
        let send = || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", self.server.port))?;
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.server.port,
                body.len()
            )?;
            stream.write_all(body)?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        };
        let mut response = send();
        for _ in 0..4 {
            if response.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            response = send();
        }
        let response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(response.starts_with(expect), "{method} {path}: {response}");
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.put(bucket, "", b"");
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

impl Drop for Project {
    /// Under `HAKIRI_TEST_STORE_KEY`, every Parquet file of the store must be encrypted
    /// (an encrypted footer ends in `PARE`, a plain one in `PAR1`).
    fn drop(&mut self) {
        if test_store_key().is_none() || std::thread::panicking() {
            return;
        }
        let manifest = std::fs::read_to_string(self.path().join("hakiri.toml")).unwrap_or_default();
        if !manifest.contains("HAKIRI_TEST_STORE_KEY") {
            return;
        }
        let mut plain = Vec::new();
        let mut stack = vec![self.path().join(".hakiri/store")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "parquet")
                    && std::fs::read(&path).is_ok_and(|b| b.ends_with(b"PAR1"))
                {
                    plain.push(path);
                }
            }
        }
        assert!(
            plain.is_empty(),
            "plain files in an encrypted store: {plain:?}"
        );
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
        Self::start_with(false)
    }

    /// A cluster that accepts only TLS connections (`hostssl`; plain ones are rejected),
    /// with a server certificate for DNS:localhost signed by a CA of its own, written as
    /// `ca.crt` in [`PgCluster::dir`] (and `other-ca.crt`, a CA that signed nothing).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    /// The cluster's folder (its certificates, when started with TLS).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tls_files(dir: &Path) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN=hakiri test {ca}"),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "ext.cnf",
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    fn start_with(tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        if tls {
            Self::tls_files(dir.path());
        }
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
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        if tls {
            let d = dir.path().display();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key"
            ));
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n",
            )
            .unwrap();
        }
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

/// The Python example connector (examples/connectors/cursor-api), built once per test
/// process by its own build script with componentize-py from the test environment.
pub fn python_connector() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cursor-api.wasm");
            let script = repo_root().join("examples/connectors/cursor-api/build");
            let r = Command::new(&script)
                .arg(&out)
                .env("COMPONENTIZE_PY", venv_bin("componentize-py"))
                .output()
                .expect("run examples/connectors/cursor-api/build");
            assert!(
                r.status.success(),
                "building the Python connector failed:\n{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            );
            out
        })
        .clone()
}

/// A compile cache for components that tests share, so the Python connector (a CPython
/// interpreter, ~19 MB) is compiled once per test process, not once per project.
pub fn shared_wasm_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")
}

/// xorshift64: a seeded sequence of kill moments, the same on every run of the test.
pub struct Moments(pub u64);

impl Moments {
    pub fn next_ms(&mut self, min: u64, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        min + self.0 % (max - min)
    }
}

/// A request a [`receiver`] got, and what it answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// Header names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
    /// The body as sent (protobuf for OTLP).
    pub raw: Vec<u8>,
    pub status: u16,
}

pub type Received = std::sync::Arc<std::sync::Mutex<Vec<Request>>>;

/// An HTTP receiver of posts (webhooks, OpenLineage, OTLP) on 127.0.0.1: it keeps every
/// request and answers 200, or 500 to the very first one when `fail_first` (so a sender's
/// retry is exercised). Returns its URL (path `/hook`) and what it got.
pub fn receiver(fail_first: bool) -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Received = Default::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).unwrap_or(0) == 0 {
                continue;
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = std::collections::BTreeMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut got = sink.lock().unwrap();
            let status = if fail_first && got.is_empty() {
                500
            } else {
                200
            };
            got.push(Request {
                path,
                headers,
                body: serde_json::from_slice(&body).unwrap_or_default(),
                raw: body,
                status,
            });
            drop(got);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}
