//! Test helpers shared by the workspace's test suites.
//!
//! The official atproto interop vectors are read from `shared/atproto-interop-tests`
//! beside the repository at test time (never copied in), so new vectors are
//! picked up without a code change. `ATPROTO_INTEROP_TESTS` overrides the path.
//! A missing directory is a test failure, not a skip.

use std::path::PathBuf;

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

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
