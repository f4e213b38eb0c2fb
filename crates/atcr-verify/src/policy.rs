//! Trust policies (DESIGN §7), read from YAML.
//!
//! ```yaml
//! version: 1.0
//! trustedDIDs:                      # or a plain list of DIDs
//!   did:plc:security:
//!     name: Security team
//!     validFrom: "2026-01-01T00:00:00Z"
//!     expiresAt: null
//! policies:
//!   - name: production
//!     scope: "atcr.io/*/prod-**"    # `*` one path segment, `**` across
//!     require: {signature: true}    # the list form `- signature: true` too
//!     trustedDIDs: [owner, did:plc:security]
//!     minSignatures: 2              # distinct trusted signers
//!     maxAge: 90d
//!     action: enforce               # or audit
//! defaults:                         # for images no scope matches
//!   action: audit
//! ```
//!
//! Every value is checked while parsing, so an error names the file, the line
//! and the key path.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct PolicyError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// Key path (`policies[0].maxAge`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// `enforce` or `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A violation fails verification.
    #[default]
    Enforce,
    /// A violation is reported as a warning only.
    Audit,
}

/// A DID, or `owner` (the image's own namespace DID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signer {
    /// The image's owner.
    Owner,
    /// A DID.
    Did(String),
}

impl TryFrom<String> for Signer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "owner" {
            return Ok(Self::Owner);
        }
        check_did(&s)
            .map(|()| Self::Did(s.clone()))
            .map_err(|e| format!("neither `owner` nor a usable DID: {e}"))
    }
}

impl<'de> Deserialize<'de> for Signer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An RFC 3339 time, as unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        atcr_syntax::Datetime::parse(&s)
            .map(|t| Self(t.unix_seconds()))
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

/// A duration written `90d`, `12h`, `30m`, `45s` or `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub i64);

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad =
            || serde::de::Error::custom(format!("{s:?} is not a duration like 90d, 12h, 30m"));
        let unit = s.chars().last().ok_or_else(bad)?;
        let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        if n <= 0 {
            return Err(bad());
        }
        Ok(Self(n.saturating_mul(secs)))
    }
}

/// A scope glob over `HOST/OWNER/REPO`, kept in canonical form: the host
/// normalised (and mapped through the policy's aliases) and the owner
/// written as a raw DID, or as a handle to be resolved to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    text: String,
    /// The canonical glob; a handle owner is `{}` until resolved.
    pattern: String,
    /// The owner named by handle, matched through its DID.
    owner_handle: Option<atcr_syntax::Handle>,
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text, &BTreeMap::new()).map_err(serde::de::Error::custom)
    }
}

