//! Identity and authentication: who owns a repository name, logins checked by the owner's PDS
//! (cached, throttled), the PDS session each owner's records are written with, registry tokens
//! and their revocation (shared between replicas through the index).

use super::*;

/// How long a checked login is reused.
const CREDENTIAL_CACHE: Duration = Duration::from_secs(300);
/// How long an embedded account's handle → DID answer is reused (remote
/// handles are cached by the identity resolver).
const HANDLE_CACHE: Duration = Duration::from_secs(10);

impl Registry {
    /// The repository a name addresses, its owner resolved.
    pub async fn resolve(&self, name: &RepoName) -> Result<Repository> {
        Ok(Repository::new(name.clone(), self.owner_did(name).await?))
    }

    /// The DID a repository name belongs to.
    pub async fn owner_did(&self, name: &RepoName) -> Result<Did> {
        match name.owner() {
            Owner::Did(d) => Ok(d.clone()),
            Owner::Handle(h) => {
                if let Some((did, at)) = self
                    .inner
                    .handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(h.as_str())
                    && at.elapsed() < HANDLE_CACHE
                {
                    return Ok(did.clone());
                }
                if let Some(pds) = &self.inner.pds
                    && let Ok(found) = pds.lookup_did(h.as_str()).await
                {
                    let found = Did::new(found)
                        .map_err(|e| Error::Internal(format!("a DID the PDS keeps: {e}")))?;
                    self.inner
                        .handles
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(h.to_string(), (found.clone(), Instant::now()));
                    return Ok(found);
                }
                let ident = AtIdentifier::Handle(h.clone());
                match self.inner.resolver.resolve(&ident).await {
                    Ok(r) => Ok(r.did),
                    Err(e) if e.is_transient() => {
                        Err(Error::Unavailable(format!("resolving {h}: {e}")))
                    }
                    Err(e) => Err(Error::NameUnknown(format!(
                        "owner {h} does not resolve to a DID: {e}"
                    ))),
                }
            }
        }
    }

