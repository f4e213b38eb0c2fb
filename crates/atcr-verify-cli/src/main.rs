//! `atcr-verify`: verifies that an image was published by the identity in
//! its name and satisfies a trust policy.
//!
//! * `atcr-verify verify IMAGE` (or just `atcr-verify IMAGE`);
//! * `atcr-verify export IMAGE -o FILE` writes an offline bundle;
//! * `atcr-verify verify IMAGE --offline --bundle FILE` verifies from it
//!   with no network.
//!
//! Exit codes: 0 verified, 1 verification failed, 2 usage or configuration
//! error, 3 could not complete (network, registry, PDS).

use atcr_verify::bundle::Bundle;
use atcr_verify::config::VerifyConfigFile;
use atcr_verify::oci::Credentials;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Report, Verifier, VerifierConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Verify ATCR images against their owners' ATProto repositories.
///
/// `atcr-verify IMAGE [FLAGS]` is short for `atcr-verify verify IMAGE [FLAGS]`.
#[derive(Parser)]
#[command(
    name = "atcr-verify",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    verify: VerifyArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an image (exit 0 verified, 1 failed, 2 usage, 3 could not complete).
    Verify(VerifyArgs),
    /// Verify an image online and write everything fetched to an offline bundle.
    Export(ExportArgs),
    /// Run the verification service: Kubernetes admission webhook (/validate,
    /// /mutate), Gatekeeper external data (/provide), /verify for Kyverno and
    /// OPA, /metrics, /healthz, /readyz.
    Serve(ServeArgs),
    /// Exit 0 when a service listens at --addr (container health checks:
    /// the image has no shell).
    Healthcheck {
        /// Address to try.
        #[arg(long, default_value = "127.0.0.1:8443")]
        addr: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on.
    #[arg(long, env = "ATCR_VERIFY_LISTEN", default_value = "0.0.0.0:8443")]
    listen: String,
    /// TLS certificate chain (PEM); reloaded when the file changes.
    #[arg(
        long,
        env = "ATCR_VERIFY_TLS_CERT",
        required_unless_present = "plain_http"
    )]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(
        long,
        env = "ATCR_VERIFY_TLS_KEY",
        required_unless_present = "plain_http"
    )]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), e.g. Gatekeeper's.
    #[arg(long, env = "ATCR_VERIFY_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Offer TLS 1.3 only.
    #[arg(long)]
    tls13_only: bool,
    /// Serve plain HTTP instead of HTTPS (behind a TLS-terminating proxy, or tests).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    plain_http: bool,
    /// A registry whose images are verified (repeat for several).
    #[arg(long = "registry", required = true)]
    registries: Vec<String>,
    /// What happens to images of other registries.
    #[arg(long, default_value = "allow", value_parser = ["allow", "warn", "deny"])]
    other_images: String,
    /// A namespace whose objects are admitted unchecked (repeat for several).
    #[arg(long = "exclude-namespace")]
    exclude_namespaces: Vec<String>,
    /// Longest time an answer may take, in milliseconds (keep it below the
    /// caller's timeout: Gatekeeper's is 3 s).
    #[arg(long, default_value_t = 2500)]
    budget_ms: u64,
    /// How long a verdict (and a tag's digest) is reused, in seconds.
    #[arg(long, default_value_t = 60)]
    cache_ttl_secs: u64,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// What every subcommand shares: where identities and registries are.
