//! Browser sessions: the cookie, the session stored in the index (so every
//! replica knows it and signing out ends it), CSRF tokens, and the checks
//! every state-changing form passes.

use atcr_registry::index::WebSession;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use sha2::Digest as _;

/// The session cookie.
pub const SESSION_COOKIE: &str = "atcr_session";
/// The sign-in form's CSRF cookie (before there is a session).
pub const SIGNIN_COOKIE: &str = "atcr_signin";
/// Sessions an account keeps at most (the oldest end first).
pub const MAX_PER_ACCOUNT: usize = 16;

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the index stores for a cookie token: its SHA-256, so a copy of the
/// database holds no usable session.
pub fn stored_id(token: &str) -> String {
    let h = sha2::Sha256::digest(token.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request. Parsed by hand: the `Cookie`
/// header is `name=value` pairs split by `;`, and the values ATCR sets are
/// base64url, so no unquoting or decoding is needed.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure`
/// when the registry is served over TLS. `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("atcr_invalid=; Max-Age=0"))
}

/// Refuses a state-changing request that another site started: its
/// `Origin` (or, without one, `Sec-Fetch-Site`) must be this registry.
/// Browsers send one or the other on every POST; the CSRF token is checked
/// besides.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.to_str().is_ok_and(|o| o == origin);
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

/// A signed-in visitor.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The session.
    pub session: WebSession,
    /// Its stored id (the cookie token's hash).
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[
            ("cookie", "a=1; atcr_session_x=2"),
            ("cookie", "atcr_session=abc"),
        ]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
        assert_eq!(
            cookie(&headers(&[("cookie", "garbage")]), SESSION_COOKIE),
            None
        );
    }

    #[test]
    fn cookies_are_secure_over_tls_only() {
        let c = set_cookie(SESSION_COOKIE, "t", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.ends_with("; Secure"));
        assert!(
            !set_cookie(SESSION_COOKIE, "t", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    #[test]
    fn only_this_origin_may_post() {
        let o = "https://r.example";
        assert!(same_origin(&headers(&[("origin", o)]), o));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            o
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), o));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            o
        ));
        assert!(same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            o
        ));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab") && !same("", "a"));
        assert_ne!(random_token(), random_token());
        assert_eq!(stored_id("t").len(), 64);
    }
}
