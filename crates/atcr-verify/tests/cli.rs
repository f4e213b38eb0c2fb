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
