use atcr_config::{Config, ConfigError, commented_default};
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_commented_default_parses_to_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("atcr.toml");
    std::fs::write(&p, commented_default()).unwrap();
    let cfg = Config::load(Some(&p), &HashMap::new()).unwrap();
    assert_eq!(cfg.server.listen, "127.0.0.1:5000");
    assert!(cfg.plc.embedded);
    assert_eq!(cfg.plc_url().unwrap().as_str(), "http://127.0.0.1:5000/plc");
}

#[test]
fn environment_overrides_the_file() {
    let cfg = Config::load(
        None,
        &env(&[
            ("ATCR_SERVER_LISTEN", "0.0.0.0:6000"),
            ("ATCR_SERVER_PUBLIC_URL", "https://registry.example:6000"),
            ("ATCR_PDS_HANDLE_DOMAINS", ".a.test, .b.test"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.server.listen, "0.0.0.0:6000");
    assert_eq!(cfg.pds.handle_domains, vec![".a.test", ".b.test"]);
}

#[test]
fn errors_name_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.toml");
    std::fs::write(
        &p,
        "[server]\nlisten = \"127.0.0.1:5000\"\n\n[pds]\nkey_algo = \"k256\"\n",
    )
    .unwrap();
    let err = Config::load(Some(&p), &HashMap::new()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { line: 5, .. }), "{msg}");
    assert!(
        msg.contains("bad.toml:5") && msg.contains("key_algo"),
        "{msg}"
    );
    std::fs::write(&p, "[pds]\nkey_alg = \"rsa\"\n").unwrap();
    assert!(
        Config::load(Some(&p), &HashMap::new())
            .unwrap_err()
            .to_string()
            .contains("pds.key_alg")
    );
    let e = Config::load(None, &env(&[("ATCR_SERVER_LISTEN", "nope")])).unwrap_err();
    assert!(e.to_string().contains("server.listen"));
    let e = Config::load(None, &env(&[("ATCR_PDS_BOGUS", "1")])).unwrap_err();
    assert!(e.to_string().contains("ATCR_PDS_BOGUS"));
    let e = Config::load(None, &env(&[("ATCR_PLC_EMBEDDED", "maybe")])).unwrap_err();
    assert!(e.to_string().contains("true or false"));
}

#[test]
fn the_index_backend_is_sqlite_or_postgres_with_a_url() {
    let cfg = Config::load(None, &HashMap::new()).unwrap();
    assert_eq!(cfg.index.backend, "sqlite");
    let cfg = Config::load(
        None,
        &env(&[
            ("ATCR_INDEX_BACKEND", "postgres"),
            ("ATCR_INDEX_POSTGRES_URL", "postgres://atcr@db/atcr"),
            ("ATCR_INDEX_POOL_SIZE", "32"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.index.pool_size, 32);
    let e = Config::load(None, &env(&[("ATCR_INDEX_BACKEND", "postgres")])).unwrap_err();
    assert!(e.to_string().contains("index.postgres_url"), "{e}");
    let e = Config::load(None, &env(&[("ATCR_INDEX_BACKEND", "mysql")])).unwrap_err();
    assert!(e.to_string().contains("index.backend"), "{e}");
    let e = Config::load(
        None,
        &env(&[
            ("ATCR_INDEX_BACKEND", "postgres"),
            ("ATCR_INDEX_POSTGRES_URL", "postgres://atcr@db/atcr"),
            ("ATCR_INDEX_POOL_SIZE", "0"),
        ]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("index.pool_size"), "{e}");
}
