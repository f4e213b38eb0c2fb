//! Account administration through the running server.
//!
//! `atcr serve` listens on `<data_dir>/admin.sock`, a Unix socket only its
//! user can open (mode 0600 in a 0700 directory): filesystem permissions are
//! the admin credential, and nothing of it is reachable over the network.
//! `atcr account …` and `atcr app-password …` send one [`AdminRequest`] there,
//! so the running server applies it, and revocations reach its registry at
//! once. With no server running they open the data directory themselves, but
//! never create one (a wrong working directory must not silently make a new
//! registry).

use crate::Services;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The socket's name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// One administrative operation. Accounts are named by handle or DID.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Every account.
    List,
    /// A new account (password generated when none is given).
    Create {
        /// Handle.
        handle: String,
        /// Password.
        password: Option<String>,
        /// `k256` or `p256`.
        key_alg: Option<String>,
    },
    /// Refuse the account's logins and end its registry tokens.
    Disable {
        /// Handle or DID.
        account: String,
    },
    /// Allow the account's logins again.
    Enable {
        /// Handle or DID.
        account: String,
    },
    /// Delete the account, its repository and its images.
    Delete {
        /// Handle or DID.
        account: String,
    },
    /// Replace the password (ends registry tokens and cached logins).
    SetPassword {
        /// Handle or DID.
        account: String,
        /// The new password.
        password: String,
    },
    /// Rotate the signing key.
    RotateKey {
        /// Handle or DID.
        account: String,
        /// Algorithm of the new key.
        key_alg: Option<String>,
    },
    /// A new app password, returned once.
    AppPasswordCreate {
        /// Handle or DID.
        account: String,
        /// Its name.
        name: String,
    },
    /// The account's app passwords (names, dates).
    AppPasswordList {
        /// Handle or DID.
        account: String,
    },
    /// Revoke an app password (ends registry tokens and cached logins).
    AppPasswordRevoke {
        /// Handle or DID.
        account: String,
        /// Its name.
        name: String,
    },
    /// Run garbage collection and retention now.
    Gc {
        /// Only report what a run would do.
        dry_run: bool,
    },
}

fn alg(s: Option<&str>) -> Result<Option<atcr_crypto::Algorithm>, String> {
    s.map(|a| {
        a.parse()
            .map_err(|_| format!("key algorithm {a:?}: expected k256 or p256"))
    })
    .transpose()
}

/// Applies a request to the services; the answer as JSON.
pub async fn apply(services: &Services, req: AdminRequest) -> Result<serde_json::Value, String> {
    use serde_json::json;
    // Garbage collection needs the registry only.
    if let AdminRequest::Gc { dry_run } = req {
        let report = services
            .registry
            .gc(dry_run)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(json!(report));
    }
    let pds = services
        .pds
        .as_ref()
        .ok_or("the embedded PDS is disabled (pds.enabled = false)")?;
    let did = |account: String| async move {
        pds.lookup_did(&account)
            .await
            .map_err(|_| format!("no account {account} on this server"))
    };
    let e = |e: atcr_pds::PdsError| e.0.message;
    Ok(match req {
        AdminRequest::List => json!(pds.list_accounts().await.map_err(e)?),
        AdminRequest::Create {
            handle,
            password,
            key_alg,
        } => {
            let generated = password.is_none();
            let c = pds
                .create_account(&handle, password, alg(key_alg.as_deref())?)
                .await
                .map_err(e)?;
            json!({"did": c.did, "handle": c.handle, "password": generated.then_some(c.password)})
        }
        AdminRequest::Disable { account } => {
            let d = did(account).await?;
            pds.set_active(&d, false).await.map_err(e)?;
            json!({"did": d, "active": false})
        }
        AdminRequest::Enable { account } => {
            let d = did(account).await?;
            pds.set_active(&d, true).await.map_err(e)?;
            json!({"did": d, "active": true})
        }
        AdminRequest::Delete { account } => {
            // A DID whose account is already gone (a delete interrupted
            // between the PDS and the index) is still forgotten.
            let (d, existed) = match pds.lookup_did(&account).await {
                Ok(d) => (d, true),
                Err(_) if account.starts_with("did:") => (account, false),
                Err(_) => return Err(format!("no account {account} on this server")),
            };
            let did = atcr_syntax::Did::new(d.as_str()).map_err(|e| format!("{d}: {e}"))?;
            if existed {
                pds.delete_account(&d).await.map_err(e)?;
            }
            let manifests = services
                .registry
                .forget_owner(&did)
                .await
                .map_err(|e| e.to_string())?;
            json!({"did": d, "manifests": manifests})
        }
        AdminRequest::SetPassword { account, password } => {
            let d = did(account).await?;
            pds.set_password(&d, &password).await.map_err(e)?;
            json!({"did": d})
        }
        AdminRequest::RotateKey { account, key_alg } => {
            let d = did(account).await?;
            let key = pds
                .rotate_key(&d, alg(key_alg.as_deref())?)
                .await
                .map_err(e)?;
            json!({"did": d, "key": key})
        }
        AdminRequest::AppPasswordCreate { account, name } => {
            let d = did(account).await?;
            let p = pds.create_app_password(&d, &name).await.map_err(e)?;
            json!({"did": d, "name": p.name, "password": p.password})
        }
        AdminRequest::AppPasswordList { account } => {
            let d = did(account).await?;
            json!(pds.list_app_passwords(&d).await.map_err(e)?)
        }
        AdminRequest::AppPasswordRevoke { account, name } => {
            let d = did(account).await?;
            if !pds.revoke_app_password(&d, &name).await.map_err(e)? {
                return Err(format!("{d} has no app password named {name:?}"));
            }
            json!({"did": d, "revoked": name})
        }
        // Answered above, before the PDS is needed.
        AdminRequest::Gc { .. } => return Err("not an account operation".into()),
    })
}

async fn handle(
    axum::extract::State(services): axum::extract::State<Services>,
    axum::Json(req): axum::Json<AdminRequest>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match apply(&services, req).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

/// Serves the admin socket in `dir` until the task is dropped. A stale
/// socket of a server that died is replaced (`serve.lock` says we own the
/// directory).
pub fn spawn(services: Services, dir: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let app = axum::Router::new()
        .route("/admin", axum::routing::post(handle))
        .with_state(services);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("admin socket: {e}");
        }
    }))
}
