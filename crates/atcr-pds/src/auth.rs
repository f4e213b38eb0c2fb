//! Session tokens (HS256 JWTs) and password hashing.

use crate::{Pds, PdsError, PdsResult};
use atcr_sqlite::rusqlite;
use atcr_xrpc::XrpcError;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScope {
    /// Full access (logged in with the account password).
    Access,
    /// App-password access (no account management).
    AppPass,
    /// Refresh only.
    Refresh,
}

impl AuthScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "com.atproto.access",
            Self::AppPass => "com.atproto.appPass",
            Self::Refresh => "com.atproto.refresh",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [Self::Access, Self::AppPass, Self::Refresh]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Scope name.
    pub scope: String,
    /// The account DID.
    pub sub: String,
    /// The PDS's service DID.
    pub aud: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expires at (seconds).
    pub exp: i64,
    /// Token id (refresh tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// The scope, parsed.
    pub fn auth_scope(&self) -> Option<AuthScope> {
        AuthScope::parse(&self.scope)
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub(crate) fn hash_password(pw: &str) -> String {
    use argon2::password_hash::{PasswordHasher, phc::PasswordHash};
    let hash: Result<PasswordHash, _> = argon2::Argon2::default().hash_password(pw.as_bytes());
    hash.map(|h| h.to_string()).unwrap_or_default()
}

/// Checks a password against a PHC string (constant-time compare inside argon2).
pub(crate) fn verify_password(pw: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(pw.as_bytes(), &h)
            .is_ok()
    })
}

impl Pds {
    fn sign_token(&self, claims: &Claims, typ: &str) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(&self.inner.cfg.jwt_secret),
        )
        .expect("HS256 signing of plain claims cannot fail")
    }

    /// Issues an access and a refresh token, recording the refresh token.
    pub(crate) fn issue_tokens(
        &self,
        tx: &rusqlite::Transaction<'_>,
        did: &str,
        app_password: Option<&str>,
    ) -> rusqlite::Result<(String, String)> {
        let cfg = &self.inner.cfg;
        let now = now_secs();
        let scope = if app_password.is_some() {
            AuthScope::AppPass
        } else {
            AuthScope::Access
        };
        let access = Claims {
            scope: scope.as_str().into(),
            sub: did.into(),
            aud: cfg.service_did.clone(),
            iat: now,
            exp: now + cfg.access_ttl.as_secs() as i64,
            jti: None,
        };
        let jti = random_token(24);
        let refresh_exp = now + cfg.refresh_ttl.as_secs() as i64;
        let refresh = Claims {
            scope: AuthScope::Refresh.as_str().into(),
            sub: did.into(),
            aud: cfg.service_did.clone(),
            iat: now,
            exp: refresh_exp,
            jti: Some(jti.clone()),
        };
        tx.execute(
            "INSERT INTO refresh_token (jti, did, app_password, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
            (&jti, did, app_password, refresh_exp * 1000),
        )?;
        tx.execute(
            "DELETE FROM refresh_token WHERE did = ?1 AND expires_at_ms < ?2",
            (did, now * 1000),
        )?;
        Ok((
            self.sign_token(&access, "at+jwt"),
            self.sign_token(&refresh, "refresh+jwt"),
        ))
    }

    /// Verifies a token's signature, expiry, audience and scope.
    pub fn verify_token(&self, token: &str, allowed: &[AuthScope]) -> Result<Claims, XrpcError> {
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&[&self.inner.cfg.service_did]);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.inner.cfg.jwt_secret),
            &v,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => XrpcError::expired_token(),
            _ => XrpcError::invalid_token("Token could not be verified"),
        })?;
        match data.claims.auth_scope() {
            Some(s) if allowed.contains(&s) => Ok(data.claims),
            _ => Err(XrpcError::invalid_token("Bad token scope")),
        }
    }

    /// Checks `Basic admin:<password>` credentials.
    pub fn verify_admin(&self, basic: &str) -> Result<(), XrpcError> {
        use base64::Engine;
        let Some(expected) = &self.inner.cfg.admin_password else {
            return Err(XrpcError::auth_required(
                "admin access is disabled (no admin password configured)",
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .unwrap_or_default();
        let ok = decoded
            .strip_prefix(b"admin:")
            .is_some_and(|p| constant_eq(p, expected.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(XrpcError::auth_required("Invalid admin credentials"))
        }
    }

    /// Exchanges a refresh token for a new pair (the old one is revoked).
    pub async fn refresh_session(&self, token: &str) -> PdsResult<(String, String, String)> {
        let claims = self.verify_token(token, &[AuthScope::Refresh])?;
        let jti = claims
            .jti
            .clone()
            .ok_or_else(|| XrpcError::invalid_token("refresh token without id"))?;
        let this = self.clone();
        self.db()
            .write(move |tx| {
                let app: Option<Option<String>> = {
                    use rusqlite::OptionalExtension;
                    tx.query_row(
                        "SELECT app_password FROM refresh_token WHERE jti = ?1 AND did = ?2",
                        (&jti, &claims.sub),
                        |r| r.get(0),
                    )
                    .optional()?
                };
                let Some(app) = app else {
                    return Err(PdsError(XrpcError::new(
                        400,
                        "ExpiredToken",
                        "Token has been revoked",
                    )));
                };
                tx.execute("DELETE FROM refresh_token WHERE jti = ?1", [&jti])?;
                let (a, r) = this.issue_tokens(tx, &claims.sub, app.as_deref())?;
                Ok((claims.sub.clone(), a, r))
            })
            .await
    }

    /// Revokes a refresh token (logout).
    pub async fn delete_session(&self, token: &str) -> PdsResult<()> {
        let claims = self.verify_token(token, &[AuthScope::Refresh])?;
        let jti = claims.jti.unwrap_or_default();
        self.db()
            .write(move |tx| {
                tx.execute("DELETE FROM refresh_token WHERE jti = ?1", [jti])?;
                Ok::<_, PdsError>(())
            })
            .await
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