    /// Checks `user` (handle or DID) + password against the user's PDS;
    /// returns the DID. Remote sessions are kept for record writes.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<String> {
        let key: [u8; 32] = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(&self.inner.cfg.secret);
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if let Some((did, at)) = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < CREDENTIAL_CACHE
        {
            return Ok(did.clone());
        }
        // One answer for an unknown user, a wrong password and an identity
        // that does not resolve: the caller learns nothing about accounts.
        let denied = || Error::BadCredentials;
        let did = match self.embedded_account(user).await {
            Some(_) => {
                let pds = self.inner.pds.as_ref().ok_or_else(denied)?;
                pds.login(user, password).await.map_err(|_| denied())?.did
            }
            None => {
                let ident: AtIdentifier = user.parse().map_err(|_| denied())?;
                let id = match self.inner.resolver.resolve(&ident).await {
                    Ok(id) => id,
                    Err(e) if e.is_transient() => {
                        tracing::info!(%user, "login: identity not resolvable now: {e}");
                        return Err(Error::Unavailable(
                            "the account's identity cannot be resolved right now; try again".into(),
                        ));
                    }
                    Err(e) => {
                        tracing::info!(%user, "login refused: {e}");
                        return Err(denied());
                    }
                };
                // The DID document chose this URL: only where egress allows.
                let origin = id.pds.origin().ascii_serialization();
                if let Err(e) = self.inner.egress.check_url(&id.pds) {
                    tracing::warn!(%user, pds = %id.pds, "login refused: {e}");
                    return Err(denied());
                }
                let unavailable = || {
                    Error::Unavailable("the account's PDS is unavailable; try again later".into())
                };
                if self.pds_recently_failed(&origin) {
                    return Err(unavailable());
                }
                let client = atcr_xrpc::PdsClient::new(id.pds.clone(), self.inner.http.clone());
                let s = client.create_session(user, password).await.map_err(|e| {
                    if e.is_transient() {
                        tracing::warn!(%user, pds = %id.pds, "login: PDS unavailable: {e}");
                        self.pds_failed(&origin);
                        unavailable()
                    } else {
                        tracing::info!(%user, pds = %id.pds, "login refused by the PDS: {e}");
                        denied()
                    }
                })?;
                if s.did != id.did.as_str() {
                    return Err(denied());
                }
                self.inner
                    .index
                    .save_session(
                        &s.did,
                        &StoredSession {
                            pds: id.pds.to_string(),
                            handle: s.handle.clone(),
                            access_jwt: s.access_jwt.clone(),
                            refresh_jwt: s.refresh_jwt.clone(),
                        },
                    )
                    .await?;
                s.did
            }
        };
        let mut cache = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CREDENTIAL_CACHE);
        }
        cache.insert(key, (did.clone(), Instant::now()));
        Ok(did)
    }

    pub(crate) fn pds_recently_failed(&self, origin: &str) -> bool {
        let mut m = self
            .inner
            .pds_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.retain(|_, at| at.elapsed() < PDS_FAILURE_TTL);
        m.contains_key(origin)
    }

    pub(crate) fn pds_failed(&self, origin: &str) {
        let mut m = self
            .inner
            .pds_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() < 10_000 {
            m.insert(origin.to_owned(), Instant::now());
        }
    }

    /// Ends `did`'s registry tokens issued so far and its cached logins
    /// (an app password was revoked, the password changed, the account was
    /// disabled).
    pub fn revoke(&self, did: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.revoke_locally(did, now);
        tracing::info!(target: "atcr::auth", did, "credentials revoked: tokens and cached logins dropped");
        if self.inner.index.shared() {
            // Every replica applies it (see `sync_revocations`).
            let (index, did) = (self.inner.index.clone(), did.to_owned());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = index.save_revocation(&did, now as i64).await {
                        tracing::error!(target: "atcr::auth", did, "revocation not shared with other replicas: {e}");
                    }
                });
            }
        }
    }

    /// Applies revocations other replicas recorded since `since` (Unix
    /// seconds); returns the newest seen. Run every second on a shared
    /// index: a token or cached login revoked elsewhere is refused here
    /// within about a second.
    pub async fn sync_revocations(&self, since: i64) -> Result<i64> {
        let mut newest = since;
        for (did, at) in self.inner.index.revocations_since(since).await? {
            newest = newest.max(at);
            let known = self.revoked_at(&did);
            if known.is_some_and(|k| k >= at as u64) {
                continue;
            }
            self.revoke_locally(&did, at as u64);
        }
        Ok(newest)
    }

    /// In this process: tokens issued before `at` are void, cached logins
    /// and handles of `did` are dropped (a deleted account's handle may be
    /// taken by another account).
    fn revoke_locally(&self, did: &str, at: u64) {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(did.to_owned(), at);
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (d, _)| d.as_str() != did);
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (d, _)| d.as_str() != did);
    }

    /// Verifies a bearer token: signature, audience, lifetime, and not
    /// issued before its subject's credentials were revoked.
    pub fn verify_token(&self, token: &str) -> Option<token::TokenClaims> {
        let c = self.inner.tokens.verify(token)?;
        let revoked = self
            .inner
            .revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.sub)
            .copied();
        match revoked {
            Some(at) if c.iat <= at => None,
            _ => Some(c),
        }
    }

    /// Push-path metrics.
    pub fn metrics(&self) -> &metrics::RegistryMetrics {
        &self.inner.metrics
    }

    /// Failed-login throttling of `/auth/token`.
    pub fn failed_logins(&self) -> &atcr_pds::throttle::FailedLogins {
        &self.inner.failed_logins
    }

    /// The DID of an embedded account named by handle or DID.
    pub(crate) async fn embedded_account(&self, user: &str) -> Option<String> {
        self.inner.pds.as_ref()?.lookup_did(user).await.ok()
    }

    /// Grants the requested scopes to `did` (None: anonymous): pull for
    /// public repositories, push and delete only under names that resolve to
    /// the caller's own DID.
    pub async fn grant(&self, did: Option<&str>, requested: &[String]) -> Result<Vec<Access>> {
        let mut out = vec![];
        for s in requested {
            let Some(a) = Access::parse(s) else {
                return Err(Error::Denied(format!("invalid scope {s:?}")));
            };
            if a.kind == "registry" && a.name == "catalog" {
                if did.is_some() || self.inner.cfg.anonymous_pull {
                    out.push(Access {
                        actions: a.actions.iter().filter(|x| *x == "*").cloned().collect(),
                        ..a
                    });
                }
                continue;
            }
            if a.kind != "repository" {
                continue;
            }
            // A token for a name no request can use would only send clients
            // into retries: refuse it with the reason.
            let name = RepoName::parse(&a.name)?;
            let mut actions = vec![];
            let wants_write = a.actions.iter().any(|x| x != "pull");
            let own = match (did, wants_write) {
                (Some(d), true) => self
                    .owner_did(&name)
                    .await
                    .is_ok_and(|owner| owner.as_str() == d),
                _ => false,
            };
            for act in &a.actions {
                let ok = match act.as_str() {
                    "pull" => did.is_some() || self.inner.cfg.anonymous_pull,
                    "push" | "delete" | "*" => own,
                    // Any identity may attach a co-signature; each is checked
                    // against the signer's PDS (`cosign_put`).
                    "sign" => did.is_some(),
                    _ => false,
                };
                if ok && !actions.contains(act) {
                    actions.push(act.clone());
                }
            }
            if !actions.is_empty() {
                out.push(Access { actions, ..a });
            }
        }
        Ok(out)
    }

    pub(crate) async fn owner_pds(&self, did: &str) -> Result<Box<dyn OwnerPds>> {
        if let Some(pds) = &self.inner.pds
            && pds.lookup_did(did).await.is_ok()
        {
            return Ok(Box::new(EmbeddedOwner {
                pds: pds.clone(),
                did: did.to_owned(),
            }));
        }
        let s = self.inner.index.session(did).await?.ok_or_else(|| {
            Error::Denied(format!(
                "no PDS session for {did}: log in to the registry again"
            ))
        })?;
        let base = Url::parse(&s.pds).map_err(|e| Error::Internal(e.to_string()))?;
        self.inner
            .egress
            .check_url(&base)
            .map_err(|e| Error::Denied(format!("{did}'s PDS: {e}")))?;
        let client = atcr_xrpc::PdsClient::new(base, self.inner.http.clone());
        client.set_session(Some(atcr_xrpc::Session {
            did: did.to_owned(),
            handle: s.handle,
            access_jwt: s.access_jwt,
            refresh_jwt: s.refresh_jwt,
        }));
        Ok(Box::new(RemoteOwner {
            client,
            did: did.to_owned(),
            index: self.inner.index.clone(),
        }))
    }
}
