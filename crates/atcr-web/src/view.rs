//! What the pages and the JSON API show, read from the registry index: one
//! set of view types for both, so a script sees what a person sees.

use crate::badge::Badge;
use crate::{Web, WebError};
use atcr_registry::index::{OwnerRepo, TagRow};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// The OCI annotation a description is read from.
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
/// Children of an index read to describe it.
const MAX_CHILDREN: usize = 32;

/// An owner, as linked.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerView {
    /// DID.
    pub did: String,
    /// Handle, when this registry knows it (its own account, or a remote
    /// owner's PDS session).
    pub handle: Option<String>,
    /// The owner's page.
    pub url: String,
    /// Handle, else DID.
    pub name: String,
}

/// A repository in a list.
#[derive(Debug, Clone, Serialize)]
pub struct RepoSummary {
    /// The owner.
    pub owner: OwnerView,
    /// REPO.
    pub repo: String,
    /// `OWNER/REPO` with the handle when known.
    pub name: String,
    /// Tags.
    pub tags: u64,
    /// Newest tag move (RFC 3339), if tagged.
    pub updated: Option<String>,
    /// The repository page.
    pub url: String,
    /// API document of the repository.
    pub api: String,
}

/// A descriptor (config, layer, child manifest).
#[derive(Debug, Clone, Serialize)]
pub struct DescView {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Size for people.
    pub size_human: String,
    /// `os/arch[/variant]` of an index entry.
    pub platform: Option<String>,
    /// The child manifest's page (index entries).
    pub url: Option<String>,
}

/// A tag as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TagView {
    /// The tag.
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
    /// `sha256:` and 12 hex digits.
    pub short_digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// `image`, `index` or `artifact`.
    pub kind: &'static str,
    /// Content size in bytes (config and layers; an index sums its images).
    pub size: u64,
    /// Size for people.
    pub size_human: String,
    /// Platforms (indexes list each image's).
    pub platforms: Vec<String>,
    /// When pushed (RFC 3339).
    pub pushed: String,
    /// The manifest page.
    pub url: String,
    /// `docker pull` by tag.
    pub pull_tag: String,
    /// `docker pull` by digest.
    pub pull_digest: String,
    /// The badge (None when not asked for).
    pub verification: Option<Badge>,
    /// The badge's words.
    pub badge_label: String,
    /// The API URL the page's script polls while "checking".
    pub badge_api: String,
    /// The owner (in cross-repository lists).
    pub owner: OwnerView,
    /// REPO.
    pub repo: String,
}

/// A manifest, taken apart.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ManifestInfo {
    /// `image`, `index` or `artifact`.
    pub kind: &'static str,
    /// Config descriptor (images).
    pub config: Option<DescView>,
    /// Layers.
    pub layers: Vec<DescView>,
    /// Index entries.
    pub children: Vec<DescView>,
    /// Annotations, sorted.
    pub annotations: Vec<(String, String)>,
    /// Artifact type, if any.
    pub artifact_type: Option<String>,
    /// Subject digest (referrers).
    pub subject: Option<String>,
    /// Content size (config and layers; indexes sum their images).
    pub size: u64,
}

/// `1.2 MB`-style sizes (SI units, as `docker images` shows).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// RFC 3339 (UTC, whole seconds) of Unix seconds: the project's one
/// civil-date formatter, without its milliseconds.
pub fn rfc3339(secs: i64) -> String {
    let t = atcr_syntax::Datetime::from_unix_millis(secs.saturating_mul(1000));
    t.as_str().replacen(".000Z", "Z", 1)
}

fn short(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("", digest));
    format!("{alg}:{}", &hex[..hex.len().min(12)])
}

fn desc(v: &Value) -> Option<DescView> {
    let size = v["size"].as_u64().unwrap_or(0);
    Some(DescView {
        media_type: v["mediaType"].as_str().unwrap_or("").to_owned(),
        digest: v["digest"].as_str()?.to_owned(),
        size,
        size_human: human_size(size),
        platform: v.get("platform").and_then(platform),
        url: None,
    })
}

