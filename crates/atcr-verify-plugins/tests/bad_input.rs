//! Bad input to the plugins: a clear reason and the documented exit or
//! error code, never a panic or an allow.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut c = Command::new(bin);
    c.args(args)
        .env_remove("ATCR_CONTAINERD_VERIFIER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Environment variables of one run.
type Env<'a> = Vec<(&'a str, &'a str)>;
/// (arguments, environment, stdin, exit code, what stdout says).
type Case<'a> = (Vec<&'a str>, Env<'a>, Vec<u8>, u8, &'a str);

const DIGEST: &str = "sha256:3c193b5749980fdff721fd8ec5383f4cbbea79499467c3e54a18eccc4a67ec00";

#[test]
fn the_containerd_verifier_refuses_bad_input_with_a_reason() {
    let bin = env!("CARGO_BIN_EXE_atcr-containerd-verifier");
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("s.yaml");
    std::fs::write(
        &settings,
        "registries: [\"127.0.0.1:1\"]\notherImages: allow\n",
    )
    .unwrap();
    let s = settings.to_str().unwrap();
    let desc = format!(
        "{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"{DIGEST}\",\"size\":1}}\n"
    );
    let args = |name: &'static str, mt: &'static str| {
        vec!["-name", name, "-digest", DIGEST, "-stdin-media-type", mt]
    };
    let ok_mt = "application/vnd.oci.descriptor.v1+json";
    let cases: Vec<Case> = vec![
        (
            vec!["-name"],
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            desc.clone().into(),
            2,
            "bad arguments",
        ),
        (
            args("127.0.0.1:1/a.test/x:v1", "text/plain"),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            desc.clone().into(),
            2,
            "unknown stdin media type",
        ),
        (
            args("127.0.0.1:1/a.test/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            b"not json".to_vec(),
            2,
            "not JSON",
        ),
        (
            args("127.0.0.1:1/a.test/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            vec![0xff, 0xfe],
            2,
            "unreadable",
        ),
        (
            args("127.0.0.1:1/a.test/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            b"{\"digest\":\"sha256:00\"}".to_vec(),
            2,
            "not the digest",
        ),
        (
            args("127.0.0.1:1/a.test/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", "/nonexistent.yaml")],
            desc.clone().into(),
            2,
            "ATCR_CONTAINERD_VERIFIER_CONFIG",
        ),
        // A checked registry that cannot be reached: denied (fail closed).
        (
            args("127.0.0.1:1/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            desc.clone().into(),
            1,
            "fail closed",
        ),
        // A malformed name of a checked registry: denied.
        (
            args("127.0.0.1:1/UPPER/x:v1", ok_mt),
            vec![("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
            desc.clone().into(),
            1,
            "invalid",
        ),
    ];
    for (a, env, stdin, code, says) in cases {
        let out = run(bin, &a, &env, &stdin);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code as i32), "{a:?}: {stdout}");
        assert!(stdout.contains(says), "{a:?}: {stdout}");
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    }
    // Bad settings: refused with the file and key.
    std::fs::write(&settings, "otherImages: maybe\n").unwrap();
    let out = run(
        bin,
        &args("127.0.0.1:1/a.test/x:v1", ok_mt),
        &[("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
        desc.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("otherImages"));
    // Another registry follows otherImages.
    std::fs::write(
        &settings,
        "registries: [\"127.0.0.1:1\"]\notherImages: deny\n",
    )
    .unwrap();
    let out = run(
        bin,
        &args("docker.io/library/x:v1", ok_mt),
        &[("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
        desc.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&settings, "registries: [\"127.0.0.1:1\"]\n").unwrap();
    let out = run(
        bin,
        &args("docker.io/library/x:v1", ok_mt),
        &[("ATCR_CONTAINERD_VERIFIER_CONFIG", s)],
        desc.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_ratify_plugin_answers_bad_input_with_ratify_error_codes() {
    let bin = env!("CARGO_BIN_EXE_atcr-ratify-verifier");
    let input =
        br#"{"config":{"name":"atcr"},"storeConfig":{},"referenceDesc":{"digest":"sha256:00"}}"#;
    let verify = [
        ("RATIFY_VERIFIER_COMMAND", "VERIFY"),
        (
            "RATIFY_VERIFIER_SUBJECT",
            "127.0.0.1:1/did:plc:aaaaaaaaaaaaaaaaaaaaaaaa/x:v1",
        ),
    ];
    let cases: Vec<(Env, &[u8], i64)> = vec![
        (vec![], input, 4),
        (
            vec![
                ("RATIFY_VERIFIER_COMMAND", "VERSION"),
                ("RATIFY_VERIFIER_SUBJECT", "x"),
            ],
            input,
            3,
        ),
        (vec![("RATIFY_VERIFIER_COMMAND", "VERIFY")], input, 4),
        (verify.to_vec(), b"{not json", 1),
        (
            verify
                .iter()
                .copied()
                .chain([("RATIFY_VERIFIER_VERSION", "9.9.9")])
                .collect(),
            input,
            6,
        ),
        (
            verify.to_vec(),
            br#"{"config":{"name":"atcr","trustedDIDs":"owner"}}"#,
            2,
        ),
        (
            verify.to_vec(),
            br#"{"config":{"name":"atcr","trustedDIDs":["did:plc:short"]}}"#,
            2,
        ),
        (
            vec![
                ("RATIFY_VERIFIER_COMMAND", "VERIFY"),
                ("RATIFY_VERIFIER_SUBJECT", "not a ref"),
            ],
            input,
            2,
        ),
        // Nothing reachable: a command failure, not an allow.
        (verify.to_vec(), input, 8),
    ];
    for (env, stdin, code) in cases {
        let out = run(bin, &[], &env, stdin);
        assert_ne!(out.status.code(), Some(0), "{env:?}");
        // One JSON line on stdout, nothing on stderr (Ratify parses both).
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["code"].as_i64(), Some(code), "{env:?}: {v}");
        assert!(v["msg"].is_string() && v["details"].is_string());
    }
}
