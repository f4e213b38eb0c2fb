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
