//! What the containerd verifier and the Ratify plugin share: their settings
//! file, a verification of one image under a deadline with an optional
//! on-disk verdict cache (each pull is a new process) and offline bundles.
//!
//! ```yaml
//! # /etc/atcr/containerd-verifier.yaml (or $ATCR_CONTAINERD_VERIFIER_CONFIG)
//! registries: [atcr.example.com]        # images of these registries are verified
//! otherImages: allow                    # allow | deny: images of other registries
//! verifierConfig: /etc/atcr/verify.yaml # plcUrl, handleResolvers, plainHttpLoopback (see docs/verify.md)
//! policy: /etc/atcr/policy.yaml         # trust policy; default: one valid owner signature
//! credentials:                          # registry credentials (none: anonymous pulls)
//!   - {registry: atcr.example.com, username: ci.example.com, password: "app-password"}
//! cacheDir: /var/cache/atcr-verify      # verdicts reused across pulls (definitive ones only)
//! cacheTtlSecs: 300
//! bundleDir: /etc/atcr/bundles          # offline bundles, by digest: sha256-<hex>.json
//! deadlineMs: 8000                      # decide well inside containerd's 10 s
//! ```

use atcr_verify::bundle::Bundle;
use atcr_verify::config::VerifyConfigFile;
use atcr_verify::oci::Credentials;
use atcr_verify::policy::TrustPolicy;
use atcr_verify::{Decision, ImageRef, Report, Verifier, VerifierConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Registry credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEntry {
    /// Registry host.
    pub registry: String,
    /// User name (handle or DID).
    pub username: String,
    /// App password.
    pub password: String,
}

/// The settings file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// Registries whose images are verified.
    #[serde(default)]
    pub registries: Vec<String>,
    /// `allow` or `deny` for images of other registries.
    #[serde(default = "allow")]
    pub other_images: String,
    /// The verifier configuration file.
    pub verifier_config: Option<PathBuf>,
    /// The trust policy file.
    pub policy: Option<PathBuf>,
    /// Registry credentials.
    #[serde(default)]
    pub credentials: Vec<CredentialEntry>,
    /// Verdict cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Verdict lifetime.
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    /// Offline bundle directory.
    pub bundle_dir: Option<PathBuf>,
    /// Deadline of one decision.
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
}

