//! `atcr-verify IMAGE`: verifies that an image was published by the identity
//! in its name. `atcr-verify export IMAGE -o FILE` writes an offline bundle;
//! `atcr-verify IMAGE --offline --bundle FILE` verifies from it with no
//! network. Exit codes: 0 verified, 1 verification failed, 2 usage or
//! configuration error, 3 could not complete (network, registry, PDS).

use atcr_verify::bundle::Bundle;
use atcr_verify::oci::Credentials;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Report, Verifier, VerifierConfig};
use clap::{Parser, ValueEnum};
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Verify an ATCR image against its owner's ATProto repository.
#[derive(Parser)]
#[command(name = "atcr-verify", version)]
struct Cli {
    /// HOST/OWNER/REPO[:TAG|@DIGEST]
    image: String,
    /// Trust policy (YAML, DESIGN §7). Without it: one valid owner signature.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Print nothing; the exit code is the answer.
    #[arg(long, short)]
    quiet: bool,
    /// Print every signature checked, with its proof details.
    #[arg(long, short)]
    verbose: bool,
    /// PLC directory URL.
    #[arg(long, env = "ATCR_PLC_URL", default_value = "https://plc.directory")]
    plc_url: String,
    /// Use plain HTTP for registries, PDSes and DID documents on loopback
    /// addresses (127.0.0.1, ::1, localhost).
    #[arg(long)]
    plain_http_loopback: bool,
    /// Registry user name (handle); otherwise Docker's config.json is used.
    #[arg(long, env = "ATCR_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password (app password).
    #[arg(long, env = "ATCR_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Verify from a bundle (`--bundle`) with no network access.
    #[arg(long, requires = "bundle")]
    offline: bool,
    /// The bundle `atcr-verify export` wrote.
    #[arg(long, requires = "offline")]
    bundle: Option<std::path::PathBuf>,
    /// (export) Where to write the bundle.
    #[arg(short = 'o', long = "out", hide = true)]
    out: Option<std::path::PathBuf>,
}

/// Credentials for `host` from Docker's `config.json` (`auths.HOST.auth`).
fn docker_credentials(host: &str) -> Option<Credentials> {
    use base64::Engine as _;
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => std::path::PathBuf::from(d).join("config.json"),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let auth = cfg["auths"][host]["auth"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let (u, p) = String::from_utf8(raw)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some(Credentials {
        username: u,
        password: p,
    })
}

fn text(r: &Report, verbose: bool) -> String {
    let mut out = String::new();
    let verdict = match r.decision {
        Decision::Pass => "VERIFIED",
        Decision::Fail => "FAILED",
    };
    out.push_str(&format!("{verdict} {}\n", r.image));
    if let Some(d) = &r.digest {
        out.push_str(&format!("  digest: {d}\n"));
    }
    if let Some(o) = &r.owner {
        out.push_str(&format!(
            "  owner:  {}{} (PDS {})\n",
            o.did,
            o.handle
                .as_deref()
                .map(|h| format!(" @{h}"))
                .unwrap_or_default(),
            o.pds
        ));
    }
    if let Some(t) = &r.tag {
        out.push_str(&format!(
            "  tag:    {} → {} ({})\n",
            t.tag,
            t.signed_digest.as_deref().unwrap_or("no tag record"),
            if t.valid {
                "signed by the owner"
            } else {
                "does not match the registry"
            }
        ));
    }
    for s in &r.signatures {
        let status = if s.valid { "valid" } else { "invalid" };
        out.push_str(&format!(
            "  {} signature by {}: {status}{}\n",
            s.kind,
            s.did,
            s.reason
                .map(|x| format!(" ({}: {})", x.code(), s.detail.as_deref().unwrap_or("")))
                .unwrap_or_default()
        ));
        if verbose {
            out.push_str(&format!(
                "    record {} cid {} commit {} rev {} key {} signed {}\n",
                s.record_uri,
                s.record_cid.as_deref().unwrap_or("-"),
                s.commit_cid.as_deref().unwrap_or("-"),
                s.rev.as_deref().unwrap_or("-"),
                s.key_id.as_deref().unwrap_or("-"),
                s.signed_at.as_deref().unwrap_or("-"),
            ));
        }
    }
    if let Some(p) = &r.policy {
        out.push_str(&format!("  policy: {p}\n"));
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for (r, d) in r.reasons.iter().zip(&r.details) {
        out.push_str(&format!("  reason: {}: {d}\n", r.code()));
    }
    out
}

async fn run(cli: Cli, export: bool) -> Result<Report, (u8, String)> {
    let image = ImageRef::parse(&cli.image).map_err(|e| (2, e.to_string()))?;
    let policy = match &cli.policy {
        Some(p) => TrustPolicy::load(p).map_err(|e| (2, e.to_string()))?,
        None => TrustPolicy::owner_only(),
    };
    let plc_url = url::Url::parse(&cli.plc_url)
        .map_err(|e| (2, format!("--plc-url {:?}: {e}", cli.plc_url)))?;
    let creds = match (cli.username, cli.password) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u,
            password: p,
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err((2, "give both --username and --password, or neither".into()));
        }
        (None, None) => docker_credentials(&image.host),
    };
    let cfg = VerifierConfig {
        identity: atcr_verify::ResolverConfig {
            plc_url,
            allow_plain_http: cli.plain_http_loopback,
            ..Default::default()
        },
        plain_http_loopback: cli.plain_http_loopback,
        credentials: creds
            .map(|c| vec![(image.host.clone(), c)])
            .unwrap_or_default(),
        offline: match &cli.bundle {
            Some(p) => {
                let bytes =
                    std::fs::read(p).map_err(|e| (2, format!("--bundle {}: {e}", p.display())))?;
                Some(Bundle::parse(&bytes).map_err(|e| (e.exit_code() as u8, e.to_string()))?)
            }
            None => None,
        },
        record: export,
        // One verification per run: nothing to reuse.
        cache_ttl: None,
    };
    let failed = |e: atcr_verify::VerifyError| (e.exit_code() as u8, e.to_string());
    let v = Verifier::new(cfg).map_err(failed)?;
    if export {
        let out = cli.out.ok_or((2, "export needs -o FILE".to_owned()))?;
        let (report, bundle) = v.export(&image).await.map_err(failed)?;
        let json = serde_json::to_vec_pretty(&bundle).map_err(|e| (2, e.to_string()))?;
        // Written whole, then renamed: never a half-written bundle.
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &out))
            .map_err(|e| (2, format!("{}: {e}", out.display())))?;
        return Ok(report);
    }
    v.verify(&image, &policy).await.map_err(failed)
}

#[tokio::main]
async fn main() -> ExitCode {
    atcr_http::install_crypto_provider();
    // `atcr-verify export IMAGE -o FILE` shares the flags of verification.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let export = args.get(1).is_some_and(|a| a == "export");
    if export {
        args.remove(1);
    }
    let cli = Cli::parse_from(args);
    if cli.out.is_some() && !export {
        eprintln!("atcr-verify: -o is for `atcr-verify export IMAGE -o FILE`");
        return ExitCode::from(2);
    }
    let (quiet, verbose, output) = (cli.quiet, cli.verbose, cli.output);
    match run(cli, export).await {
        Ok(r) => {
            if !quiet {
                match output {
                    Output::Json => {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
                    }
                    Output::Text => print!("{}", text(&r, verbose)),
                }
            }
            ExitCode::from(r.exit_code() as u8)
        }
        Err((code, msg)) => {
            if !quiet {
                eprintln!("atcr-verify: {msg}");
            }
            ExitCode::from(code)
        }
    }
}