impl Scope {
    /// Parses a scope, normalising its host (through `aliases`: alias →
    /// canonical host) and its owner.
    pub fn new(text: &str, aliases: &BTreeMap<String, String>) -> Result<Self, String> {
        let bad = |why: &str| format!("{text:?} is not a scope: {why}");
        if text.is_empty() || text.contains("***") || text.chars().any(char::is_whitespace) {
            return Err(bad("HOST/OWNER/REPO with * and ** wildcards"));
        }
        let mut segs: Vec<String> = text.split('/').map(str::to_owned).collect();
        if segs.iter().any(String::is_empty) {
            return Err(bad("empty path segment"));
        }
        // The host.
        if !segs[0].contains('*') {
            let h = crate::canonical_host(&segs[0]).map_err(|e| bad(&e))?;
            segs[0] = aliases.get(&h).cloned().unwrap_or(h);
        } else {
            segs[0] = segs[0].to_ascii_lowercase();
        }
        // The owner, unless a `**` before it spans it.
        let mut owner_handle = None;
        if segs[0] != "**" && segs.len() > 1 {
            let o = &segs[1];
            if o == "*" || o == "**" {
            } else if o.contains('*') {
                return Err(bad(
                    "the owner is `*`, `**`, a handle or a DID: images are matched by their owner's DID, so a partial wildcard there cannot be honoured",
                ));
            } else if o.starts_with("did:") || o.starts_with("did-") {
                let name =
                    atcr_oci::RepoName::parse(&format!("{o}/x")).map_err(|e| bad(&e.message))?;
                let atcr_oci::Owner::Did(did) = name.owner() else {
                    return Err(bad("malformed DID owner"));
                };
                check_did(did.as_str()).map_err(|e| bad(&e))?;
                segs[1] = did.to_string();
            } else {
                let h = atcr_syntax::Handle::new(o).map_err(|e| bad(&e.to_string()))?;
                segs[1] = "{}".into();
                owner_handle = Some(h);
            }
        }
        Ok(Self {
            text: text.to_owned(),
            pattern: segs.join("/"),
            owner_handle,
        })
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The handle this scope names its owner by, if any.
    pub fn owner_handle(&self) -> Option<&atcr_syntax::Handle> {
        self.owner_handle.as_ref()
    }

    /// Whether the canonical image identity `HOST/DID/REPO` matches;
    /// `handle_did` is the DID the scope's owner handle resolved to (`None`:
    /// it names no identity, so the scope matches nothing).
    pub fn matches(&self, canonical: &str, handle_did: Option<&str>) -> bool {
        match (&self.owner_handle, handle_did) {
            (None, _) => glob(self.pattern.as_bytes(), canonical.as_bytes()),
            (Some(_), Some(did)) => glob(
                self.pattern.replacen("{}", did, 1).as_bytes(),
                canonical.as_bytes(),
            ),
            (Some(_), None) => false,
        }
    }

    /// Whether the scope's host part could match `host` (canonical): a
    /// cheap filter before resolving a handle owner.
    pub fn may_match_host(&self, host: &str) -> bool {
        let first = self.pattern.split('/').next().unwrap_or_default();
        first.starts_with("**") || glob(first.as_bytes(), host.as_bytes())
    }

    /// Specificity, on the canonical form (so spelling does not change it):
    /// more literal characters win, then fewer `**`, then fewer `*`. A
    /// literal owner counts as one character whether handle or DID.
    fn specificity(&self) -> (usize, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let mut segs: Vec<&str> = self.pattern.split('/').collect();
        if segs.len() > 1 && segs[0] != "**" && !segs[1].contains('*') {
            segs[1] = "@";
        }
        let text = segs.join("/");
        let stars = text.matches('*').count();
        let doubles = text.matches("**").count();
        (
            text.len() - stars,
            std::cmp::Reverse(doubles),
            std::cmp::Reverse(stars - 2 * doubles),
        )
    }
}

/// A DID a policy may name: `did:plc:` with its 24 base32 characters, or
/// `did:web:` with a hostname (atproto supports no other method).
pub fn check_did(did: &str) -> Result<(), String> {
    let d = atcr_syntax::Did::new(did).map_err(|e| format!("{did:?} is not a DID: {e}"))?;
    let id = d.method_specific_id();
    match d.method() {
        "plc"
            if id.len() == 24
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) =>
        {
            Ok(())
        }
        "plc" => Err(format!(
            "{did:?} is not a did:plc (24 base32 characters a-z, 2-7 after did:plc:)"
        )),
        "web"
            if !id.contains(':')
                && crate::canonical_host(&id.replace("%3A", ":").replace("%3a", ":")).is_ok() =>
        {
            Ok(())
        }
        "web" => Err(format!("{did:?} is not a hostname-level did:web")),
        m => Err(format!(
            "{did:?}: DID method {m:?} (atproto uses plc and web)"
        )),
    }
}

/// `*` matches within one path segment, `**` across segments.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => {
            let seg = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
            (0..=seg).any(|i| glob(rest, &s[i..]))
        }
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Require {
    signature: bool,
}

/// `require: {signature: true}` or the seeds' `require: [- signature: true]`.
#[derive(Debug, Clone)]
enum RequireForm {
    Map(Require),
    List(Vec<Require>),
}