fn allow() -> String {
    "allow".into()
}
fn default_ttl() -> u64 {
    300
}
fn default_deadline() -> u64 {
    8000
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            registries: vec![],
            other_images: allow(),
            verifier_config: None,
            policy: None,
            credentials: vec![],
            cache_dir: None,
            cache_ttl_secs: default_ttl(),
            bundle_dir: None,
            deadline_ms: default_deadline(),
        }
    }
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Reads the settings file; errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses settings YAML.
    pub fn parse(file: &str, text: &str) -> Result<Self, SettingsError> {
        let s: Self =
            serde_norway::from_str(text).map_err(|e| SettingsError(format!("{file}: {e}")))?;
        if !matches!(s.other_images.as_str(), "allow" | "deny") {
            return Err(SettingsError(format!(
                "{file}: otherImages: {:?} is not allow or deny",
                s.other_images
            )));
        }
        if s.deadline_ms == 0 {
            return Err(SettingsError(format!(
                "{file}: deadlineMs: must be positive"
            )));
        }
        Ok(s)
    }

    /// The deadline of one decision.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The policy (the settings' own, or the verifier configuration's).
    pub fn trust_policy(&self, file: &VerifyConfigFile) -> Result<TrustPolicy, SettingsError> {
        match self.policy.as_ref().or(file.policy.as_ref()) {
            Some(p) => TrustPolicy::load(p).map_err(|e| SettingsError(e.to_string())),
            None => Ok(TrustPolicy::owner_only()),
        }
    }

    /// The verifier configuration file's content.
    pub fn verifier_file(&self) -> Result<VerifyConfigFile, SettingsError> {
        match &self.verifier_config {
            Some(p) => VerifyConfigFile::load(p).map_err(|e| SettingsError(e.to_string())),
            None => Ok(VerifyConfigFile::default()),
        }
    }

    /// Whether `host` is a registry these settings verify.
    pub fn checks(&self, policy: &TrustPolicy, host: &str) -> bool {
        let Ok(h) = policy.canonical_host(host) else {
            return false;
        };
        self.registries
            .iter()
            .any(|r| policy.canonical_host(r).ok().as_deref() == Some(h.as_str()))
    }

    /// The verifier settings.
    pub fn verifier_config(&self, file: &VerifyConfigFile) -> VerifierConfig {
        let mut identity = atcr_verify::ResolverConfig::default();
        file.apply(&mut identity);
        VerifierConfig {
            identity,
            plain_http_loopback: file.plain_http_loopback,
            credentials: self
                .credentials
                .iter()
                .map(|c| {
                    (
                        c.registry.clone(),
                        Credentials {
                            username: c.username.clone(),
                            password: c.password.clone(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// One signature, as a verdict carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureSummary {
    /// The signature artifact.
    pub artifact: Option<String>,
    /// Signer DID.
    pub did: String,
    /// Signer handle, when verified.
    pub handle: Option<String>,
    /// Signing time from the signed record.
    pub signed_at: Option<String>,
    /// Commit CID of the proof.
    pub commit_cid: Option<String>,
    /// Valid.
    pub valid: bool,
    /// Trusted by the policy.
    pub trusted: bool,
    /// Why not, if not.
    pub reason: Option<String>,
}

/// What a verification concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Allowed.
    pub allowed: bool,
    /// One line: why.
    pub reason: String,
    /// The verified digest.
    pub digest: Option<String>,
    /// Every signature considered.
    #[serde(default)]
    pub signatures: Vec<SignatureSummary>,
}

/// A report as a verdict: the decision and its first reason.
pub fn verdict_of(r: &Report) -> Verdict {
    let (allowed, reason) = match r.decision {
        Decision::Pass => {
            let (valid, trusted) = r.counts();
            (
                true,
                format!(
                    "verified {} ({} valid, {trusted} trusted signature(s){})",
                    r.image,
                    valid,
                    r.policy
                        .as_deref()
                        .map(|p| format!(", policy {p}"))
                        .unwrap_or_default()
                ),
            )
        }
        Decision::Fail => (
            false,
            match (r.reasons.first(), r.details.first()) {
                (Some(c), Some(d)) => format!("{}: {}: {d}", r.image, c.code()),
                _ => format!("{}: verification failed", r.image),
            },
        ),
    };
    Verdict {
        allowed,
        reason,
        digest: r.digest.clone(),
        signatures: r
            .signatures
            .iter()
            .map(|s| SignatureSummary {
                artifact: s.artifact.clone(),
                did: s.did.clone(),
                handle: s.handle.clone(),
                signed_at: s.signed_at.clone(),
                commit_cid: s.commit_cid.clone(),
                valid: s.valid,
                trusted: s.trusted,
                reason: s.reason.map(|r| r.code().to_owned()),
            })
            .collect(),
    }
}

fn cache_path(dir: &Path, key: &str) -> PathBuf {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(key.as_bytes());
    dir.join(format!(
        "{}.json",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

#[derive(Serialize, Deserialize)]
struct Cached {
    expires: u64,
    verdict: Verdict,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A cached verdict for `key`, if fresh.
pub fn cached(settings: &Settings, key: &str) -> Option<Verdict> {
    let dir = settings.cache_dir.as_ref()?;
    let c: Cached = serde_json::from_slice(&std::fs::read(cache_path(dir, key)).ok()?).ok()?;
    (c.expires > now()).then_some(c.verdict)
}

/// Stores a verdict (atomically: a temporary file renamed into place).
pub fn remember(settings: &Settings, key: &str, v: &Verdict) {
    let Some(dir) = &settings.cache_dir else {
        return;
    };
    let c = Cached {
        expires: now() + settings.cache_ttl_secs,
        verdict: v.clone(),
    };
    let path = cache_path(dir, key);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let ok = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(&c).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The offline bundle for `digest` in the bundle directory, if any.
pub fn bundle_for(settings: &Settings, digest: &str) -> Result<Option<Bundle>, SettingsError> {
    let Some(dir) = &settings.bundle_dir else {
        return Ok(None);
    };
    let path = dir.join(format!("{}.json", digest.replace(':', "-")));
    match std::fs::read(&path) {
        Ok(b) => Bundle::parse(&b)
            .map(Some)
            .map_err(|e| SettingsError(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SettingsError(format!("{}: {e}", path.display()))),
    }
}

/// Why a verification gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    /// The settings or a file they name.
    #[error("configuration: {0}")]
    Config(String),
    /// The network, registry or PDS.
    #[error("could not verify: {0}")]
    Unavailable(String),
    /// The deadline passed.
    #[error("could not verify within {0:?}")]
    Deadline(Duration),
}

/// Verifies `image` under the settings, within their deadline; the verdict
/// (from the cache or a bundle when they have it) and whether it came from
/// the cache.
pub async fn verify(
    settings: &Settings,
    image: &ImageRef,
    cache_key: &str,
) -> Result<(Verdict, bool), Incomplete> {
    if let Some(v) = cached(settings, cache_key) {
        return Ok((v, true));
    }
    let file = settings
        .verifier_file()
        .map_err(|e| Incomplete::Config(e.0))?;
    let policy = settings
        .trust_policy(&file)
        .map_err(|e| Incomplete::Config(e.0))?;
    let mut cfg = settings.verifier_config(&file);
    if let atcr_verify::Reference::Digest(d) = &image.reference {
        cfg.offline = bundle_for(settings, &d.to_string()).map_err(|e| Incomplete::Config(e.0))?;
    }
    let verifier = Verifier::new(cfg).map_err(|e| Incomplete::Config(e.to_string()))?;
    let report = tokio::time::timeout(settings.deadline(), verifier.verify(image, &policy))
        .await
        .map_err(|_| Incomplete::Deadline(settings.deadline()))?
        .map_err(|e| match e.exit_code() {
            3 => Incomplete::Unavailable(e.to_string()),
            _ => Incomplete::Config(e.to_string()),
        })?;
    let v = verdict_of(&report);
    if !report.transient {
        remember(settings, cache_key, &v);
    }
    Ok((v, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_bad_values() {
        let s = Settings::parse(
            "s.yaml",
            "registries: [127.0.0.1:5000]\notherImages: deny\ndeadlineMs: 100\ncredentials:\n  - {registry: h, username: u, password: p}\n",
        )
        .unwrap();
        assert_eq!(s.other_images, "deny");
        assert_eq!(s.deadline(), Duration::from_millis(100));
        assert!(s.checks(&TrustPolicy::owner_only(), "127.0.0.1:05000"));
        assert!(!s.checks(&TrustPolicy::owner_only(), "other.io"));
        for bad in [
            "otherImages: maybe\n",
            "deadlineMs: 0\n",
            "colour: red\n",
            "registries: 3\n",
        ] {
            assert!(Settings::parse("s.yaml", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cache_keeps_fresh_verdicts_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings {
            cache_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        let v = Verdict {
            allowed: true,
            reason: "ok".into(),
            digest: None,
            signatures: vec![],
        };
        remember(&s, "k", &v);
        assert_eq!(cached(&s, "k"), Some(v.clone()));
        assert_eq!(cached(&s, "other"), None);
        s.cache_ttl_secs = 0;
        remember(&s, "k2", &v);
        assert_eq!(cached(&s, "k2"), None);
    }
}
