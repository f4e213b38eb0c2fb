//! The CLI contract: exit codes and one-line errors.

#[test]
fn cli_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_atcr-verify");
    // Usage errors: 2, with a one-line message.
    let out = std::process::Command::new(bin)
        .arg("not-an-image")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("atcr-verify: invalid image reference"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    // Cannot complete (nothing listens there): 3.
    let port = atcr_testkit::free_port();
    let out = std::process::Command::new(bin)
        .args([
            &format!("127.0.0.1:{port}/did-plc-aaaaaaaaaaaaaaaaaaaaaaaa/app:v1"),
            "--plain-http-loopback",
            "--plc-url",
            &format!("http://127.0.0.1:{port}"),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_offline_bundles() {
    let bin = env!("CARGO_BIN_EXE_atcr-verify");
    let dir = std::env::temp_dir().join(format!("atcr-verify-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = "127.0.0.1:5000/did-plc-aaaaaaaaaaaaaaaaaaaaaaaa/app:v1";
    let run = |bundle: &std::path::Path| {
        std::process::Command::new(bin)
            .args([image, "--offline", "--bundle"])
            .arg(bundle)
            .output()
            .unwrap()
    };
    // A bundle that holds nothing for this image: could not complete (3),
    // without touching the network (nothing listens on 127.0.0.1:5000 here).
    let empty = atcr_verify::bundle::Bundle::new(
        image.into(),
        "https://plc.directory".into(),
        Default::default(),
    );
    let path = dir.join("empty.json");
    std::fs::write(&path, serde_json::to_vec(&empty).unwrap()).unwrap();
    let out = run(&path);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the bundle"));
    // The same bundle with one byte changed: failed (1).
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\":2", "\"version\":2 ");
    let text = text.replacen("127.0.0.1:5000", "127.0.0.1:5001", 1);
    std::fs::write(&path, text).unwrap();
    let out = run(&path);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("modified"));
    // Not a bundle, or no file: usage error (2).
    std::fs::write(&path, "{}").unwrap();
    assert_eq!(run(&path).status.code(), Some(2));
    assert_eq!(run(&dir.join("missing.json")).status.code(), Some(2));
    // --offline needs --bundle.
    let out = std::process::Command::new(bin)
        .args([image, "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
