//! Test helpers shared by the workspace's test suites.
//!
//! The official atproto interop vectors are read from `shared/atproto-interop-tests`
//! beside the repository at test time (never copied in), so new vectors are
//! picked up without a code change. `ATPROTO_INTEROP_TESTS` overrides the path.
//! A missing directory is a test failure, not a skip.

use std::path::PathBuf;

pub mod proxy;

/// The interop-vectors directory.
///
/// # Panics
/// If the directory cannot be found: tests must not silently skip the vectors.
pub fn interop_dir() -> PathBuf {
    if let Ok(p) = std::env::var("ATPROTO_INTEROP_TESTS") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for anc in manifest.ancestors() {
        let candidate = anc.join("shared").join("atproto-interop-tests");
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "atproto interop vectors not found: expected shared/atproto-interop-tests beside the repository \
         (or set ATPROTO_INTEROP_TESTS)"
    );
}

/// Reads a vectors text file: one value per line, `#` comments and blank lines
/// skipped, leading/trailing spaces kept (they are part of the value).
pub fn read_lines(rel: &str) -> Vec<String> {
    let path = interop_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Reads a vectors JSON file.
pub fn read_json(rel: &str) -> serde_json::Value {
    let path = interop_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Asserts that `check` accepts every line of `valid` and rejects every line of `invalid`,
/// reporting all mismatches at once. Returns the number of vectors checked.
pub fn check_lists(valid: &str, invalid: &str, check: impl Fn(&str) -> bool) -> usize {
    let mut failures = vec![];
    let (v, i) = (read_lines(valid), read_lines(invalid));
    assert!(
        !v.is_empty() && !i.is_empty(),
        "empty vector files {valid} / {invalid}"
    );
    for s in &v {
        if !check(s) {
            failures.push(format!("rejected valid {s:?} ({valid})"));
        }
    }
    for s in &i {
        if check(s) {
            failures.push(format!("accepted invalid {s:?} ({invalid})"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    v.len() + i.len()
}

/// Every file below `dir` (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A TCP port that was free on 127.0.0.1 a moment ago (for servers a test
/// starts as child processes, which must be told their port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// A real S3-compatible server (`s3s-fs`, installed by `scripts/test`) running
/// as a child process on 127.0.0.1 over a temporary directory, with SigV4
/// authentication on. Killed on drop.
pub struct S3Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Bucket created for the test.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server with one bucket.
    ///
    /// # Panics
    /// If `s3s-fs` is not installed: the S3 tests must not silently skip.
    pub fn start() -> Self {
        let bin = std::env::var_os("ATCR_S3S_FS")
            .map(PathBuf::from)
            .or_else(|| {
                let dir = std::env::var_os("ATCR_TOOLS_DIR")
                    .map(PathBuf::from)
                    .or_else(|| {
                        Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/atcr-tools"))
                    })?;
                let p = dir.join("bin/s3s-fs");
                p.exists().then_some(p)
            })
            .expect("s3s-fs not found: run scripts/test (it installs it) or set ATCR_S3S_FS");
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = "atcr-test".to_owned();
        std::fs::create_dir_all(dir.path().join(&bucket)).expect("bucket dir");
        let port = free_port();
        let child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AKTEST", "--secret-key", "SKTEST"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            access_key: "AKTEST".into(),
            secret_key: "SKTEST".into(),
            _dir: dir,
        }
    }
}

impl S3Server {
    /// The directory the server stores buckets in (one subdirectory each).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl` in `dir`: a CA and a server certificate for 127.0.0.1 signed by
/// it, named `NAME-ca.crt`, `NAME.crt`, `NAME.key`.
pub fn make_certs(dir: &std::path::Path, name: &str) {
    make_certs_for(dir, name, &["127.0.0.1"]);
}

/// [`make_certs`] for a server certificate valid for these IP addresses.
pub fn make_certs_for(dir: &std::path::Path, name: &str, ips: &[&str]) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca, cak) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
    // A new P-256 key, unencrypted, written to the path that follows.
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
    ];
    let subject = format!("/CN={name} CA");
    let tail = [cak.as_str(), "-out", &ca, "-days", "2", "-subj", &subject];
    run(&[&["req", "-x509"][..], &new_key, &tail].concat());
    let (crt, key, csr, ext) = (
        format!("{name}.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            ips.iter()
                .map(|ip| format!("IP:{ip}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .expect("certificate extensions file");
    let subject = format!("/CN={name}");
    let tail = [key.as_str(), "-out", &csr, "-subj", &subject];
    run(&[&["req"][..], &new_key, &tail].concat());
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &cak,
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
}

/// The URL of an empty PostgreSQL database for `key` (a data directory),
/// the same one each time for that key (a server restarted on its data
/// directory finds its index), on one server this test process starts once
/// and keeps until it exits.
pub fn pg_database_for(key: &std::path::Path) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Pg = (PgServer, HashMap<PathBuf, String>);
    static PG: OnceLock<Mutex<Pg>> = OnceLock::new();
    let pg = PG.get_or_init(|| {
        // Started from a thread that lives as long as the process: the
        // server is stopped when its starting thread ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(PgServer::start());
            loop {
                std::thread::park();
            }
        });
        Mutex::new((rx.recv().expect("PostgreSQL started"), HashMap::new()))
    });
    let mut pg = pg.lock().unwrap_or_else(|p| p.into_inner());
    let (server, dbs) = &mut *pg;
    let n = dbs.len();
    dbs.entry(key.to_owned())
        .or_insert_with(|| server.create_database(&format!("index_{n}")))
        .clone()
}

/// A real PostgreSQL server (Debian's `postgresql` package, installed by
/// `scripts/test`) running as a child process on 127.0.0.1 over a temporary
/// directory, as an unprivileged user when the tests run as root (PostgreSQL
/// refuses root). Stopped (fast shutdown) on drop.
///
/// The cluster is copied from a template made once per machine with
/// `initdb` (C locale, trust authentication on 127.0.0.1 only), so a test
/// pays for a start-up, not for an `initdb`.
pub struct PgServer {
    child: Option<std::process::Child>,
    /// `postgres://atcr@127.0.0.1:PORT/atcr`
    pub url: String,
    /// The TCP port.
    pub port: u16,
    dir: tempfile::TempDir,
    user: Option<(u32, u32)>,
    /// More `postgres` arguments (TLS).
    args: Vec<String>,
}

/// The directory with `initdb` and `postgres` (`ATCR_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin`).
///
/// # Panics
/// When PostgreSQL is not installed: the tests must not silently skip.
pub fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("ATCR_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .expect("PostgreSQL not found: run scripts/test (it installs Debian's postgresql) or set ATCR_PG_BIN")
}

/// `(uid, gid)` to run PostgreSQL as: `nobody` when this process is root.
fn pg_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // Files this process creates are owned by its effective user.
    let probe = tempfile::tempfile().expect("tempfile");
    if probe.metadata().expect("metadata").uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != "nobody" {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

fn chown_tree(path: &std::path::Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        let ok = std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown -R {uid}:{gid} {}", path.display());
    }
}

fn as_user(cmd: &mut std::process::Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// The child gets SIGTERM (PostgreSQL: shut down once clients are gone)
/// when the thread that started it ends, so a server kept for a whole test
/// process never outlives it.
fn end_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only this process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The template cluster, made once (under a lock) per PostgreSQL version.
fn pg_template(bin: &std::path::Path, user: Option<(u32, u32)>) -> PathBuf {
    let root = std::env::temp_dir().join(format!(
        "atcr-pg-template-{}",
        bin.to_string_lossy().replace('/', "_")
    ));
    let data = root.join("data");
    std::fs::create_dir_all(&root).expect("template dir");
    let lock = std::fs::File::create(root.join(".lock")).expect("lock file");
    // Test processes making the template at once: one does, the others wait.
    lock.lock().expect("locking the PostgreSQL template");
    if !data.join("PG_VERSION").exists() {
        let tmp = root.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("template tmp");
        chown_tree(&tmp, user);
        let mut cmd = std::process::Command::new(bin.join("initdb"));
        cmd.arg("-D")
            .arg(tmp.join("data"))
            .args([
                "-U",
                "atcr",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .stdout(std::process::Stdio::null());
        as_user(&mut cmd, user);
        assert!(
            cmd.status().is_ok_and(|s| s.success()),
            "initdb of the PostgreSQL template failed"
        );
        std::fs::rename(tmp.join("data"), &data).expect("template in place");
    }
    data
}

impl PgServer {
    /// Starts a server with an empty `atcr` database.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`PgServer::start`], the server also accepting TLS with a certificate
    /// for 127.0.0.1 from a new CA; the CA's PEM file.
    pub fn start_tls() -> (Self, PathBuf) {
        let server = Self::start_with(true);
        let ca = server.dir.path().join("tls/pg-ca.crt");
        (server, ca)
    }

    fn start_with(tls: bool) -> Self {
        let bin = pg_bin();
        let user = pg_user();
        let template = pg_template(&bin, user);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "copying the PostgreSQL template");
        let mut args = vec![];
        if tls {
            let certs = dir.path().join("tls");
            std::fs::create_dir_all(&certs).expect("tls dir");
            make_certs(&certs, "pg");
            // PostgreSQL refuses a key others may read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(certs.join("pg.key"), std::fs::Permissions::from_mode(0o600))
                .expect("key mode");
            for (k, f) in [("ssl_cert_file", "pg.crt"), ("ssl_key_file", "pg.key")] {
                args.push("-c".to_owned());
                args.push(format!("{k}={}", certs.join(f).display()));
            }
            args.extend(["-c".to_owned(), "ssl=on".to_owned()]);
        }
        chown_tree(dir.path(), user);
        let mut server = Self {
            child: None,
            url: String::new(),
            port: 0,
            dir,
            user,
            args,
        };
        server.boot(free_port());
        server.url = server.create_database("atcr");
        server
    }

    /// Creates an empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE \"{name}\""));
        format!("postgres://atcr@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` with `psql` as the superuser `atcr`.
    ///
    /// # Panics
    /// When it fails.
    pub fn psql(&self, sql: &str) {
        let out = self.psql_command(sql).output().expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn try_psql(&self, sql: &str) -> bool {
        self.psql_command(sql)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn psql_command(&self, sql: &str) -> std::process::Command {
        let bin = pg_bin().join("psql");
        let psql = Some(bin)
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut cmd = std::process::Command::new(psql);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "atcr",
        ])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .stdout(std::process::Stdio::null());
        cmd
    }

    fn boot(&mut self, port: u16) {
        let data = self.dir.path().join("data");
        let mut cmd = std::process::Command::new(pg_bin().join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            // Sockets in the data directory, not /var/run/postgresql.
            .arg("-k")
            .arg(&data)
            // A test database: fast over durable (the test kills registries,
            // never PostgreSQL unless it says so).
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("postgres.log")).expect("log"));
        as_user(&mut cmd, self.user);
        end_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start postgres");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!(
                    "postgres exited ({s}): {}",
                    std::fs::read_to_string(self.dir.path().join("postgres.log"))
                        .unwrap_or_default()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "postgres did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.child = Some(child);
        self.port = port;
        // Listening is not accepting: wait out "the database system is
        // starting up".
        while !self.try_psql("SELECT 1") {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port, over the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.boot(self.port);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