#[derive(Args, Clone)]
struct Common {
    /// Verifier configuration file (YAML: plcUrl, plainHttpLoopback,
    /// handleResolvers, policy); `atcr verifier-config` prints one for an
    /// ATCR deployment.
    #[arg(long, env = "ATCR_VERIFY_CONFIG")]
    config: Option<PathBuf>,
    /// Trust policy (YAML, DESIGN §7). Without it: one valid owner signature.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// PLC directory URL [default: https://plc.directory, or the configuration file's].
    #[arg(long, env = "ATCR_PLC_URL")]
    plc_url: Option<String>,
    /// Use plain HTTP for registries and PDSes on loopback addresses
    /// (127.0.0.1, ::1, localhost); other hosts always use HTTPS.
    #[arg(long)]
    plain_http_loopback: bool,
    /// Registry user name (handle); otherwise Docker's config.json is used.
    #[arg(long, env = "ATCR_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password (app password).
    #[arg(long, env = "ATCR_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

#[derive(Args, Clone)]
struct VerifyArgs {
    /// HOST/OWNER/REPO[:TAG|@DIGEST]
    #[arg(required = true)]
    image: Option<String>,
    #[command(flatten)]
    common: Common,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Print nothing; the exit code is the answer.
    #[arg(long, short)]
    quiet: bool,
    /// Print every signature checked, with its proof details.
    #[arg(long, short)]
    verbose: bool,
    /// Verify from a bundle (`--bundle`) with no network access.
    #[arg(long, requires = "bundle")]
    offline: bool,
    /// The bundle `atcr-verify export` wrote.
    #[arg(long, requires = "offline")]
    bundle: Option<PathBuf>,
    /// Also write the JSON report to this file (CI artifacts).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Append a Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).
    #[arg(long)]
    summary: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct ExportArgs {
    /// HOST/OWNER/REPO[:TAG|@DIGEST]
    image: String,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Output format of the report printed.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Print nothing; the exit code is the answer.
    #[arg(long, short)]
    quiet: bool,
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
        let status = match (s.valid, s.trusted) {
            (true, true) => "valid, trusted",
            (true, false) => "valid, not trusted",
            _ => "invalid",
        };
        out.push_str(&format!(
            "  {} signature by {}: {status}{}\n",
            s.kind,
            if s.did.is_empty() { "?" } else { &s.did },
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
        let (valid, trusted) = r.counts();
        let required = match r.required {
            Some(0) => "none required".to_owned(),
            Some(n) => format!("{n} required"),
            None => "?".to_owned(),
        };
        out.push_str(&format!(
            "  policy: {p}: {valid} valid, {trusted} trusted of {required}\n"
        ));
    }
    if verbose && let Some(c) = &r.canonical {
        out.push_str(&format!("  matched as: {c}\n"));
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for (r, d) in r.reasons.iter().zip(&r.details) {
        out.push_str(&format!("  reason: {}: {d}\n", r.code()));
    }
    out
}

type Failure = (u8, String);

/// The verifier configuration file, if one is named (an empty
/// `ATCR_VERIFY_CONFIG` names none).
fn config_file(common: &Common) -> Result<VerifyConfigFile, Failure> {
    match common.config.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => VerifyConfigFile::load(p).map_err(|e| (2, e.to_string())),
        None => Ok(VerifyConfigFile::default()),
    }
}

/// The verifier settings and policy the flags and configuration file give.
fn settings(common: &Common, image: &ImageRef) -> Result<(VerifierConfig, TrustPolicy), Failure> {
    let file = config_file(common)?;
    let policy_path = common.policy.as_ref().or(file.policy.as_ref());
    let policy = match policy_path {
        Some(p) => TrustPolicy::load(p).map_err(|e| (2, e.to_string()))?,
        None => TrustPolicy::owner_only(),
    };
    let mut identity = atcr_verify::ResolverConfig::default();
    file.apply(&mut identity);
    // An empty setting (a CI variable defined empty) is no setting.
    if let Some(u) = common.plc_url.as_ref().filter(|u| !u.is_empty()) {
        identity.plc_url = url::Url::parse(u).map_err(|e| (2, format!("--plc-url {u:?}: {e}")))?;
    }
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let creds = match (&set(&common.username), &set(&common.password)) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err((2, "give both --username and --password, or neither".into()));
        }
        (None, None) => Credentials::from_docker(&image.host),
    };
    let cfg = VerifierConfig {
        identity,
        plain_http_loopback: common.plain_http_loopback || file.plain_http_loopback,
        credentials: creds
            .map(|c| vec![(image.host.clone(), c)])
            .unwrap_or_default(),
        offline: None,
        record: false,
        // One verification per run: nothing to reuse.
        cache_ttl: None,
    };
    Ok((cfg, policy))
}

fn failed(e: atcr_verify::VerifyError) -> Failure {
    (e.exit_code() as u8, e.to_string())
}

async fn verify(a: &VerifyArgs) -> Result<Report, Failure> {
    let image = a.image.as_deref().unwrap_or_default();
    let image = ImageRef::parse(image).map_err(|e| (2, e.to_string()))?;
    let (mut cfg, policy) = settings(&a.common, &image)?;
    if let Some(p) = &a.bundle {
        let bytes = std::fs::read(p).map_err(|e| (2, format!("--bundle {}: {e}", p.display())))?;
        cfg.offline = Some(Bundle::parse(&bytes).map_err(failed)?);
    }
    let v = Verifier::new(cfg).map_err(failed)?;
    v.verify(&image, &policy).await.map_err(failed)
}

async fn export(a: &ExportArgs) -> Result<Report, Failure> {
    let image = ImageRef::parse(&a.image).map_err(|e| (2, e.to_string()))?;
    let (mut cfg, policy) = settings(&a.common, &image)?;
    cfg.record = true;
    let v = Verifier::new(cfg).map_err(failed)?;
    let (report, bundle) = v.export(&image, &policy).await.map_err(failed)?;
    let json = serde_json::to_vec_pretty(&bundle).map_err(|e| (2, e.to_string()))?;
    // Written whole, then renamed: never a half-written bundle.
    let tmp = a.out.with_extension("tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &a.out))
        .map_err(|e| (2, format!("{}: {e}", a.out.display())))?;
    Ok(report)
}

async fn serve(a: ServeArgs) -> Result<(), Failure> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATCR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    match a.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init(),
    }
    let any = ImageRef::parse("localhost/a.test/x").map_err(failed)?;
    let (mut cfg, _) = settings(&a.common, &any)?;
    // Credentials per registry come from Docker's config.json (or the flags,
    // for the first registry).
    cfg.credentials = a
        .registries
        .iter()
        .filter_map(|h| {
            let c = match (&a.common.username, &a.common.password) {
                (Some(u), Some(p)) => Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                }),
                _ => Credentials::from_docker(h),
            };
            c.map(|c| (h.clone(), c))
        })
        .collect();
    cfg.cache_ttl = Some(std::time::Duration::from_secs(a.cache_ttl_secs));
    let file = config_file(&a.common)?;
    let verifier = Verifier::new(cfg).map_err(failed)?;
    let service = atcr_verify_service::Service::new(
        verifier,
        atcr_verify_service::ServiceConfig {
            registries: a.registries.clone(),
            other_images: a.other_images.parse().map_err(|e: String| (2, e))?,
            exclude_namespaces: a.exclude_namespaces.clone(),
            budget: std::time::Duration::from_millis(a.budget_ms),
            policy_path: a.common.policy.clone().or(file.policy),
        },
    )
    .map_err(|e| (2, e))?;
    service.watch_policy(std::time::Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| (2, format!("--listen {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| (3, e.to_string()))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Admission answers are small and quick: defaults fit.
    let limits = atcr_serve::Limits::default();
    if a.plain_http {
        eprintln!("atcr-verify serve: listening on http://{addr} (plain HTTP)");
        atcr_serve::serve(listener, service.router(), limits, None, shutdown).await;
        return Ok(());
    }
    let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) else {
        return Err((
            2,
            "--tls-cert and --tls-key are required (or --plain-http)".into(),
        ));
    };
    let acceptor = atcr_serve::tls::Acceptor::new(
        &atcr_serve::tls::TlsSettings {
            cert,
            key,
            client_ca: a.client_ca,
            tls13_only: a.tls13_only,
        },
        std::time::Duration::from_secs(2),
    )
    .map_err(|e| (2, e.to_string()))?;
    eprintln!("atcr-verify serve: listening on https://{addr}");
    atcr_serve::serve(listener, service.router(), limits, Some(acceptor), shutdown).await;
    Ok(())
}

/// `verify`, with the CI outputs (`--report`, `--summary`) written whatever
/// the outcome.
async fn verify_and_report(a: &VerifyArgs) -> ExitCode {
    let r = verify(a).await;
    let image = a.image.as_deref().unwrap_or_default();
    let mut problems = vec![];
    if let (Some(path), Ok(rep)) = (&a.report, &r) {
        let json = serde_json::to_vec_pretty(rep).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            problems.push(format!("--report {}: {e}", path.display()));
        }
    }
    if let Some(path) = &a.summary {
        use std::io::Write as _;
        let md = summary(image, &r);
        let w = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(md.as_bytes()));
        if let Err(e) = w {
            problems.push(format!("--summary {}: {e}", path.display()));
        }
    }
    // A failed verification also says why on stderr, one line: CI logs show it.
    if let Ok(rep) = &r
        && rep.decision == Decision::Fail
        && let (Some(c), Some(d)) = (rep.reasons.first(), rep.details.first())
    {
        eprintln!("atcr-verify: FAILED {image}: {}: {d}", c.code());
    }
    for p in &problems {
        eprintln!("atcr-verify: {p}");
    }
    let code = finish(r, a.output, a.quiet, a.verbose);
    if problems.is_empty() {
        code
    } else {
        ExitCode::from(2)
    }
}

