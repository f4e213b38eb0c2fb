//! `atcr-ratify-verifier`: a Ratify 1.x external verifier plugin.
//!
//! Ratify runs it with `RATIFY_VERIFIER_COMMAND=VERIFY`,
//! `RATIFY_VERIFIER_SUBJECT` (the reference as the user gave it: a tag is
//! resolved here), `RATIFY_VERIFIER_VERSION`, and one JSON document on stdin:
//! `{config, storeConfig, referenceDesc}` (`referenceDesc`: the signature
//! artifact Ratify found). The answer is one JSON line on stdout,
//! `{isSuccess, message, name, type, extensions}` — Ratify keeps only those
//! fields, and parses every line containing `{` of stdout *and* stderr, so
//! nothing else is ever printed.
//!
//! `config` parameters (all optional): `trustedDIDs` (list; `owner` allowed)
//! or `policy` (a trust policy file), `verifierConfig` (the verifier
//! configuration file: plcUrl, handleResolvers, plainHttpLoopback),
//! `settings` (the containerd verifier's settings file, for credentials,
//! cache and bundles).
//!
//! Failure to verify at all (bad input, unreachable PDS) is a plugin error in
//! Ratify's form `{"code", "msg", "details"}` with a non-zero exit: 1 config
//! parse, 2 invalid config, 3 unknown command, 4 missing environment, 5 I/O,
//! 6 version unsupported, 8 command failure.

use atcr_verify::ImageRef;
use atcr_verify_plugins::{Incomplete, Settings, verify};
use serde_json::{Value, json};
use std::io::Read as _;
use std::process::ExitCode;

/// Largest stdin document read.
const MAX_STDIN: u64 = 1024 * 1024;

fn error(code: u8, msg: &str, details: &str) -> ExitCode {
    println!("{}", json!({"code": code, "msg": msg, "details": details}));
    ExitCode::from(1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    atcr_http::install_crypto_provider();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(command) = env("RATIFY_VERIFIER_COMMAND") else {
        return error(
            4,
            "missing environment",
            "RATIFY_VERIFIER_COMMAND is not set",
        );
    };
    if command != "VERIFY" {
        return error(3, "unknown command", &format!("{command:?} (only VERIFY)"));
    }
    let Some(subject) = env("RATIFY_VERIFIER_SUBJECT") else {
        return error(
            4,
            "missing environment",
            "RATIFY_VERIFIER_SUBJECT is not set",
        );
    };
    let version = env("RATIFY_VERIFIER_VERSION").unwrap_or_else(|| "0.1.0".into());
    if !["0.1.0", "1.0.0"].contains(&version.as_str()) {
        return error(
            6,
            "version unsupported",
            &format!("{version} (0.1.0 and 1.0.0 are)"),
        );
    }
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().take(MAX_STDIN).read_to_string(&mut stdin) {
        return error(5, "I/O", &format!("stdin: {e}"));
    }
    let input: Value = match serde_json::from_str(&stdin) {
        Ok(v) => v,
        Err(e) => return error(1, "config parse", &format!("stdin is not JSON: {e}")),
    };
    let config = &input["config"];
    let name = config["name"].as_str().unwrap_or("atcr").to_owned();
    let kind = config["type"].as_str().unwrap_or(&name).to_owned();
    // Parameters sit beside name/type in Ratify's free-form config, or under
    // `parameters`.
    let param = |k: &str| {
        config
            .get("parameters")
            .and_then(|p| p.get(k))
            .or_else(|| config.get(k))
            .cloned()
    };
    let mut settings = match param("settings").and_then(|v| v.as_str().map(str::to_owned)) {
        Some(p) => match Settings::load(std::path::Path::new(&p)) {
            Ok(s) => s,
            Err(e) => return error(2, "invalid config", &e.to_string()),
        },
        None => Settings::default(),
    };
    if let Some(p) = param("verifierConfig").and_then(|v| v.as_str().map(str::to_owned)) {
        settings.verifier_config = Some(p.into());
    }
    if let Some(p) = param("policy").and_then(|v| v.as_str().map(str::to_owned)) {
        settings.policy = Some(p.into());
    }
    // A policy made from `trustedDIDs` lives in a directory of this call,
    // removed before it answers.
    let mut scratch: Option<std::path::PathBuf> = None;
    if let Some(list) = param("trustedDIDs") {
        let Some(list) = list.as_array().filter(|l| l.iter().all(Value::is_string)) else {
            return error(
                2,
                "invalid config",
                "trustedDIDs must be a list of DIDs (or owner)",
            );
        };
        let dids: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        let text = format!(
            "version: 1.0\npolicies:\n  - name: ratify\n    scope: \"**\"\n    trustedDIDs: [{}]\n",
            dids.join(", ")
        );
        if let Err(e) = atcr_verify::policy::TrustPolicy::parse("trustedDIDs", &text) {
            return error(2, "invalid config", &e.to_string());
        }
        let dir = std::env::temp_dir().join(format!("atcr-ratify-{}", std::process::id()));
        let path = dir.join("policy.yaml");
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text));
        scratch = Some(dir);
        if let Err(e) = written {
            cleanup(scratch.as_deref());
            return error(5, "I/O", &e.to_string());
        }
        settings.policy = Some(path);
    }
    let image = match ImageRef::parse(&subject) {
        Ok(i) => i,
        Err(e) => {
            cleanup(scratch.as_deref());
            return error(2, "invalid config", &e.to_string());
        }
    };
    let artifact = input["referenceDesc"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let result = verify(&settings, &image, &format!("ratify|{image}")).await;
    cleanup(scratch.as_deref());
    let out = match result {
        Ok((v, _)) => json!({
            "isSuccess": v.allowed,
            "message": v.reason,
            "name": name,
            "type": kind,
            "extensions": extensions(&v, &image, &artifact),
        }),
        Err(e @ Incomplete::Config(_)) => return error(2, "invalid config", &e.to_string()),
        Err(e) => return error(8, "command failure", &e.to_string()),
    };
    println!("{out}");
    ExitCode::SUCCESS
}

/// Details Ratify passes on: the subject's digest, and the signer of the
/// artifact it asked about (did, handle, signedAt, commitCid), from the
/// signed record, never from the artifact.
fn extensions(v: &atcr_verify_plugins::Verdict, image: &ImageRef, artifact: &str) -> Value {
    let this = v
        .signatures
        .iter()
        .find(|s| s.artifact.as_deref() == Some(artifact));
    json!({
        "subject": image.to_string(),
        "digest": v.digest,
        "artifact": artifact,
        "signature": this,
        "signatures": v.signatures,
    })
}

fn cleanup(dir: Option<&std::path::Path>) {
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
}