impl<'de> Deserialize<'de> for RequireForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RequireForm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{signature: true|false} or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<RequireForm, A::Error> {
                Require::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RequireForm::Map)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<RequireForm, A::Error> {
                let mut out = vec![];
                while let Some(r) = s.next_element()? {
                    out.push(r);
                }
                Ok(RequireForm::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrustedEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    valid_from: Option<Time>,
    #[serde(default)]
    expires_at: Option<Time>,
}

/// Top-level `trustedDIDs`: a map DID → entry, or a plain list of DIDs.
#[derive(Debug, Clone)]
enum TrustedForm {
    Map(BTreeMap<String, Option<TrustedEntry>>),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for TrustedForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TrustedForm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of DIDs to {name, validFrom, expiresAt}, or a list of DIDs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<TrustedForm, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = m.next_key::<String>()? {
                    let v: Option<TrustedEntry> = m.next_value()?;
                    out.insert(k, v);
                }
                Ok(TrustedForm::Map(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<TrustedForm, A::Error> {
                let mut out = vec![];
                while let Some(d) = s.next_element()? {
                    out.push(d);
                }
                Ok(TrustedForm::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scope as written, checked once the aliases are known.
#[derive(Debug, Clone)]
struct ScopeText(String);

impl<'de> Deserialize<'de> for ScopeText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Checked without aliases here so the error has its line.
        Scope::new(&text, &BTreeMap::new()).map_err(serde::de::Error::custom)?;
        Ok(Self(text))
    }
}

/// `defaults` takes no scope.
#[derive(Debug, Clone)]
struct NoScope;

impl<'de> Deserialize<'de> for NoScope {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "`defaults` applies where no scope matches: remove `scope`",
        ))
    }
}

/// A rule: `S` is [`Scope`] in `policies` (required) and `Option<NoScope>`
/// in `defaults` (forbidden).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule<S> {
    name: Option<String>,
    scope: S,
    require: Option<RequireForm>,
    #[serde(rename = "trustedDIDs")]
    trusted_dids: Option<Vec<Signer>>,
    min_signatures: Option<u32>,
    max_age: Option<MaxAge>,
    action: Option<Action>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Version {
    Num(f64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    version: Version,
    #[serde(rename = "trustedDIDs", default)]
    trusted_dids: Option<TrustedForm>,
    #[serde(default)]
    policies: Vec<RawRule<ScopeText>>,
    #[serde(default)]
    defaults: Option<RawRule<Option<NoScope>>>,
    /// Canonical registry host → other names that reach the same registry.
    #[serde(default)]
    registries: BTreeMap<String, Vec<String>>,
}

/// A trusted DID's validity window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Display name.
    pub name: Option<String>,
    /// Signatures before this time are not trusted.
    pub valid_from: Option<i64>,
    /// Signatures after this time are not trusted.
    pub expires_at: Option<i64>,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name (for reports).
    pub name: String,
    /// Scope (`None` for `defaults`).
    pub scope: Option<Scope>,
    /// Whether a signature is required at all.
    pub require_signature: bool,
    /// Trusted signers (`None`: the top-level list, or the owner).
    pub trusted: Option<Vec<Signer>>,
    /// Distinct trusted signers needed.
    pub min_signatures: u32,
    /// Oldest acceptable signature, in seconds.
    pub max_age: Option<i64>,
    /// What a violation does.
    pub action: Action,
}

/// A parsed trust policy.
#[derive(Debug, Clone)]
pub struct TrustPolicy {
    /// Top-level trusted DIDs and their windows.
    pub trusted: BTreeMap<String, Window>,
    /// Scoped rules, in file order.
    pub rules: Vec<Rule>,
    /// The rule for images no scope matches (`None`: denied).
    pub defaults: Option<Rule>,
    /// Registry host aliases: alias → canonical host (both normalised).
    pub aliases: BTreeMap<String, String>,
}

fn rule<S>(r: RawRule<S>, scope: Option<Scope>, name: String) -> Rule {
    let require_signature = match r.require {
        None => true,
        Some(RequireForm::Map(m)) => m.signature,
        Some(RequireForm::List(l)) => l.iter().any(|x| x.signature) || l.is_empty(),
    };
    Rule {
        name: r.name.unwrap_or(name),
        scope,
        require_signature,
        trusted: r.trusted_dids,
        min_signatures: r.min_signatures.unwrap_or(1),
        max_age: r.max_age.map(|m| m.0),
        action: r.action.unwrap_or_default(),
    }
}

impl TrustPolicy {
    /// The policy used without `--policy`: one valid owner signature.
    pub fn owner_only() -> Self {
        Self {
            trusted: BTreeMap::new(),
            rules: vec![],
            defaults: Some(Rule {
                name: "default (owner signature)".into(),
                scope: None,
                require_signature: true,
                trusted: Some(vec![Signer::Owner]),
                min_signatures: 1,
                max_age: None,
                action: Action::Enforce,
            }),
            aliases: BTreeMap::new(),
        }
    }

    /// Reads a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        Self::parse(&path.display().to_string(), &read_file(path)?)
    }

    /// Parses policy YAML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = parse_yaml(file, text)?;
        let err = |key: &str, message: String| PolicyError {
            file: file.to_owned(),
            line: line_of(text, key),
            key: key.to_owned(),
            message,
        };
        // An error about a value: the line that mentions it.
        let err_at = |value: &str, key: &str, message: String| PolicyError {
            file: file.to_owned(),
            line: text
                .lines()
                .position(|l| l.contains(value))
                .map_or_else(|| line_of(text, key), |i| i + 1),
            key: key.to_owned(),
            message,
        };
        let mut aliases = BTreeMap::new();
        for (canonical, names) in &raw.registries {
            let key = format!("registries.{canonical}");
            let c = crate::canonical_host(canonical).map_err(|m| err_at(canonical, &key, m))?;
            for a in names {
                let n = crate::canonical_host(a).map_err(|m| err_at(a, &key, m))?;
                if n != c {
                    aliases.insert(n, c.clone());
                }
            }
        }
        match &raw.version {
            Version::Num(n) if *n == 1.0 => {}
            Version::Text(t) if t == "1" || t == "1.0" => {}
            _ => return Err(err("version", "only version 1.0 is understood".into())),
        }
        let mut trusted = BTreeMap::new();
        match raw.trusted_dids {
            None => {}
            Some(TrustedForm::List(l)) => {
                for d in l {
                    top_level_did(&d).map_err(|m| err_at(&d, "trustedDIDs", m))?;
                    trusted.insert(d, Window::default());
                }
            }
            Some(TrustedForm::Map(m)) => {
                for (d, e) in m {
                    top_level_did(&d).map_err(|m| err_at(&d, "trustedDIDs", m))?;
                    let e = e.unwrap_or(TrustedEntry {
                        name: None,
                        valid_from: None,
                        expires_at: None,
                    });
                    trusted.insert(
                        d,
                        Window {
                            name: e.name,
                            valid_from: e.valid_from.map(|t| t.0),
                            expires_at: e.expires_at.map(|t| t.0),
                        },
                    );
                }
            }
        }
        let mut rules = vec![];
        for (i, r) in raw.policies.into_iter().enumerate() {
            if r.min_signatures == Some(0) {
                return Err(err(
                    "minSignatures",
                    format!("policies[{i}]: must be at least 1"),
                ));
            }
            let key = format!("policies[{i}].scope");
            let scope =
                Scope::new(&r.scope.0, &aliases).map_err(|m| err_at(&r.scope.0, &key, m))?;
            rules.push(rule(r, Some(scope), format!("policies[{i}]")));
        }
        let defaults = raw.defaults.map(|d| rule(d, None, "defaults".into()));
        Ok(Self {
            trusted,
            rules,
            defaults,
            aliases,
        })
    }

    /// The canonical registry host of `host` (normalised, then mapped
    /// through the declared aliases).
    pub fn canonical_host(&self, host: &str) -> Result<String, String> {
        let h = crate::canonical_host(host)?;
        Ok(self.aliases.get(&h).cloned().unwrap_or(h))
    }

    /// The handles that scopes which may apply to `host` name owners by.
    pub fn scope_handles(&self, host: &str) -> Vec<atcr_syntax::Handle> {
        let mut out: Vec<_> = self
            .rules
            .iter()
            .filter_map(|r| r.scope.as_ref())
            .filter(|s| s.may_match_host(host))
            .filter_map(|s| s.owner_handle().cloned())
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        out.dedup();
        out
    }

    /// The rule for the canonical image identity `HOST/DID/REPO`: the most
    /// specific matching scope (ties: first in file), else `defaults`.
    /// `handle_dids` gives the DID each scope owner handle resolved to.
    pub fn rule_for(
        &self,
        canonical: &str,
        handle_dids: &BTreeMap<String, Option<String>>,
    ) -> Option<&Rule> {
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            let Some(scope) = &r.scope else { continue };
            let did = scope
                .owner_handle()
                .and_then(|h| handle_dids.get(h.as_str()).cloned().flatten());
            if !scope.matches(canonical, did.as_deref()) {
                continue;
            }
            let better = match best.and_then(|b| b.scope.as_ref()) {
                None => true,
                Some(b) => scope.specificity() > b.specificity(),
            };
            if better {
                best = Some(r);
            }
        }
        best.or(self.defaults.as_ref())
    }

    /// The DIDs `rule` trusts, with their windows; `owner` is the image's DID.
    pub fn trusted_for(&self, rule: &Rule, owner: &str) -> BTreeMap<String, Window> {
        let resolve = |s: &Signer| match s {
            Signer::Owner => owner.to_owned(),
            Signer::Did(d) => d.clone(),
        };
        let dids: BTreeSet<String> = match &rule.trusted {
            Some(list) => list.iter().map(resolve).collect(),
            None if !self.trusted.is_empty() => self.trusted.keys().cloned().collect(),
            None => [owner.to_owned()].into(),
        };
        dids.into_iter()
            .map(|d| {
                let w = self.trusted.get(&d).cloned().unwrap_or_default();
                (d, w)
            })
            .collect()
    }
}