/// A Markdown summary of a verification (CI job summaries).
fn summary(image: &str, r: &Result<Report, Failure>) -> String {
    let mut md = String::new();
    match r {
        Err((code, msg)) => {
            md.push_str(&format!(
                "### atcr-verify: could not verify `{image}` (exit {code})\n\n{msg}\n\n"
            ));
        }
        Ok(rep) => {
            let ok = rep.decision == Decision::Pass;
            md.push_str(&format!(
                "### atcr-verify: {} `{}`\n\n",
                if ok { "VERIFIED" } else { "FAILED" },
                rep.image
            ));
            if let Some(d) = &rep.digest {
                md.push_str(&format!("- digest: `{d}`\n"));
            }
            if let Some(o) = &rep.owner {
                md.push_str(&format!(
                    "- owner: `{}`{}\n",
                    o.did,
                    o.handle
                        .as_deref()
                        .map(|h| format!(" (@{h})"))
                        .unwrap_or_default()
                ));
            }
            if let Some(p) = &rep.policy {
                let (valid, trusted) = rep.counts();
                md.push_str(&format!(
                    "- policy: {p}: {valid} valid, {trusted} trusted of {} required\n",
                    rep.required.unwrap_or(0)
                ));
            }
            for (c, d) in rep.reasons.iter().zip(&rep.details) {
                md.push_str(&format!("- reason: `{}`: {d}\n", c.code()));
            }
            if !rep.signatures.is_empty() {
                md.push_str("\n| signer | kind | valid | trusted | signed at | reason |\n|---|---|---|---|---|---|\n");
                for s in &rep.signatures {
                    md.push_str(&format!(
                        "| `{}` | {} | {} | {} | {} | {} |\n",
                        s.did,
                        s.kind,
                        s.valid,
                        s.trusted,
                        s.signed_at.as_deref().unwrap_or("-"),
                        s.reason.map(|r| r.code()).unwrap_or("-")
                    ));
                }
            }
            md.push('\n');
        }
    }
    md
}

