//! Registry bearer tokens (the Docker token flow).
//!
//! Tokens are short-lived HS256 JWTs carrying Docker's `access` claim. The
//! registry is both issuer and verifier, so a MAC suffices; its key is
//! derived from the server secret with a label of its own, so a PDS session
//! token (signed with the same secret's other derivation) is never accepted
//! here, and vice versa.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One granted (or requested) resource scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name as the client wrote it, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

impl Access {
    /// Parses `type:name:actions`. Names may contain `:` (raw DIDs), so the
    /// type is before the first `:` and the actions after the last.
    pub fn parse(scope: &str) -> Option<Self> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// True when the scope allows `action` (`*` allows everything).
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }
}

/// Claims of a registry token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer (the registry's public URL).
    pub iss: String,
    /// The DID, or empty for anonymous.
    pub sub: String,
    /// Audience (the service name).
    pub aud: String,
    /// Expiry (unix seconds).
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// Token id.
    pub jti: String,
    /// Granted scopes.
    pub access: Vec<Access>,
}

impl TokenClaims {
    /// True when the token grants `action` on repository `name`.
    pub fn allows(&self, name: &str, action: &str) -> bool {
        self.access
            .iter()
            .any(|a| a.kind == "repository" && a.name == name && a.allows(action))
    }
    /// True for tokens issued without credentials.
    pub fn is_anonymous(&self) -> bool {
        self.sub.is_empty()
    }
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct TokenService {
    enc: EncodingKey,
    dec: DecodingKey,
    issuer: String,
    service: String,
    ttl: Duration,
    /// Tokens already answered 401 for a scope, with their expiry.
    refused: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), u64>>>,
}

/// Most remembered refusals; beyond it expired ones go, then all (a client
/// then merely sees a 401 where it would have seen a 403).
const MAX_REFUSALS: usize = 16_384;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenService {
    /// A service whose key is derived from `secret`.
    pub fn new(secret: &[u8], issuer: String, service: String, ttl: Duration) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(b"atcr registry token key v1\0");
        h.update(secret);
        let key = h.finalize();
        Self {
            enc: EncodingKey::from_secret(&key),
            dec: DecodingKey::from_secret(&key),
            issuer,
            service,
            ttl,
            refused: Default::default(),
        }
    }

    /// Records that the token `claims` lacked `scope`; true when it had
    /// already been refused it. Docker's token flow answers insufficient
    /// scope with 401 and clients fetch a new token; a client that sends the
    /// same token again (oras-py refreshes only on 403) gets a 403 the next
    /// time instead of a 401 loop.
    pub fn refused_again(&self, claims: &TokenClaims, scope: &str) -> bool {
        let now = unix_now();
        let mut m = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_REFUSALS {
            m.retain(|_, exp| *exp > now);
            if m.len() >= MAX_REFUSALS {
                m.clear();
            }
        }
        m.insert((claims.jti.clone(), scope.to_owned()), claims.exp)
            .is_some()
    }

    /// The service name (`service=` of the challenge, `aud` of tokens).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `sub` (empty: anonymous) with `access`.
    pub fn issue(
        &self,
        sub: &str,
        access: Vec<Access>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        use rand::RngCore;
        let now = unix_now();
        let mut jti = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now.saturating_sub(5),
            iat: now,
            jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
            access,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
    }

    /// Verifies signature, issuer, audience and lifetime.
    pub fn verify(&self, token: &str) -> Option<TokenClaims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[&self.service]);
        v.set_issuer(&[&self.issuer]);
        v.leeway = 5;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        jsonwebtoken::decode::<TokenClaims>(token, &self.dec, &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_with_dids_in_names() {
        let a = Access::parse("repository:did:plc:abc/app:pull,push").unwrap();
        assert_eq!(a.name, "did:plc:abc/app");
        assert_eq!(a.actions, ["pull", "push"]);
        assert!(Access::parse("nonsense").is_none());
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_audience() {
        let t = TokenService::new(
            b"k1",
            "http://r".into(),
            "r".into(),
            Duration::from_secs(60),
        );
        let other = TokenService::new(
            b"k2",
            "http://r".into(),
            "r".into(),
            Duration::from_secs(60),
        );
        let tok = t
            .issue(
                "did:plc:x",
                vec![Access::parse("repository:a/b:pull").unwrap()],
            )
            .unwrap();
        let c = t.verify(&tok).unwrap();
        assert!(c.allows("a/b", "pull"));
        assert!(!c.allows("a/b", "push"));
        assert!(!c.allows("a/c", "pull"));
        assert!(other.verify(&tok).is_none());
        let mut forged = tok.clone();
        forged.push('A');
        assert!(t.verify(&forged).is_none());
    }
}