/// A file's text; an error names the file.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| PolicyError {
        file: path.display().to_string(),
        line: 0,
        key: "(file)".into(),
        message: e.to_string(),
    })
}

/// Reads YAML into `T`; an error names the file, the line and the key path.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, PolicyError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // The parser places errors inside a mapping at the mapping's
        // start: move to the line of the offending key when it is named.
        let at = inner.location().map_or(0, |l| l.line());
        let last = key.rsplit('.').next().unwrap_or("");
        let last = last.split('[').next().unwrap_or("");
        let line = if last.is_empty() {
            at
        } else {
            line_of_from(text, last, at.saturating_sub(1)).unwrap_or(at)
        };
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        // serde_norway prefixes the path, which the key already says.
        if let Some((head, tail)) = message.split_once(": ")
            && !head.contains(' ')
        {
            message = tail.to_owned();
        }
        PolicyError {
            file: file.to_owned(),
            line,
            key: if key == "." { "(document)".into() } else { key },
            message,
        }
    })
}

/// A DID of the top-level `trustedDIDs`: `owner` has no meaning there (it
/// is not tied to one image), so it is an error rather than a literal.
fn top_level_did(d: &str) -> Result<(), String> {
    if d == "owner" {
        return Err(
            "`owner` is only meaningful in a policy's trustedDIDs (it means each image's own DID)"
                .into(),
        );
    }
    check_did(d)
}

