//! Accounts: creation (with did:plc registration), login, app passwords, key rotation.

use crate::auth::random_token;
use crate::store::{SqlBlocks, repo_root};
use crate::{Pds, PdsError, PdsResult};
use atcr_crypto::{Algorithm, Keypair};
use atcr_plc::{Operation, did_for_genesis};
use atcr_repo::{Repo, firehose};
use atcr_sqlite::rusqlite::{self, OptionalExtension};
use atcr_syntax::{Datetime, Did, Handle};
use atcr_xrpc::XrpcError;
use atcr_xrpc::types::{AppPassword, SessionOutput};

/// A newly created account.
#[derive(Debug, Clone)]
pub struct AccountCreated {
    /// The DID.
    pub did: String,
    /// The handle.
    pub handle: String,
    /// The password (generated when none was given).
    pub password: String,
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::K256 => "k256",
        Algorithm::P256 => "p256",
    }
}

/// The account row needed to log in.
struct Login {
    did: String,
    handle: String,
    password_hash: String,
    active: bool,
}

impl Pds {
    fn plc_op(
        &self,
        rotation: &Keypair,
        signing: &Keypair,
        handle: &str,
        prev: Option<String>,
    ) -> Operation {
        let endpoint = self.inner.cfg.public_url.as_str().trim_end_matches('/');
        Operation::atproto(
            &[&rotation.public_key()],
            &signing.public_key(),
            handle,
            endpoint,
            prev,
        )
        .sign(rotation)
    }

