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
        atcr_syntax::Did::new(&s)
            .map(|_| Self::Did(s.clone()))
            .map_err(|e| format!("{s:?} is neither `owner` nor a DID: {e}"))
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

/// A scope glob over `HOST/OWNER/REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    text: String,
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.contains("***") || text.chars().any(char::is_whitespace) {
            return Err(serde::de::Error::custom(format!(
                "{text:?} is not a scope (HOST/OWNER/REPO with * and ** wildcards)"
            )));
        }
        Ok(Self { text })
    }
}

impl Scope {
    /// Whether `name` (`HOST/OWNER/REPO`) matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.text.as_bytes(), name.as_bytes())
    }
    /// Specificity: more literal characters win, then fewer `**`, then fewer `*`.
    fn specificity(&self) -> (usize, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let stars = self.text.matches('*').count();
        let doubles = self.text.matches("**").count();
        (
            self.text.len() - stars,
            std::cmp::Reverse(doubles),
            std::cmp::Reverse(stars - 2 * doubles),
        )
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
    policies: Vec<RawRule<Scope>>,
    #[serde(default)]
    defaults: Option<RawRule<Option<NoScope>>>,
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
        }
    }

    /// Reads a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            key: "(file)".into(),
            message: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses policy YAML; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let de = serde_norway::Deserializer::from_str(text);
        let raw: RawPolicy = serde_path_to_error::deserialize(de).map_err(|e| {
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
        })?;
        let err = |key: &str, message: String| PolicyError {
            file: file.to_owned(),
            line: line_of(text, key),
            key: key.to_owned(),
            message,
        };
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
                    Signer::try_from(d.clone()).map_err(|m| err("trustedDIDs", m))?;
                    trusted.insert(d, Window::default());
                }
            }
            Some(TrustedForm::Map(m)) => {
                for (d, e) in m {
                    if !matches!(Signer::try_from(d.clone()), Ok(Signer::Did(_))) {
                        return Err(err("trustedDIDs", format!("{d:?} is not a DID")));
                    }
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
            let scope = r.scope.clone();
            rules.push(rule(r, Some(scope), format!("policies[{i}]")));
        }
        let defaults = raw.defaults.map(|d| rule(d, None, "defaults".into()));
        Ok(Self {
            trusted,
            rules,
            defaults,
        })
    }

    /// The rule for `name` (`HOST/OWNER/REPO`): the most specific matching
    /// scope (ties: first in file), else `defaults`.
    pub fn rule_for(&self, name: &str) -> Option<&Rule> {
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            let Some(scope) = &r.scope else { continue };
            if !scope.matches(name) {
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
        let s = |t: &str| Scope { text: t.into() };
        assert!(s("atcr.io/*/prod-*").matches("atcr.io/alice.test/prod-api"));
        assert!(!s("atcr.io/*/prod-*").matches("atcr.io/alice.test/team/prod-api"));
        assert!(s("atcr.io/**").matches("atcr.io/alice.test/team/prod-api"));
        assert!(!s("atcr.io/*").matches("atcr.io/alice.test/app"));
        assert!(s("**").matches("anything/at/all"));
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
      - did:plc:alice123
      - owner
    minSignatures: 1
    maxAge: 90d
    action: enforce
  - name: dev-images
    scope: "atcr.io/*/dev-*"
    require: {signature: false}
    action: audit
trustedDIDs:
  did:plc:alice123:
    name: "Alice"
    validFrom: "2024-01-01T00:00:00Z"
    expiresAt: null
"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        let r = p.rule_for("atcr.io/x.test/prod-api").unwrap();
        assert_eq!(r.name, "production-images");
        assert_eq!(r.max_age, Some(90 * 86_400));
        let t = p.trusted_for(r, "did:plc:owner");
        assert!(t.contains_key("did:plc:owner") && t["did:plc:alice123"].valid_from.is_some());
        assert!(
            !p.rule_for("atcr.io/x.test/dev-api")
                .unwrap()
                .require_signature
        );
        assert!(
            p.rule_for("other.io/x.test/app").is_none(),
            "unmatched: denied"
        );
        let list = TrustPolicy::parse(
            "p.yaml",
            "version: \"1.0\"\ntrustedDIDs: [did:plc:a]\ndefaults: {action: audit}\n",
        )
        .unwrap();
        let d = list.rule_for("x.io/a.test/b").unwrap();
        assert_eq!(d.action, Action::Audit);
        assert_eq!(
            list.trusted_for(d, "did:plc:o").keys().collect::<Vec<_>>(),
            ["did:plc:a"]
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "version: 1.0\npolicies:\n  - scope: a/b/c\n    maxAge: soon\n",
                4,
                "policies[0].maxAge",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a/b/c\n    colour: red\n",
                4,
                "policies[0].colour",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a/b/c\n    trustedDIDs: [did:nope]\n",
                4,
                "policies[0].trustedDIDs[0]",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a/b/c\n    action: maybe\n",
                4,
                "policies[0].action",
            ),
            (
                "version: 1.0\ntrustedDIDs:\n  did:plc:a:\n    validFrom: yesterday\n",
                4,
                "trustedDIDs.did:plc:a.validFrom",
            ),
            ("version: 2\n", 1, "version"),
            ("version: 1.0\npolicies:\n  - name: x\n", 3, "policies[0]"),
            (
                "version: 1.0\ndefaults:\n  scope: a/b\n",
                3,
                "defaults.scope",
            ),
            (
                "version: 1.0\npolicies:\n  - scope: a\n    minSignatures: -1\n",
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
        // Malformed YAML is an error, never a panic.
        assert!(TrustPolicy::parse("p", "version: [\n").is_err());
        assert!(TrustPolicy::parse("p", "").is_err());
    }
}