/// The first line mentioning `key:` (for errors found after parsing).
fn line_of(text: &str, key: &str) -> usize {
    line_of_from(text, key, 0).unwrap_or(0)
}

/// The first line at or after 0-based line `from` that starts with `key:`.
fn line_of_from(text: &str, key: &str, from: usize) -> Option<usize> {
    let pat = format!("{key}:");
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.trim_start().trim_start_matches("- ").starts_with(&pat))
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_segments() {
        let s = |t: &str| Scope::new(t, &BTreeMap::new()).unwrap();
        let m = |sc: &str, name: &str| s(sc).matches(name, None);
        assert!(m("atcr.io/*/prod-*", "atcr.io/did:plc:x/prod-api"));
        assert!(!m("atcr.io/*/prod-*", "atcr.io/did:plc:x/team/prod-api"));
        assert!(m("atcr.io/**", "atcr.io/did:plc:x/team/prod-api"));
        assert!(!m("atcr.io/*", "atcr.io/did:plc:x/app"));
        assert!(m("**", "anything/at/all"));
        assert!(
            s("atcr.io/alice.test/app").specificity() > s("atcr.io/alice.test/*").specificity()
        );
        assert!(s("atcr.io/*/app").specificity() > s("atcr.io/**/app").specificity());
    }

    #[test]
    fn parses_the_seed_example_in_both_forms() {
        let p = TrustPolicy::parse(
            "p.yaml",
            r#"
version: 1.0
policies:
  - name: production-images
    scope: "atcr.io/*/prod-*"
    require:
      - signature: true
    trustedDIDs:
      - did:plc:alice234alice234alice234
      - owner
    minSignatures: 1
    maxAge: 90d
    action: enforce
  - name: dev-images
    scope: "atcr.io/*/dev-*"
    require: {signature: false}
    action: audit
trustedDIDs:
  did:plc:alice234alice234alice234:
    name: "Alice"
    validFrom: "2024-01-01T00:00:00Z"
    expiresAt: null
"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        let r = p
            .rule_for("atcr.io/x.test/prod-api", &BTreeMap::new())
            .unwrap();
        assert_eq!(r.name, "production-images");
        assert_eq!(r.max_age, Some(90 * 86_400));
        let t = p.trusted_for(r, "did:plc:owner");
        assert!(
            t.contains_key("did:plc:owner")
                && t["did:plc:alice234alice234alice234"].valid_from.is_some()
        );
        assert!(
            !p.rule_for("atcr.io/x.test/dev-api", &BTreeMap::new())
                .unwrap()
                .require_signature
        );
        assert!(
            p.rule_for("other.io/x.test/app", &BTreeMap::new())
                .is_none(),
            "unmatched: denied"
        );
        let list = TrustPolicy::parse(
            "p.yaml",
            "version: \"1.0\"\ntrustedDIDs: [did:plc:aaaaaaaaaaaaaaaaaaaaaaaa]\ndefaults: {action: audit}\n",
        )
        .unwrap();
        let d = list.rule_for("x.io/a.test/b", &BTreeMap::new()).unwrap();
        assert_eq!(d.action, Action::Audit);
        assert_eq!(
            list.trusted_for(d, "did:plc:o").keys().collect::<Vec<_>>(),
            ["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/c\n    maxAge: soon\n",
                4,
                "policies[0].maxAge",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/c\n    colour: red\n",
                4,
                "policies[0].colour",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/c\n    trustedDIDs: [did:nope]\n",
                4,
                "policies[0].trustedDIDs[0]",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/c\n    action: maybe\n",
                4,
                "policies[0].action",
            ),
            (
                "version: 1.0\ntrustedDIDs:\n  did:plc:aaaaaaaaaaaaaaaaaaaaaaaa:\n    validFrom: yesterday\n",
                4,
                "trustedDIDs.did:plc:aaaaaaaaaaaaaaaaaaaaaaaa.validFrom",
            ),
            ("version: 2\n", 1, "version"),
            ("version: 1.0\npolicies:\n  - name: x\n", 3, "policies[0]"),
            (
                "version: 1.0\ndefaults:\n  scope: a.io/*/b\n",
                3,
                "defaults.scope",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/c\n    minSignatures: -1\n",
                4,
                "policies[0].minSignatures",
            ),
        ];
        for (yaml, line, key) in cases {
            let e = TrustPolicy::parse("policy.yaml", yaml).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{yaml}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("policy.yaml:{line}: {key}: ")),
                "{e}"
            );
        }
        // DIDs are validated, `owner` is refused at the top level, scopes'
        // owners are a handle, a DID or a whole-segment wildcard.
        let more = [
            ("version: 1.0\ntrustedDIDs: [owner]\n", 2, "trustedDIDs"),
            (
                "version: 1.0\ntrustedDIDs:\n  - did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n  - did:plc:short\n",
                4,
                "trustedDIDs",
            ),
            (
                "version: 1.0\ntrustedDIDs:\n  did:key:zQ3sabc: {}\n",
                3,
                "trustedDIDs",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*/x\n    trustedDIDs: [did:plc:toolong0000000000000000000]\n",
                4,
                "policies[0].trustedDIDs[0]",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io/*.corp.com/x\n",
                3,
                "policies[0].scope",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a.io:99999/x/y\n",
                3,
                "policies[0].scope",
            ),
            (
                "version: 1.0\nregistries:\n  a.io: [\"b.io:x\"]\n",
                3,
                "registries.a.io",
            ),
        ];
        for (yaml, line, key) in more {
            let e = TrustPolicy::parse("policy.yaml", yaml).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{yaml}: {e}");
        }
        // Malformed YAML is an error, never a panic.
        assert!(TrustPolicy::parse("p", "version: [\n").is_err());
        assert!(TrustPolicy::parse("p", "").is_err());
    }

    #[test]
    fn scopes_match_the_canonical_identity_whatever_the_spelling() {
        let alice = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
        let p = TrustPolicy::parse(
            "p.yaml",
            &format!(
                r#"
version: 1.0
registries:
  registry.example: [mirror.example:443, "REGISTRY.example."]
policies:
  - name: strict-did
    scope: "127.0.0.1:15000/did-plc-aaaaaaaaaaaaaaaaaaaaaaaa/**"
    minSignatures: 2
  - name: strict-raw
    scope: "registry.example/{alice}/**"
    minSignatures: 2
  - name: strict-handle
    scope: "localhost:015000/alice.test/app"
    minSignatures: 3
  - name: lax
    scope: "**"
"#
            ),
        )
        .unwrap();
        let rule = |host: &str, repo: &str, handles: &BTreeMap<String, Option<String>>| {
            let c = format!("{}/{alice}/{repo}", p.canonical_host(host).unwrap());
            p.rule_for(&c, handles).unwrap().name.clone()
        };
        let none = BTreeMap::new();
        for host in [
            "127.0.0.1:15000",
            "localhost:15000",
            "127.0.0.1:015000",
            "LOCALHOST.:15000",
        ] {
            assert_eq!(rule(host, "web", &none), "strict-did", "{host}");
        }
        for host in [
            "registry.example",
            "registry.example:443",
            "mirror.example",
            "Registry.Example.",
        ] {
            assert_eq!(rule(host, "web", &none), "strict-raw", "{host}");
        }
        assert_eq!(rule("other.example", "web", &none), "lax");
        // A handle scope applies through the DID it resolves to, and to
        // nothing when it resolves to none.
        let resolved = BTreeMap::from([("alice.test".to_owned(), Some(alice.to_owned()))]);
        assert_eq!(rule("127.0.0.1:15000", "app", &resolved), "strict-handle");
        assert_eq!(rule("127.0.0.1:15000", "app", &none), "strict-did");
        assert_eq!(
            p.scope_handles("127.0.0.1:15000"),
            [atcr_syntax::Handle::new("alice.test").unwrap()]
        );
        assert!(p.scope_handles("other.example").is_empty());
    }
}