    /// Creates an account: keys, a did:plc registered at the PLC directory,
    /// the stored account and its (empty) repository.
    pub async fn create_account(
        &self,
        handle: &str,
        password: Option<String>,
        alg: Option<Algorithm>,
    ) -> PdsResult<AccountCreated> {
        let handle = Handle::new(handle)
            .map_err(|e| XrpcError::new(400, "InvalidHandle", e.to_string()))?
            .normalized();
        let password = password.unwrap_or_else(|| random_token(18));
        if password.len() < 8 {
            return Err(XrpcError::invalid("password must be at least 8 characters").into());
        }
        let h = handle.clone();
        let taken: bool = self
            .db()
            .read(move |c| {
                c.query_row("SELECT 1 FROM account WHERE handle = ?1", [&h], |_| Ok(()))
                    .optional()
                    .map(|o| o.is_some())
                    .map_err(PdsError::from)
            })
            .await?;
        if taken {
            return Err(XrpcError::new(400, "HandleNotAvailable", "Handle already taken").into());
        }
        let alg = alg.unwrap_or(self.inner.cfg.default_key_alg);
        let signing = Keypair::generate(alg);
        let rotation = Keypair::generate(Algorithm::K256);
        let genesis = self.plc_op(&rotation, &signing, &handle, None);
        let did = did_for_genesis(&genesis);
        self.inner.plc.submit(&did, &genesis).await.map_err(|e| {
            XrpcError::new(
                502,
                "UpstreamFailure",
                format!("PLC directory refused the DID: {e}"),
            )
        })?;
        let rev = self.inner.clock.next();
        let pw_hash = self.password_hash(&password).await?;
        let (d, hd, repo_did) = (did.to_string(), handle.clone(), did.clone());
        let backfill = self.inner.cfg.backfill;
        let seq = self
            .db()
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO account (did, handle, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                    (&d, &hd, &pw_hash, Datetime::now().as_str()),
                )
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        PdsError(XrpcError::new(400, "HandleNotAvailable", "Handle already taken"))
                    }
                    e => e.into(),
                })?;
                tx.execute(
                    "INSERT INTO account_key (did, signing_alg, signing_key, rotation_key) VALUES (?1, ?2, ?3, ?4)",
                    (&d, alg_name(alg), signing.private_bytes().to_vec(), rotation.private_bytes().to_vec()),
                )?;
                let blocks = SqlBlocks { conn: tx, did: &d };
                let (repo, data) = Repo::create(repo_did, &signing, rev, &[], &blocks)
                    .map_err(|e| PdsError(XrpcError::new(500, "InternalServerError", e.to_string())))?;
                crate::repo::store_commit(tx, &d, &data)?;
                tx.execute(
                    "INSERT INTO repo_root (did, cid, rev) VALUES (?1, ?2, ?3)",
                    (&d, repo.commit_cid().to_string(), repo.commit().rev.as_str()),
                )?;
                // As the reference PDS: identity, account, then the first commit.
                let now = Datetime::now();
                let ev = |t, body| crate::events::sequence(tx, &d, t, body, backfill);
                ev("#identity", firehose::identity_body(&d, Some(&hd), now.as_str()))?;
                ev("#account", firehose::account_body(&d, true, None, now.as_str()))?;
                let commit = crate::events::commit_event(&d, &data, None, None, &[]);
                Ok::<_, PdsError>(ev("#commit", commit)?)
            })
            .await?;
        self.published(seq);
        tracing::info!(%did, handle, "account created");
        Ok(AccountCreated {
            did: did.to_string(),
            handle,
            password,
        })
    }

    /// The signing key of an account.
    pub(crate) fn signing_key(conn: &rusqlite::Connection, did: &str) -> PdsResult<Keypair> {
        let (alg, bytes): (String, Vec<u8>) = conn
            .query_row(
                "SELECT signing_alg, signing_key FROM account_key WHERE did = ?1",
                [did],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| {
                XrpcError::new(400, "RepoNotFound", format!("Could not find repo: {did}"))
            })?;
        let alg: Algorithm = alg.parse().map_err(|_| XrpcError::internal())?;
        Keypair::from_private_bytes(alg, &bytes).map_err(|_| XrpcError::internal().into())
    }

    /// Resolves a handle or DID hosted here to its DID.
    pub async fn lookup_did(&self, repo: &str) -> PdsResult<String> {
        let key = if repo.starts_with("did:") {
            repo.to_owned()
        } else {
            repo.to_ascii_lowercase()
        };
        self.db()
            .read(move |c| {
                c.query_row(
                    "SELECT did FROM account WHERE did = ?1 OR handle = ?1",
                    [&key],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(PdsError::from)
            })
            .await?
            .ok_or_else(|| {
                XrpcError::new(400, "RepoNotFound", format!("Could not find repo: {repo}")).into()
            })
    }

    /// The handle of a hosted DID.
    pub async fn handle_of(&self, did: &str) -> PdsResult<String> {
        let d = did.to_owned();
        self.db()
            .read(move |c| {
                c.query_row("SELECT handle FROM account WHERE did = ?1", [&d], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(PdsError::from)
            })
            .await?
            .ok_or_else(|| {
                XrpcError::new(400, "RepoNotFound", format!("Could not find repo: {did}")).into()
            })
    }

    /// `createSession`: checks the account password or an app password.
    pub async fn login(&self, identifier: &str, password: &str) -> PdsResult<SessionOutput> {
        let ident = if identifier.starts_with("did:") {
            identifier.to_owned()
        } else {
            identifier.to_ascii_lowercase()
        };
        let row: Option<Login> = self
            .db()
            .read(move |c| {
                c.query_row("SELECT did, handle, password_hash, active FROM account WHERE did = ?1 OR handle = ?1", [&ident], |r| {
                    Ok(Login { did: r.get(0)?, handle: r.get(1)?, password_hash: r.get(2)?, active: r.get(3)? })
                })
                .optional().map_err(PdsError::from)
            })
            .await?;
        let bad = || {
            PdsError(XrpcError::new(
                401,
                "AuthenticationRequired",
                "Invalid identifier or password",
            ))
        };
        // Every refusal costs one argon2 check and reads the same, whether
        // the account exists, is deactivated or the password is wrong.
        let Some(row) = row else {
            let _ = self
                .password_matches(
                    password,
                    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$2dKvAFvX1G2qD9mK2Sg3Zw",
                )
                .await;
            return Err(bad());
        };
        let app_password = if self.password_matches(password, &row.password_hash).await {
            None
        } else {
            let d = row.did.clone();
            let lookup = self.app_password_lookup(password);
            let candidates: Vec<(String, String)> = self
                .db()
                .read(move |c| {
                    let mut s = c.prepare(
                        "SELECT name, password_hash FROM app_password WHERE did = ?1 AND (lookup = ?2 OR lookup IS NULL)",
                    )?;
                    let rows = s.query_map([&d, &lookup], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                        .map_err(PdsError::from)
                })
                .await?;
            let mut name = None;
            for (n, h) in candidates {
                if self.password_matches(password, &h).await {
                    name = Some(n);
                    break;
                }
            }
            Some(name.ok_or_else(bad)?)
        };
        if !row.active {
            return Err(XrpcError::new(401, "AccountDeactivated", "Account is deactivated").into());
        }
        let this = self.clone();
        let did = row.did.clone();
        let (access, refresh) = self
            .db()
            .write(move |tx| {
                this.issue_tokens(tx, &did, app_password.as_deref())
                    .map_err(PdsError::from)
            })
            .await?;
        let did_doc = self.did_document(&row.did).await;
        Ok(SessionOutput {
            access_jwt: access,
            refresh_jwt: refresh,
            handle: row.handle,
            did: row.did,
            did_doc,
            active: Some(true),
        })
    }

    /// The DID document from the PLC directory (best effort, for session output).
    pub async fn did_document(&self, did: &str) -> Option<serde_json::Value> {
        let did = Did::new(did).ok()?;
        self.inner.plc.document(&did).await.ok().flatten()
    }

    /// Creates an app password, returned once.
    pub async fn create_app_password(&self, did: &str, name: &str) -> PdsResult<AppPassword> {
        if name.is_empty() || name.len() > 64 {
            return Err(XrpcError::invalid("app password name must be 1 to 64 characters").into());
        }
        let raw = random_token(12)
            .to_ascii_lowercase()
            .replace(['-', '_'], "x");
        let password = format!(
            "{}-{}-{}-{}",
            &raw[0..4],
            &raw[4..8],
            &raw[8..12],
            &raw[12..16]
        );
        let hash = self.password_hash(&password).await?;
        let lookup = self.app_password_lookup(&password);
        let created = Datetime::now().to_string();
        let (d, n, c) = (did.to_owned(), name.to_owned(), created.clone());
        self.db()
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO app_password (did, name, password_hash, created_at, lookup) VALUES (?1, ?2, ?3, ?4, ?5)",
                    (&d, &n, &hash, &c, &lookup),
                )
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        PdsError(XrpcError::invalid("an app password with this name already exists"))
                    }
                    e => e.into(),
                })?;
                Ok::<_, PdsError>(())
            })
            .await?;
        Ok(AppPassword {
            name: name.to_owned(),
            password,
            created_at: created,
            privileged: Some(false),
        })
    }

    /// Rotates an account's signing key: a PLC operation naming the new key
    /// (signed with the rotation key), then the head commit re-signed with it
    /// so every existing record keeps verifying against the DID document.
    pub async fn rotate_key(&self, did: &str, alg: Option<Algorithm>) -> PdsResult<String> {
        let d = did.to_owned();
        let (current_alg, rotation, handle): (String, Vec<u8>, String) = self
            .db()
            .read(move |c| {
                c.query_row(
                    "SELECT k.signing_alg, k.rotation_key, a.handle FROM account_key k JOIN account a ON a.did = k.did WHERE k.did = ?1",
                    [&d],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional().map_err(PdsError::from)
            })
            .await?
            .ok_or_else(|| XrpcError::new(400, "RepoNotFound", format!("Could not find repo: {did}")))?;
        let alg = alg.unwrap_or_else(|| current_alg.parse().unwrap_or(Algorithm::K256));
        let rotation = Keypair::from_private_bytes(Algorithm::K256, &rotation)
            .map_err(|_| XrpcError::internal())?;
        let parsed = Did::new(did).map_err(|e| XrpcError::invalid(e.to_string()))?;
        let last = self
            .inner
            .plc
            .last_operation(&parsed)
            .await
            .map_err(|e| XrpcError::new(502, "UpstreamFailure", e))?
            .ok_or_else(|| {
                XrpcError::new(502, "UpstreamFailure", "DID unknown to the PLC directory")
            })?;
        let new_key = Keypair::generate(alg);
        let op = self.plc_op(&rotation, &new_key, &handle, Some(last.cid().to_string()));
        self.inner.plc.submit(&parsed, &op).await.map_err(|e| {
            XrpcError::new(
                502,
                "UpstreamFailure",
                format!("PLC directory refused the rotation: {e}"),
            )
        })?;
        let this = self.clone();
        let d = did.to_owned();
        let new_did_key = new_key.public_key().to_did_key();
        let seq = self
            .db()
            .write(move |tx| {
                tx.execute(
                    "UPDATE account_key SET signing_alg = ?2, signing_key = ?3 WHERE did = ?1",
                    (&d, alg_name(alg), new_key.private_bytes().to_vec()),
                )?;
                let (head, rev) = repo_root(tx, &d)?.ok_or_else(XrpcError::internal)?;
                let head = atcr_data::parse_cid(&head).map_err(|_| XrpcError::internal())?;
                let blocks = SqlBlocks { conn: tx, did: &d };
                let mut repo = Repo::load(&head, &blocks).map_err(|_| XrpcError::internal())?;
                this.inner
                    .clock
                    .observe(&atcr_syntax::Tid::new(rev).map_err(|_| XrpcError::internal())?);
                let (cid, bytes) = repo.resign(&new_key, this.inner.clock.next());
                let rev = repo.commit().rev.to_string();
                tx.execute(
                    "INSERT INTO repo_block (did, cid, bytes, rev) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (did, cid) DO UPDATE SET rev = excluded.rev",
                    (&d, cid.to_string(), &bytes, &rev),
                )?;
                tx.execute(
                    "UPDATE repo_root SET cid = ?2, rev = ?3 WHERE did = ?1",
                    (&d, cid.to_string(), &rev),
                )?;
                // The DID document changed (#identity) and the head was
                // re-signed without a diff (#sync).
                let now = Datetime::now();
                let backfill = this.inner.cfg.backfill;
                crate::events::sequence(
                    tx,
                    &d,
                    "#identity",
                    firehose::identity_body(&d, Some(&handle), now.as_str()),
                    backfill,
                )?;
                let seq = crate::events::sequence(
                    tx,
                    &d,
                    "#sync",
                    firehose::sync_body(&d, &cid, &bytes, &rev, now.as_str()),
                    backfill,
                )?;
                Ok::<_, PdsError>(seq)
            })
            .await?;
        self.published(seq);
        Ok(new_did_key)
    }
}