fn platform(p: &Value) -> Option<String> {
    let os = p["os"].as_str()?;
    let arch = p["architecture"].as_str()?;
    Some(match p["variant"].as_str() {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

fn annotations(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v["annotations"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Takes manifest bytes apart (they were validated when pushed; anything
/// odd is shown as absent, never an error).
pub fn parse_manifest(bytes: &[u8]) -> ManifestInfo {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return ManifestInfo {
            kind: "artifact",
            ..Default::default()
        };
    };
    let children: Vec<DescView> = v["manifests"]
        .as_array()
        .map(|a| a.iter().filter_map(desc).collect())
        .unwrap_or_default();
    let layers: Vec<DescView> = v["layers"]
        .as_array()
        .map(|a| a.iter().filter_map(desc).collect())
        .unwrap_or_default();
    let config = v.get("config").and_then(desc);
    let artifact_type = v["artifactType"].as_str().map(str::to_owned).or_else(|| {
        config
            .as_ref()
            .map(|c| c.media_type.clone())
            .filter(|t| !t.contains("image.config") && !t.contains("container.image"))
    });
    let kind = if v.get("manifests").is_some() {
        "index"
    } else if artifact_type.is_some() {
        "artifact"
    } else {
        "image"
    };
    let size = config.as_ref().map_or(0, |c| c.size) + layers.iter().map(|l| l.size).sum::<u64>();
    ManifestInfo {
        kind,
        config,
        layers,
        children,
        annotations: annotations(&v),
        artifact_type,
        subject: v["subject"]["digest"].as_str().map(str::to_owned),
        size,
    }
}

impl Web {
    /// The owner as linked: handle when known.
    pub async fn owner_view(&self, did: &str) -> OwnerView {
        let handle = self.handle_of(did).await;
        let name = handle.clone().unwrap_or_else(|| did.to_owned());
        OwnerView {
            did: did.to_owned(),
            url: format!("/u/{name}"),
            handle,
            name,
        }
    }

    /// A repository row for lists.
    pub async fn repo_summary(&self, r: &OwnerRepo) -> RepoSummary {
        let owner = self.owner_view(&r.did).await;
        RepoSummary {
            name: format!("{}/{}", owner.name, r.repo),
            url: format!("/r/{}/{}", owner.name, r.repo),
            api: format!("/api/v1/repositories/{}/{}", owner.name, r.repo),
            repo: r.repo.clone(),
            tags: r.tags,
            updated: (r.updated_at > 0).then(|| rfc3339(r.updated_at)),
            owner,
        }
    }

    /// The image reference verification uses: the registry's host, the
    /// owner as a DID (no handle lookup can change what is checked).
    pub fn image_ref(&self, did: &str, repo: &str, reference: &str) -> String {
        let seg = did.replacen("did:", "did-", 1).replacen(':', "-", 1);
        let sep = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{seg}/{repo}{sep}{reference}", self.inner.host)
    }

    /// A tag for display, with its badge when `badge`.
    pub async fn tag_view(&self, t: &TagRow, badge: bool) -> TagView {
        let owner = self.owner_view(&t.did).await;
        let mut info = if t.bytes.is_empty() {
            ManifestInfo {
                kind: if t.media_type.contains("index") || t.media_type.contains("list") {
                    "index"
                } else {
                    "image"
                },
                ..Default::default()
            }
        } else {
            parse_manifest(&t.bytes)
        };
        if info.kind == "index" && !t.bytes.is_empty() {
            self.size_children(&t.did, &t.repo, &mut info).await;
        }
        let mut platforms: Vec<String> = info
            .children
            .iter()
            .filter_map(|c| c.platform.clone())
            .collect();
        platforms.dedup();
        let image = self.image_ref(&t.did, &t.repo, &t.tag);
        let verification = if badge {
            Some(self.badge_now(&image).await)
        } else {
            None
        };
        let pull_name = format!("{}/{}/{}", self.inner.host, owner.name, t.repo);
        TagView {
            short_digest: short(&t.digest),
            kind: info.kind,
            size: info.size,
            size_human: human_size(info.size),
            platforms,
            pushed: rfc3339(t.updated_at),
            url: format!("/r/{}/{}/-/manifest/{}", owner.name, t.repo, t.digest),
            pull_tag: format!("docker pull {pull_name}:{}", t.tag),
            pull_digest: format!("docker pull {pull_name}@{}", t.digest),
            badge_label: verification.as_ref().map_or_else(String::new, Badge::label),
            verification,
            badge_api: format!(
                "/api/v1/verification/{}/{}?reference={}",
                owner.name, t.repo, t.tag
            ),
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            media_type: t.media_type.clone(),
            repo: t.repo.clone(),
            owner,
        }
    }

    /// Fills an index's children: their pages and, from the stored child
    /// manifests, the index's total size.
    pub async fn size_children(&self, did: &str, repo: &str, info: &mut ManifestInfo) {
        let owner = self.owner_view(did).await;
        let mut total = 0;
        for c in info.children.iter_mut().take(MAX_CHILDREN) {
            c.url = Some(format!("/r/{}/{repo}/-/manifest/{}", owner.name, c.digest));
            if let Ok(Some(m)) = self
                .inner
                .registry
                .index()
                .manifest(did, repo, &c.digest, true)
                .await
            {
                total += parse_manifest(&m.bytes).size;
            }
        }
        info.size = total;
    }

    /// The badge of `did/repo` at `reference` (tag or digest), waiting at
    /// most `wait` for it.
    pub async fn badge(&self, did: &str, repo: &str, reference: &str, wait: Duration) -> Badge {
        let image = self.image_ref(did, repo, reference);
        let mut b = self.inner.badges.settled(&image, wait).await;
        self.name_signers(&mut b).await;
        b
    }

    /// The badge of `image` as it stands (see [`crate::badge::Badges::get`]).
    pub async fn badge_now(&self, image: &str) -> Badge {
        let mut b = self.inner.badges.get(image);
        self.name_signers(&mut b).await;
        b
    }

    /// Signers without a verified handle are named by the handle this
    /// registry knows for them (its own accounts, remote owners' sessions).
    async fn name_signers(&self, b: &mut Badge) {
        for s in &mut b.signers {
            if s.handle.is_none() {
                s.handle = self.handle_of(&s.did).await;
            }
        }
    }

    /// Resolves an owner segment of a URL (handle, `did:…` or `did-…`) to
    /// a DID.
    pub async fn owner_did(&self, seg: &str) -> Result<String, WebError> {
        if seg.starts_with("did:") {
            return atcr_syntax::Did::new(seg)
                .map(|d| d.to_string())
                .map_err(|_| WebError::NotFound(format!("{seg} is not a DID")));
        }
        let name = atcr_oci::RepoName::parse(&format!("{seg}/x"))
            .map_err(|_| WebError::NotFound(format!("{seg} is not a handle or DID")))?;
        match tokio::time::timeout(Duration::from_secs(3), self.inner.registry.owner_did(&name))
            .await
        {
            Ok(Ok(did)) => Ok(did.to_string()),
            Ok(Err(e)) => Err(WebError::NotFound(e.to_string())),
            Err(_) => Err(WebError::Unavailable(format!(
                "{seg} could not be resolved in time; try again"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_169_600), "2026-12-02T00:00:00Z");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(2_345_678), "2.3 MB");
    }

    #[test]
    fn manifests_are_taken_apart_leniently() {
        let idx = br#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:aa","size":3,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}],"annotations":{"b":"2","a":"1"}}"#;
        let i = parse_manifest(idx);
        assert_eq!(i.kind, "index");
        assert_eq!(i.children[0].platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(i.annotations[0], ("a".into(), "1".into()));
        let img = br#"{"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":10},"layers":[{"digest":"sha256:l","size":90}]}"#;
        let m = parse_manifest(img);
        assert_eq!((m.kind, m.size, m.layers.len()), ("image", 100, 1));
        assert_eq!(parse_manifest(b"not json").kind, "artifact");
        let art = br#"{"artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:e","size":2},"layers":[]}"#;
        assert_eq!(parse_manifest(art).kind, "artifact");
    }
}

/// What an image configuration says, for the manifest page.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ConfigView {
    /// `os/architecture[/variant]`.
    pub platform: Option<String>,
    /// `created`.
    pub created: Option<String>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.Entrypoint` and `config.Cmd`, joined.
    pub command: Option<String>,
    /// `config.WorkingDir`.
    pub workdir: Option<String>,
    /// `config.ExposedPorts` keys.
    pub ports: Vec<String>,
    /// `config.Labels`, sorted.
    pub labels: Vec<(String, String)>,
}

/// Largest image configuration read for display.
const MAX_CONFIG: u64 = 64 * 1024;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Takes an image configuration apart (leniently, like manifests).
pub fn parse_config(bytes: &[u8]) -> ConfigView {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return ConfigView::default();
    };
    let c = &v["config"];
    let mut command = strings(&c["Entrypoint"]);
    command.extend(strings(&c["Cmd"]));
    let mut labels: Vec<(String, String)> = c["Labels"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let mut ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    ports.sort();
    let text = |x: &Value| x.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    ConfigView {
        platform: platform(&v),
        created: text(&v["created"]),
        user: text(&c["User"]),
        command: (!command.is_empty()).then(|| command.join(" ")),
        workdir: text(&c["WorkingDir"]),
        ports,
        labels,
    }
}

impl Web {
    /// The image configuration `desc` names, read (at most 64 KiB) from the
    /// blob store and kept by digest: content-addressed, it never changes.
    pub async fn config_view(&self, desc: &DescView) -> Option<ConfigView> {
        use futures_util::StreamExt as _;
        if !desc.media_type.contains("config") || desc.size > MAX_CONFIG {
            return None;
        }
        if let Some(c) = self.inner.configs.get(&desc.digest) {
            return Some(c);
        }
        let digest = atcr_oci::Digest::parse(&desc.digest).ok()?;
        let read = self
            .inner
            .registry
            .blob_read(&digest, None, false)
            .await
            .ok()?;
        let atcr_blobstore::BlobRead::Stream { mut body, .. } = read else {
            return None;
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.ok()?);
            if bytes.len() as u64 > MAX_CONFIG {
                return None;
            }
        }
        let c = parse_config(&bytes);
        self.inner.configs.insert(desc.digest.clone(), c.clone());
        Some(c)
    }
}