fn finish(r: Result<Report, Failure>, output: Output, quiet: bool, verbose: bool) -> ExitCode {
    match r {
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

#[tokio::main]
async fn main() -> ExitCode {
    atcr_http::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors; a usage error is exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Some(Command::Serve(a)) => match serve(a).await {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, msg)) => {
                eprintln!("atcr-verify serve: {msg}");
                ExitCode::from(code)
            }
        },
        Some(Command::Export(a)) => finish(export(&a).await, a.output, a.quiet, false),
        Some(Command::Healthcheck { addr }) => {
            let c = tokio::time::timeout(
                std::time::Duration::from_secs(3),
                tokio::net::TcpStream::connect(&addr),
            )
            .await;
            match c {
                Ok(Ok(_)) => ExitCode::SUCCESS,
                _ => {
                    eprintln!("atcr-verify: {addr}: not listening");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Verify(a)) => verify_and_report(&a).await,
        None => verify_and_report(&cli.verify).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--plain-http-loopback` is about loopback hosts only: the DID
    /// documents and handles of every other host are still fetched over
    /// HTTPS.
    #[test]
    fn plain_http_loopback_does_not_downgrade_other_hosts() {
        let cli = Cli::try_parse_from([
            "atcr-verify",
            "127.0.0.1:5000/did-web-example.com/app:v1",
            "--plain-http-loopback",
        ])
        .unwrap();
        let image = ImageRef::parse("127.0.0.1:5000/did-web-example.com/app:v1").unwrap();
        let (cfg, _) = settings(&cli.verify.common, &image).unwrap();
        assert!(cfg.plain_http_loopback);
        let resolver = atcr_identity::IdentityResolver::new(cfg.identity).unwrap();
        let did = |d: &str| atcr_syntax::Did::new(d).unwrap();
        assert_eq!(
            resolver
                .document_url(&did("did:web:example.com"))
                .unwrap()
                .as_str(),
            "https://example.com/.well-known/did.json"
        );
        // Loopback did:web hosts use plain HTTP, as before.
        assert_eq!(
            resolver
                .document_url(&did("did:web:localhost%3A5000"))
                .unwrap()
                .as_str(),
            "http://localhost:5000/.well-known/did.json"
        );
    }

    #[test]
    fn subcommands_and_the_shorthand_parse_alike() {
        for args in [
            vec!["atcr-verify", "h.io/a.test/b:c", "--policy", "p.yaml"],
            vec![
                "atcr-verify",
                "verify",
                "h.io/a.test/b:c",
                "--policy",
                "p.yaml",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            let v = match cli.command {
                Some(Command::Verify(v)) => v,
                None => cli.verify,
                Some(_) => panic!("{args:?}"),
            };
            assert_eq!(v.image.as_deref(), Some("h.io/a.test/b:c"));
            assert_eq!(
                v.common.policy.as_deref(),
                Some(std::path::Path::new("p.yaml"))
            );
        }
        let cli = Cli::try_parse_from([
            "atcr-verify",
            "export",
            "h.io/a.test/b:c",
            "-o",
            "b.json",
            "--policy",
            "p.yaml",
        ])
        .unwrap();
        let Some(Command::Export(e)) = cli.command else {
            panic!()
        };
        assert_eq!(
            e.common.policy.as_deref(),
            Some(std::path::Path::new("p.yaml"))
        );
        // -o belongs to export only; an image is required.
        assert!(Cli::try_parse_from(["atcr-verify", "h.io/a.test/b:c", "-o", "x"]).is_err());
        assert!(Cli::try_parse_from(["atcr-verify"]).is_err());
    }
}