/// An account as listed for its operator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    /// The DID.
    pub did: String,
    /// The handle.
    pub handle: String,
    /// Whether it may log in.
    pub active: bool,
    /// When it was created.
    pub created_at: String,
}

/// An app password as listed (never its value).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AppPasswordInfo {
    /// Its name.
    pub name: String,
    /// When it was created.
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

impl Pds {
    /// Every account, by handle.
    pub async fn list_accounts(&self) -> PdsResult<Vec<AccountInfo>> {
        self.db()
            .read(|c| {
                let mut s = c.prepare(
                    "SELECT did, handle, active, created_at FROM account ORDER BY handle",
                )?;
                let rows = s.query_map([], |r| {
                    Ok(AccountInfo {
                        did: r.get(0)?,
                        handle: r.get(1)?,
                        active: r.get::<_, i64>(2)? != 0,
                        created_at: r.get(3)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(PdsError::from)
            })
            .await
    }

    /// Whether an account may act (exists and is not disabled).
    pub async fn is_active(&self, did: &str) -> PdsResult<bool> {
        let d = did.to_owned();
        self.db()
            .read(move |c| {
                c.query_row("SELECT active FROM account WHERE did = ?1", [&d], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
                .map(|a| a == Some(1))
                .map_err(PdsError::from)
            })
            .await
    }

    /// Enables or disables an account (a disabled one cannot log in).
    pub async fn set_active(&self, did: &str, active: bool) -> PdsResult<()> {
        let d = did.to_owned();
        let backfill = self.inner.cfg.backfill;
        let seq = self
            .db()
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE account SET active = ?2 WHERE did = ?1",
                    (&d, i64::from(active)),
                )?;
                if n == 0 {
                    return Ok(None);
                }
                // An operator-disabled account is what the lexicon calls
                // taken down.
                let status = (!active).then_some("takendown");
                let body = firehose::account_body(&d, active, status, Datetime::now().as_str());
                Ok::<_, PdsError>(Some(crate::events::sequence(
                    tx, &d, "#account", body, backfill,
                )?))
            })
            .await?;
        let Some(seq) = seq else {
            return Err(XrpcError::new(400, "AccountNotFound", format!("no account {did}")).into());
        };
        self.published(seq);
        if !active {
            self.notify_revoked(did);
        }
        Ok(())
    }

    /// Replaces an account's password.
    pub async fn set_password(&self, did: &str, password: &str) -> PdsResult<()> {
        if password.len() < 8 {
            return Err(XrpcError::invalid("a password has at least 8 characters").into());
        }
        let hash = self.password_hash(password).await?;
        let d = did.to_owned();
        let n = self
            .db()
            .write(move |tx| {
                tx.execute(
                    "UPDATE account SET password_hash = ?2 WHERE did = ?1",
                    (&d, &hash),
                )
                .map_err(PdsError::from)
            })
            .await?;
        if n == 0 {
            return Err(XrpcError::new(400, "AccountNotFound", format!("no account {did}")).into());
        }
        self.notify_revoked(did);
        Ok(())
    }

    /// Deletes an account: its repository (records, blocks, blobs), keys,
    /// app passwords and sessions, in one transaction. Its DID stays in
    /// the PLC directory (as the reference PDS leaves it); its handle is
    /// free again. Listeners of [`Self::on_revoke`] are told.
    pub async fn delete_account(&self, did: &str) -> PdsResult<()> {
        let d = did.to_owned();
        let backfill = self.inner.cfg.backfill;
        let seq = self
            .db()
            .write(move |tx| {
                // The account's earlier events go with it (as the reference
                // PDS does); the tombstone below tells consumers.
                for t in [
                    "refresh_token",
                    "app_password",
                    "record",
                    "repo_block",
                    "repo_root",
                    "blob",
                    "account_key",
                    "repo_seq",
                ] {
                    tx.execute(&format!("DELETE FROM {t} WHERE did = ?1"), [&d])?;
                }
                if tx.execute("DELETE FROM account WHERE did = ?1", [&d])? == 0 {
                    return Ok(None);
                }
                let body =
                    firehose::account_body(&d, false, Some("deleted"), Datetime::now().as_str());
                Ok::<_, PdsError>(Some(crate::events::sequence(
                    tx, &d, "#account", body, backfill,
                )?))
            })
            .await?;
        let Some(seq) = seq else {
            return Err(XrpcError::new(400, "AccountNotFound", format!("no account {did}")).into());
        };
        self.published(seq);
        self.notify_revoked(did);
        Ok(())
    }

    /// An account's app passwords (names and dates only).
    pub async fn list_app_passwords(&self, did: &str) -> PdsResult<Vec<AppPasswordInfo>> {
        let d = did.to_owned();
        self.db()
            .read(move |c| {
                let mut s = c.prepare(
                    "SELECT name, created_at FROM app_password WHERE did = ?1 ORDER BY name",
                )?;
                let rows = s.query_map([&d], |r| {
                    Ok(AppPasswordInfo {
                        name: r.get(0)?,
                        created_at: r.get(1)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(PdsError::from)
            })
            .await
    }

    /// Revokes an app password; false when there was none by that name.
    pub async fn revoke_app_password(&self, did: &str, name: &str) -> PdsResult<bool> {
        let (d, n) = (did.to_owned(), name.to_owned());
        let gone = self
            .db()
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM app_password WHERE did = ?1 AND name = ?2",
                    (&d, &n),
                )
                .map_err(PdsError::from)
            })
            .await?;
        if gone > 0 {
            self.notify_revoked(did);
        }
        Ok(gone > 0)
    }
}
