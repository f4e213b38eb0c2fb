//! `atcr`: runs the registry server and administers it.

use anyhow::{Context, Result, bail};
use atcr_config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod sign;

#[derive(Parser)]
#[command(
    name = "atcr",
    version,
    about = "ATCR: an OCI registry on the AT Protocol"
)]
struct Cli {
    /// Configuration file (TOML); ATCR_* environment variables override it.
    #[arg(long, global = true, env = "ATCR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded PDS and PLC directory by default).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage accounts of the embedded PDS (through the running server).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Manage an account's app passwords (through the running server).
    AppPassword {
        #[command(subcommand)]
        command: AppPasswordCommand,
    },
    /// Garbage collection and retention now (through the running server):
    /// delete blobs no manifest references any more, past `gc.grace_secs`.
    Gc {
        /// Report what a run would delete, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Co-sign an image: an io.atcr.signature record in your PDS, and the
    /// matching signature artifact attached to the image.
    Sign(sign::SignArgs),
    /// Exit 0 when the server of this configuration accepts connections
    /// (container health checks: the images have no shell).
    Healthcheck {
        /// Address to try (default: server.listen).
        #[arg(long)]
        addr: Option<String>,
    },
    /// Back the data directory up into DIR while the server runs (SQLite
    /// online backups, the session secret, new blob files).
    Backup {
        /// Destination directory (an earlier backup there is updated).
        dir: PathBuf,
    },
    /// Restore a backup from DIR into an empty data directory (server
    /// stopped).
    Restore {
        /// The backup directory.
        dir: PathBuf,
    },
    /// The registry index (server stopped).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Print an atcr-verify configuration file for this deployment (PLC
    /// directory, handle resolution through this server for its accounts'
    /// domains, plain HTTP on loopback): `atcr-verify --config FILE IMAGE`.
    VerifierConfig,
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Rebuild the index from the owners' PDS records and the blob store
    /// (disaster recovery); the replaced index is kept as
    /// registry.sqlite.before-rebuild.
    Rebuild {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a fully commented default configuration.
    Init,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// List the accounts (handle, DID, active).
    List,
    /// Create an account; prints its DID (and the generated password, if none was given).
    Create {
        /// The handle, e.g. alice.example.com.
        #[arg(long)]
        handle: String,
        /// The password (generated when omitted).
        #[arg(long, env = "ATCR_ACCOUNT_PASSWORD")]
        password: Option<String>,
        /// Signing key algorithm: k256 or p256 (default: pds.key_alg).
        #[arg(long)]
        key_alg: Option<String>,
    },
    /// Disable an account: its logins are refused and its registry tokens end at once.
    Disable {
        /// The account's handle or DID.
        account: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's handle or DID.
        account: String,
    },
    /// Delete an account: its PDS repository, its images (blobs are
    /// reclaimed by the next garbage collection) and its credentials.
    Delete {
        /// The account's handle or DID.
        account: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Replace an account's password (its registry tokens end).
    SetPassword {
        /// The account's handle or DID.
        account: String,
        /// The new password.
        #[arg(long, env = "ATCR_ACCOUNT_PASSWORD")]
        password: String,
    },
    /// Rotate an account's signing key (updates the DID document, re-signs the head commit).
    RotateKey {
        /// The account's handle or DID.
        #[arg(long)]
        handle: String,
        /// Algorithm of the new key (default: the current one).
        #[arg(long)]
        key_alg: Option<String>,
    },
}

#[derive(Subcommand)]
enum AppPasswordCommand {
    /// Create an app password (printed once).
    Create {
        /// The account's handle or DID.
        account: String,
        /// A name for it.
        #[arg(long)]
        name: String,
    },
    /// List an account's app passwords (names and dates).
    List {
        /// The account's handle or DID.
        account: String,
    },
    /// Revoke an app password: logins with it and the registry tokens they
    /// gave end at once.
    Revoke {
        /// The account's handle or DID.
        account: String,
        /// Its name.
        #[arg(long)]
        name: String,
    },
}

/// Takes `dir/serve.lock` (held by the one `atcr serve` of a data
/// directory); `None` when another process holds it.
fn lock_data_dir(dir: &std::path::Path) -> Result<Option<std::fs::File>> {
    let path = dir.join("serve.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("{}", path.display()))?;
    Ok(lock.try_lock().is_ok().then_some(lock))
}

/// Sends an administrative request to the server running on the data
/// directory (its admin socket), or, when none runs, applies it to the data
/// directory directly. Never creates a data directory.
async fn admin(cfg: Config, req: atcr_server::admin::AdminRequest) -> Result<serde_json::Value> {
    let dir = cfg.server.data_dir.clone();
    let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    if !dir.is_dir() {
        bail!(
            "no ATCR data directory at {} (server.data_dir): run this where `atcr serve` runs, or set --config / ATCR_SERVER_DATA_DIR to its data directory",
            shown.display()
        );
    }
    let socket = dir.join(atcr_server::admin::SOCKET);
    if socket.exists() {
        // A GC run over a large store may take long; account operations not.
        let timeout = match req {
            atcr_server::admin::AdminRequest::Gc { .. } => 24 * 3600,
            _ => 120,
        };
        let client = atcr_http::client_builder(std::time::Duration::from_secs(timeout))
            .unix_socket(socket.as_path())
            .build()
            .context("admin socket client")?;
        match client.post("http://atcr/admin").json(&req).send().await {
            Ok(r) => {
                let ok = r.status().is_success();
                let v: serde_json::Value = r.json().await.context("admin socket answer")?;
                if !ok {
                    bail!("{}", v["error"].as_str().unwrap_or("refused"));
                }
                return Ok(v);
            }
            // A socket left by a server that died: handled below.
            Err(e) if e.is_connect() => {}
            Err(e) => bail!("{}: {e}", socket.display()),
        }
    }
    let Some(_lock) = lock_data_dir(&dir)? else {
        bail!(
            "atcr serve runs on {} but its admin socket does not answer: restart it",
            shown.display()
        );
    };
    let services = atcr_server::Services::open(cfg).await?;
    atcr_server::admin::apply(&services, req)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// `atcr gc`'s report for people.
fn print_gc_report(v: &serde_json::Value) {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let dry = v["dry_run"].as_bool().unwrap_or(false);
    for a in v["retention"].as_array().into_iter().flatten() {
        let what = match a["tag"].as_str() {
            Some(t) => format!(
                "tag {}:{t} ({})",
                a["repository"].as_str().unwrap_or(""),
                a["digest"].as_str().unwrap_or("")
            ),
            None => format!(
                "manifest {}@{}",
                a["repository"].as_str().unwrap_or(""),
                a["digest"].as_str().unwrap_or("")
            ),
        };
        let enforced = a["enforced"].as_bool().unwrap_or(false);
        let verb = if dry || !enforced {
            "would delete"
        } else {
            "deleted"
        };
        let note = if enforced { "" } else { ", rule not enforced" };
        println!(
            "retention {verb} {what} [rule {}{note}]",
            a["rule"].as_str().unwrap_or("")
        );
    }
    for f in v["retention_failures"].as_array().into_iter().flatten() {
        println!(
            "retention failed: {} {}: {}",
            f[0]["repository"].as_str().unwrap_or(""),
            f[0]["digest"].as_str().unwrap_or(""),
            f[1].as_str().unwrap_or("")
        );
    }
    let mb = n("bytes_reclaimed") as f64 / 1e6;
    println!(
        "{} {} blobs ({mb:.1} MB; {} unknown to the index), {} repository links; {} blobs kept; {} idle uploads and {} empty repositories removed; {:.2} s",
        if dry {
            "dry run: would reclaim"
        } else {
            "reclaimed"
        },
        n("blobs_reclaimed"),
        n("orphans_reclaimed"),
        n("links_removed"),
        n("blobs_kept"),
        n("uploads_expired"),
        n("repositories_removed"),
        v["seconds"].as_f64().unwrap_or(0.0),
    );
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    Ok(Config::load(path.map(PathBuf::as_path), &env)?)
}

fn parse_alg(s: Option<&str>) -> Result<Option<atcr_crypto::Algorithm>> {
    s.map(|a| {
        a.parse()
            .with_context(|| format!("--key-alg {a:?}: expected k256 or p256"))
    })
    .transpose()
}

/// The `atcr-verify` configuration for this deployment. Handles resolve
/// through this server only for the domains its accounts use (and the
/// configured `pds.handle_domains`); every other handle resolves by DNS and
/// HTTPS as usual, and every DID document must still list its handle back.
async fn verifier_config(cfg: &Config) -> Result<String> {
    let url = cfg.public_url()?;
    let mut domains: std::collections::BTreeSet<String> = cfg
        .pds
        .handle_domains
        .iter()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
        .collect();
    if cfg.pds.enabled {
        let services = atcr_server::Services::open(cfg.clone()).await?;
        if let Some(pds) = services.pds {
            let mut cursor = None;
            loop {
                let page = pds.list_repos(1000, cursor.clone()).await?;
                let Some(last) = page.last().map(|r| r.0.clone()) else {
                    break;
                };
                for (did, _, _, _) in &page {
                    if let Ok(h) = pds.handle_of(did).await
                        && let Some((_, parent)) = h.split_once('.')
                    {
                        domains.insert(parent.to_owned());
                    }
                }
                cursor = Some(last);
            }
        }
    }
    let mut out = format!(
        "# atcr-verify configuration for the ATCR registry at {url}\n\
         # use: atcr-verify --config THIS_FILE IMAGE  (or ATCR_VERIFY_CONFIG=THIS_FILE)\n\
         plcUrl: {}\n",
        cfg.plc_url()?
    );
    if url.scheme() == "http" {
        out.push_str(
            "# this deployment serves plain HTTP (loopback only)\nplainHttpLoopback: true\n",
        );
    }
    if cfg.pds.enabled && !domains.is_empty() {
        let list: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        out.push_str(&format!(
            "# handles under these domains resolve through this server; their DID\n\
             # documents must still list them back\n\
             handleResolvers:\n  - url: {}\n    domains: [{}]\n",
            url.as_str().trim_end_matches('/'),
            list.join(", ")
        ));
    }
    Ok(out)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Init,
        } => {
            print!("{}", atcr_config::commented_default());
        }
        Command::Sign(args) => sign::sign(args).await?,
        Command::Healthcheck { addr } => {
            let addr = match addr {
                Some(a) => a,
                None => load_config(cli.config.as_ref())?.server.listen,
            };
            let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
            tokio::time::timeout(
                std::time::Duration::from_secs(3),
                tokio::net::TcpStream::connect(&addr),
            )
            .await
            .with_context(|| format!("{addr}: no answer"))?
            .with_context(|| format!("{addr}: not listening"))?;
        }
        Command::Index {
            command: IndexCommand::Rebuild { json },
        } => {
            let cfg = load_config(cli.config.as_ref())?;
            let dir = cfg.server.data_dir.clone();
            if !dir.is_dir() {
                bail!(
                    "no ATCR data directory at {} (server.data_dir): set --config / ATCR_SERVER_DATA_DIR to its data directory",
                    dir.display()
                );
            }
            let Some(_lock) = lock_data_dir(&dir)? else {
                bail!(
                    "atcr serve runs on {}: stop it before `atcr index rebuild`",
                    dir.display()
                );
            };
            let r = atcr_server::rebuild::rebuild_index(cfg).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "rebuilt the index: {} owners, {} manifests, {} tags; {} records skipped",
                    r.owners,
                    r.manifests,
                    r.tags,
                    r.skipped.len()
                );
                for s in &r.skipped {
                    println!("  skipped {s}");
                }
            }
        }
        Command::Backup { dir } => {
            let cfg = load_config(cli.config.as_ref())?;
            let c = atcr_server::backup::backup(&cfg, &dir)?;
            println!(
                "backed up {} databases and {} new blob files ({} bytes) to {}{}",
                c.databases,
                c.blobs,
                c.blob_bytes,
                dir.display(),
                if c.s3 {
                    "; blobs are in S3: back the bucket up with your provider's tools"
                } else {
                    ""
                }
            );
        }
        Command::Restore { dir } => {
            let cfg = load_config(cli.config.as_ref())?;
            // A running server on this data directory holds serve.lock.
            let data = atcr_server::prepare_data_dir(&cfg.server.data_dir)?;
            let Some(_lock) = lock_data_dir(&data)? else {
                bail!(
                    "atcr serve is running on {} (server.data_dir): stop it before restoring",
                    data.display()
                );
            };
            let c = atcr_server::backup::restore(&cfg, &dir)?;
            println!(
                "restored {} databases and {} blob files ({} bytes) into {}",
                c.databases,
                c.blobs,
                c.blob_bytes,
                data.display()
            );
        }
        Command::VerifierConfig => {
            let cfg = load_config(cli.config.as_ref())?;
            print!("{}", verifier_config(&cfg).await?);
        }
        Command::Serve => {
            let cfg = load_config(cli.config.as_ref())?;
            // One server per data directory: two would each think they own
            // the index, the journal and the upload sessions.
            let dir = atcr_server::prepare_data_dir(&cfg.server.data_dir)?;
            let Some(lock) = lock_data_dir(&dir)? else {
                bail!(
                    "another atcr serve is using the data directory {} (server.data_dir): stop it, or give this one its own",
                    dir.display()
                );
            };
            let url = cfg.public_url()?;
            let services = atcr_server::Services::open(cfg.clone()).await?;
            let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
            eprintln!(
                "atcr listening on {} (public URL {url})",
                listener.local_addr()?
            );
            eprintln!("data directory: {}", cfg.server.data_dir.display());
            if services.plc.is_some() {
                eprintln!("embedded PLC directory: {}", cfg.plc_url()?);
            }
            eprintln!("create an account:  atcr account create --handle alice.example.com");
            eprintln!("then log in:        docker login {}", url.authority());
            atcr_server::serve_on(listener, services, shutdown_signal()).await?;
            drop(lock);
        }
        Command::Account { command } => {
            use atcr_server::admin::AdminRequest as R;
            let cfg = load_config(cli.config.as_ref())?;
            let text =
                |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
            match command {
                AccountCommand::List => {
                    let v = admin(cfg, R::List).await?;
                    for a in v.as_array().into_iter().flatten() {
                        let state = if a["active"].as_bool() == Some(true) {
                            "active"
                        } else {
                            "disabled"
                        };
                        println!("{}\t{}\t{state}", text(a, "handle"), text(a, "did"));
                    }
                }
                AccountCommand::Create {
                    handle,
                    password,
                    key_alg,
                } => {
                    parse_alg(key_alg.as_deref())?;
                    let req = R::Create {
                        handle,
                        password,
                        key_alg,
                    };
                    let v = admin(cfg, req).await?;
                    println!("{}", text(&v, "did"));
                    if let Some(p) = v["password"].as_str() {
                        eprintln!("handle: {}  password: {p}", text(&v, "handle"));
                    }
                }
                AccountCommand::Disable { account } => {
                    let v = admin(cfg, R::Disable { account }).await?;
                    println!("{} disabled", text(&v, "did"));
                }
                AccountCommand::Enable { account } => {
                    let v = admin(cfg, R::Enable { account }).await?;
                    println!("{} enabled", text(&v, "did"));
                }
                AccountCommand::Delete { account, yes } => {
                    if !yes {
                        bail!(
                            "deleting {account} removes its repository and images for good: add --yes to confirm"
                        );
                    }
                    let v = admin(cfg, R::Delete { account }).await?;
                    println!(
                        "{} deleted ({} manifests)",
                        text(&v, "did"),
                        v["manifests"].as_u64().unwrap_or(0)
                    );
                }
                AccountCommand::SetPassword { account, password } => {
                    let v = admin(cfg, R::SetPassword { account, password }).await?;
                    println!("{} has a new password", text(&v, "did"));
                }
                AccountCommand::RotateKey { handle, key_alg } => {
                    parse_alg(key_alg.as_deref())?;
                    let req = R::RotateKey {
                        account: handle,
                        key_alg,
                    };
                    let v = admin(cfg, req).await?;
                    println!("{} now signs with {}", text(&v, "did"), text(&v, "key"));
                }
            }
        }
        Command::Gc { dry_run, json } => {
            let cfg = load_config(cli.config.as_ref())?;
            let v = admin(cfg, atcr_server::admin::AdminRequest::Gc { dry_run }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_gc_report(&v);
            }
        }
        Command::AppPassword { command } => {
            use atcr_server::admin::AdminRequest as R;
            let cfg = load_config(cli.config.as_ref())?;
            let text =
                |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
            match command {
                AppPasswordCommand::Create { account, name } => {
                    let v = admin(cfg, R::AppPasswordCreate { account, name }).await?;
                    println!("{}", text(&v, "password"));
                }
                AppPasswordCommand::List { account } => {
                    let v = admin(cfg, R::AppPasswordList { account }).await?;
                    for p in v.as_array().into_iter().flatten() {
                        println!("{}\t{}", text(p, "name"), text(p, "createdAt"));
                    }
                }
                AppPasswordCommand::Revoke { account, name } => {
                    let v = admin(cfg, R::AppPasswordRevoke { account, name }).await?;
                    println!("revoked {}", text(&v, "revoked"));
                }
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The format comes from the configuration when it can be read now (its
    // errors are reported by the command that loads it).
    let json = load_config(cli.config.as_ref())
        .map(|c| c.server.log_format == "json")
        .unwrap_or(false);
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ATCR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour escapes only where a person reads them.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
