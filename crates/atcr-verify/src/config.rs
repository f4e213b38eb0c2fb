//! The verifier configuration file (`atcr-verify --config FILE`, or
//! `ATCR_VERIFY_CONFIG`): where identities resolve for a deployment that is
//! not on the public network. `atcr verifier-config` prints one for an ATCR
//! server.
//!
//! ```yaml
//! plcUrl: http://127.0.0.1:5000/plc     # the PLC directory DIDs resolve at
//! plainHttpLoopback: true               # registries and PDSes on loopback over http
//! handleResolvers:                      # handles under these domains resolve here
//!   - url: http://127.0.0.1:5000        # (com.atproto.identity.resolveHandle);
//!     domains: [test]                   # the DID document must still list the handle
//! policy: /etc/atcr/trust.yaml          # optional default trust policy
//! ```
//!
//! Nothing here weakens a check: a handle answered by a configured resolver
//! is accepted only when the DID document (replayed from the directory's
//! signed log) lists it back, exactly as with DNS. What the file decides is
//! whom to ask.

use crate::policy::{PolicyError, parse_yaml, read_file};
use serde::Deserialize;

/// A trusted handle resolver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleResolverEntry {
    /// Base URL of the server.
    pub url: url::Url,
    /// Domains it answers for (`test` covers `alice.test`).
    pub domains: Vec<String>,
}

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyConfigFile {
    /// PLC directory URL.
    pub plc_url: Option<url::Url>,
    /// Plain HTTP to registries and PDSes on loopback addresses.
    #[serde(default)]
    pub plain_http_loopback: bool,
    /// Trusted handle resolvers.
    #[serde(default)]
    pub handle_resolvers: Vec<HandleResolverEntry>,
    /// Default trust policy file (relative to the configuration file).
    pub policy: Option<std::path::PathBuf>,
}

impl VerifyConfigFile {
    /// Parses the YAML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let c: Self = parse_yaml(file, text)?;
        for (i, r) in c.handle_resolvers.iter().enumerate() {
            let bad = |m: String| PolicyError {
                file: file.to_owned(),
                line: 0,
                key: format!("handleResolvers[{i}]"),
                message: m,
            };
            if r.domains.is_empty() {
                return Err(bad("domains: name at least one domain".into()));
            }
            if !matches!(r.url.scheme(), "http" | "https") {
                return Err(bad(format!("url: {} is not http(s)", r.url)));
            }
        }
        Ok(c)
    }

    /// Reads a configuration file; a relative `policy` is made relative to it.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let mut c = Self::parse(&path.display().to_string(), &read_file(path)?)?;
        if let Some(p) = &c.policy
            && p.is_relative()
            && let Some(dir) = path.parent()
        {
            c.policy = Some(dir.join(p));
        }
        Ok(c)
    }

    /// The identity resolver settings it gives (over `base`).
    pub fn apply(&self, base: &mut atcr_identity::ResolverConfig) {
        if let Some(u) = &self.plc_url {
            base.plc_url = u.clone();
        }
        base.handle_resolvers = self
            .handle_resolvers
            .iter()
            .map(|r| atcr_identity::HandleResolver {
                domains: r.domains.clone(),
                url: r.url.clone(),
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_errors_with_their_line() {
        let c = VerifyConfigFile::parse(
            "v.yaml",
            "plcUrl: http://127.0.0.1:5000/plc\nplainHttpLoopback: true\nhandleResolvers:\n  - url: http://127.0.0.1:5000\n    domains: [test]\n",
        )
        .unwrap();
        assert!(c.plain_http_loopback);
        let mut r = atcr_identity::ResolverConfig::default();
        c.apply(&mut r);
        assert_eq!(r.plc_url.as_str(), "http://127.0.0.1:5000/plc");
        assert!(r.handle_resolvers[0].covers("alice.test"));
        assert!(!r.handle_resolvers[0].covers("alice.example"));
        assert!(!r.handle_resolvers[0].covers("test"));
        let e = VerifyConfigFile::parse("v.yaml", "plcUrl: x\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "plcUrl"));
        let e = VerifyConfigFile::parse("v.yaml", "plainHttp: true\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(
            VerifyConfigFile::parse(
                "v.yaml",
                "handleResolvers:\n  - url: http://a\n    domains: []\n"
            )
            .is_err()
        );
    }
}
