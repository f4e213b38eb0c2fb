//! `atcr-containerd-verifier`: an image verifier for containerd 2.x's
//! `io.containerd.image-verifier.v1.bindir` plugin.
//!
//! containerd runs it for every pull with `-name REF -digest DIGEST
//! -stdin-media-type application/vnd.oci.descriptor.v1+json` and the pulled
//! descriptor on stdin; exit 0 allows the pull, anything else blocks it, and
//! stdout is the reason (containerd keeps 32 KiB). containerd passes no
//! credentials or registry configuration, so the verifier reads its own
//! settings: `$ATCR_CONTAINERD_VERIFIER_CONFIG`, else
//! `/etc/atcr/containerd-verifier.yaml` (see the library's documentation).
//!
//! Exit codes: 0 allowed, 1 denied (or could not verify in time: fail
//! closed), 2 bad arguments, input or settings.

use atcr_verify::ImageRef;
use atcr_verify_plugins::{Incomplete, Settings, verify};
use std::io::Read as _;
use std::process::ExitCode;

/// Where the settings are when the environment does not say.
const DEFAULT_SETTINGS: &str = "/etc/atcr/containerd-verifier.yaml";
/// Largest descriptor read from stdin.
const MAX_STDIN: u64 = 64 * 1024;

fn say(code: u8, reason: &str) -> ExitCode {
    // containerd keeps the first 32 KiB of stdout.
    let r: String = reason.chars().take(8 * 1024).collect();
    println!("atcr-verify: {r}");
    ExitCode::from(code)
}

struct Args {
    name: String,
    digest: String,
    media_type: String,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let (mut name, mut digest, mut media_type) = (None, None, None);
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.trim_start_matches('-') {
            "name" => name = Some(v.clone()),
            "digest" => digest = Some(v.clone()),
            "stdin-media-type" => media_type = Some(v.clone()),
            other => return Err(format!("unknown argument -{other}")),
        }
    }
    Ok(Args {
        name: name.ok_or("-name is required")?,
        digest: digest.ok_or("-digest is required")?,
        media_type: media_type.ok_or("-stdin-media-type is required")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    atcr_http::install_crypto_provider();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => return say(2, &format!("bad arguments: {e}")),
    };
    // The descriptor containerd is pulling; its digest must be the one named.
    if args.media_type != "application/vnd.oci.descriptor.v1+json" {
        return say(
            2,
            &format!("unknown stdin media type {:?}", args.media_type),
        );
    }
    let mut stdin = String::new();
    if let Err(e) = std::io::stdin().take(MAX_STDIN).read_to_string(&mut stdin) {
        return say(2, &format!("unreadable descriptor on stdin: {e}"));
    }
    let desc: serde_json::Value = match serde_json::from_str(stdin.trim()) {
        Ok(d) => d,
        Err(e) => return say(2, &format!("the descriptor on stdin is not JSON: {e}")),
    };
    if desc["digest"].as_str() != Some(args.digest.as_str()) {
        return say(2, "the descriptor on stdin is not the digest being pulled");
    }
    let path = std::env::var_os("ATCR_CONTAINERD_VERIFIER_CONFIG")
        .map_or_else(|| DEFAULT_SETTINGS.into(), std::path::PathBuf::from);
    let settings = match Settings::load(&path) {
        Ok(s) => s,
        Err(e) => {
            return say(
                2,
                &format!("settings: {e} (set ATCR_CONTAINERD_VERIFIER_CONFIG)"),
            );
        }
    };
    let policy = atcr_verify::policy::TrustPolicy::owner_only();
    let host = args.name.split('/').next().unwrap_or_default();
    if !args.name.contains('/') || !settings.checks(&policy, host) {
        return match settings.other_images.as_str() {
            "allow" => say(
                0,
                &format!("{}: not a verified registry (allowed)", args.name),
            ),
            _ => say(
                1,
                &format!("{}: not a verified registry (otherImages: deny)", args.name),
            ),
        };
    }
    let image = match ImageRef::parse(&args.name) {
        Ok(i) => i,
        Err(e) => return say(1, &e.to_string()),
    };
    // An index is verified once, as a whole: its digest is what containerd
    // pulls. By tag, the owner's tag record is checked too, and the digest
    // the owner signed must be the one containerd is pulling.
    let key = format!("{}|{}", image, args.digest);
    match verify(&settings, &image, &key).await {
        Ok((v, from_cache)) => {
            if v.allowed && v.digest.as_deref() != Some(args.digest.as_str()) {
                return say(
                    1,
                    &format!(
                        "{}: verified {}, but containerd is pulling {}",
                        args.name,
                        v.digest.as_deref().unwrap_or("?"),
                        args.digest
                    ),
                );
            }
            let cache = if from_cache { " (cached)" } else { "" };
            say(u8::from(!v.allowed), &format!("{}{cache}", v.reason))
        }
        Err(e @ Incomplete::Config(_)) => say(2, &format!("{}: {e}", args.name)),
        Err(e) => say(1, &format!("{}: {e} (denied: fail closed)", args.name)),
    }
}
