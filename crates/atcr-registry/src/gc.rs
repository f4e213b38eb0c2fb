//! Online garbage collection and retention.
//!
//! A run, one at a time per registry:
//! 1. finishes deletions a crashed run left (blobs marked *doomed*);
//! 2. expires idle upload sessions;
//! 3. applies retention rules: tags and untagged manifests go through
//!    [`Registry::manifest_delete`], so the owner's PDS records go too;
//! 4. marks every blob a stored manifest references, removes repository
//!    links no manifest of their repository references and that were not
//!    made or confirmed within the grace period, dooms blobs left with no
//!    link, deletes their bytes, then forgets them;
//! 5. does the same for store objects the index does not know (a crash
//!    between placing a blob and linking it), once older than the grace
//!    period; and drops repositories left empty.
//!
//! Pushes never lose to GC: an upload marks the digest it is placing
//! ([`crate::index::Index::claim_finish`]) and GC never dooms a claimed
//! digest, while an upload waits for a doomed digest to be gone before it
//! places it; a HEAD or manifest push that relies on an old link confirms it
//! first ([`crate::index::Index::repo_blob_confirmed`]). Every check is
//! repeated in the transaction that acts on it.
//!
//! Memory is proportional to the index (links, blob rows, referenced
//! digests), never to blob sizes.

use crate::index::{BlobRow, RetentionManifest};
use crate::{Error, Registry, Result};
use atcr_oci::manifest::parse_manifest;
use atcr_oci::{Digest, Reference};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Garbage-collection settings.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Links and blobs younger than this are never collected; a link a
    /// client relies on is re-confirmed once half of it has passed.
    pub grace: Duration,
    /// Retention rules; the first whose pattern matches a repository applies.
    pub retention: Vec<RetentionRule>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            retention: vec![],
        }
    }
}

/// What to keep in the repositories a pattern matches.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// The pattern as configured (a glob over `owner/repo`).
    pub pattern: String,
    /// The pattern compiled.
    pub matcher: regex::Regex,
    /// Keep this many most recently pushed tags.
    pub keep_last: Option<usize>,
    /// Keep tags matching this.
    pub keep_tags: Option<regex::Regex>,
    /// Delete manifests no kept tag, index or subject holds once this old.
    pub untagged_older_than: Option<Duration>,
    /// Apply the rule; when false, runs only report what it would delete.
    pub enforce: bool,
}

impl RetentionRule {
    /// A rule for repositories matching `pattern`, a glob over
    /// `owner/repo` where the owner is the handle or DID form of the name:
    /// `*` matches within one path segment, `**` across segments.
    ///
    /// # Errors
    /// A message naming the bad pattern.
    pub fn new(pattern: &str) -> std::result::Result<Self, String> {
        Ok(Self {
            pattern: pattern.to_owned(),
            matcher: glob(pattern)?,
            keep_last: None,
            keep_tags: None,
            untagged_older_than: None,
            enforce: false,
        })
    }

    fn matches(&self, display: &str, did: &str, repo: &str) -> bool {
        self.matcher.is_match(display) || self.matcher.is_match(&format!("{did}/{repo}"))
    }
}

/// Globs are translated to a regular expression by hand: a dozen lines,
/// where a glob crate would be a dependency for one call.
fn glob(pattern: &str) -> std::result::Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                re.push_str(".*");
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("pattern {pattern:?}: {e}"))
}

/// One retention deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionAction {
    /// The repository (its catalog name).
    pub repository: String,
    /// The tag deleted (tag deletions), else `None`.
    pub tag: Option<String>,
    /// The manifest deleted, or the one the tag pointed at.
    pub digest: String,
    /// The rule's pattern.
    pub rule: String,
    /// Whether the rule is enforced (else it is only reported).
    pub enforced: bool,
}

/// What a GC run did, or would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Retention deletions (made, or planned when dry or not enforced).
    pub retention: Vec<RetentionAction>,
    /// Retention deletions that failed: `(action, error)`.
    pub retention_failures: Vec<(RetentionAction, String)>,
    /// Idle upload sessions removed.
    pub uploads_expired: usize,
    /// Repository links removed.
    pub links_removed: usize,
    /// Blobs deleted.
    pub blobs_reclaimed: usize,
    /// Their bytes.
    pub bytes_reclaimed: u64,
    /// Of those, store objects the index did not know.
    pub orphans_reclaimed: usize,
    /// Empty repositories removed from the index.
    pub repositories_removed: usize,
    /// Blobs left (live, after the run).
    pub blobs_kept: usize,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Concurrent deletes against the blob store.
const DELETE_CONCURRENCY: usize = 16;
/// Rows per transaction when acting on many.
const BATCH: usize = 500;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The blobs a manifest references (config, layers; foreign layers too,
/// in case they were pushed).
fn references(media_type: &str, bytes: &[u8]) -> Vec<String> {
    match parse_manifest(bytes, Some(media_type)) {
        Ok(p) => p
            .required_blobs()
            .map(Digest::to_string)
            .chain(p.foreign_layers().map(|(d, _)| d.digest.to_string()))
            .collect(),
        // Stored manifests were parsed on push; one that no longer parses
        // keeps nothing alive, and is logged.
        Err(e) => {
            tracing::warn!(target: "atcr::gc", "stored manifest does not parse: {e}");
            vec![]
        }
    }
}

/// Manifests an index lists.
fn children(m: &RetentionManifest) -> Vec<String> {
    parse_manifest(&m.bytes, Some(&m.media_type))
        .map(|p| p.required_manifests().map(Digest::to_string).collect())
        .unwrap_or_default()
}

impl Registry {
    /// Runs garbage collection (and retention); with `dry_run`, only
    /// reports what a run would do. Runs are serialised.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let _one = self.inner.gc_lock.lock().await;
        // And one across replicas sharing the index.
        let _global = self.inner.index.lock_gc().await?;
        let started = Instant::now();
        let mut report = GcReport {
            dry_run,
            ..Default::default()
        };
        let cutoff = now() - self.inner.cfg.gc.grace.as_secs() as i64;
        if !dry_run {
            // A crashed run's doomed blobs first: uploads of them wait.
            let doomed = self.inner.index.gc_doomed().await?;
            self.reclaim(doomed, &mut report).await?;
            report.uploads_expired = self.expire_uploads().await?;
        }
        let planned = self.retention(dry_run, &mut report).await?;
        // Dry runs leave retention's victims in place: mark as if gone.
        let gone: HashSet<(String, String, String)> =
            if dry_run { planned } else { HashSet::new() };

        // Mark.
        let mut referenced: HashSet<String> = HashSet::new();
        let mut repo_refs: HashSet<(String, String, String)> = HashSet::new();
        let mut after = 0;
        loop {
            let page = self.inner.index.gc_manifests(after, BATCH).await?;
            let Some(last) = page.last() else { break };
            after = last.rowid;
            for m in page {
                if gone.contains(&(m.did.clone(), m.repo.clone(), m.digest.clone())) {
                    continue;
                }
                for d in references(&m.media_type, &m.bytes) {
                    referenced.insert(d.clone());
                    repo_refs.insert((m.did.clone(), m.repo.clone(), d));
                }
            }
        }

        // Sweep links.
        let links = self.inner.index.gc_links().await?;
        let mut stale = vec![];
        let mut linked: HashMap<String, usize> = HashMap::new();
        for l in links {
            let key = (l.did, l.repo, l.digest);
            if l.linked_at < cutoff && !repo_refs.contains(&key) {
                stale.push(key);
            } else {
                *linked.entry(key.2).or_default() += 1;
            }
        }
        if dry_run {
            report.links_removed = stale.len();
        } else {
            for chunk in stale.chunks(BATCH) {
                report.links_removed += self.inner.index.gc_unlink(chunk.to_vec(), cutoff).await?;
            }
        }

        // Sweep blobs.
        let claims = self.inner.index.gc_claims().await?;
        let blobs = self.inner.index.gc_blobs().await?;
        let live = blobs.len();
        let candidates: Vec<BlobRow> = blobs
            .into_iter()
            .filter(|b| {
                b.created_at < cutoff
                    && !linked.contains_key(&b.digest)
                    && !referenced.contains(&b.digest)
                    && !claims.contains(&b.digest)
            })
            .collect();
        if dry_run {
            report.blobs_reclaimed = candidates.len();
            report.bytes_reclaimed = candidates.iter().map(|b| b.size).sum();
            report.blobs_kept = live - candidates.len();
        } else {
            let before = report.blobs_reclaimed;
            for chunk in candidates.chunks(BATCH) {
                let digests = chunk.iter().map(|b| b.digest.clone()).collect();
                let doomed = self.inner.index.gc_doom(digests, cutoff).await?;
                self.reclaim(doomed, &mut report).await?;
            }
            report.blobs_kept = live.saturating_sub(report.blobs_reclaimed - before);
        }

        self.orphans(cutoff, dry_run, &claims, &mut report).await?;
        if !dry_run {
            report.repositories_removed = self.inner.index.gc_drop_empty_repositories().await?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        if !dry_run {
            let m = &self.inner.metrics;
            m.gc_runs.inc();
            m.gc_blobs.inc_by(report.blobs_reclaimed as u64);
            m.gc_bytes.inc_by(report.bytes_reclaimed);
            m.gc_seconds.observe(report.seconds);
        }
        tracing::info!(
            target: "atcr::gc",
            dry_run,
            blobs = report.blobs_reclaimed,
            bytes = report.bytes_reclaimed,
            orphans = report.orphans_reclaimed,
            links = report.links_removed,
            retention = report.retention.len(),
            retention_failures = report.retention_failures.len(),
            uploads_expired = report.uploads_expired,
            seconds = report.seconds,
            "garbage collection"
        );
        Ok(report)
    }

    /// Deletes doomed blobs' bytes, then forgets them.
    async fn reclaim(&self, doomed: Vec<BlobRow>, report: &mut GcReport) -> Result<()> {
        let blobs = &self.inner.blobs;
        let deleted: Vec<BlobRow> = futures_util::stream::iter(doomed)
            .map(|b| async move {
                if b.inline {
                    return Ok(b);
                }
                match Digest::parse(&b.digest) {
                    Ok(d) => blobs.delete(&d).await.map(|()| b),
                    // Not an address we could have stored: nothing to delete.
                    Err(_) => Ok(b),
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect()
            .await
            .map_err(Error::from)?;
        report.blobs_reclaimed += deleted.len();
        report.bytes_reclaimed += deleted.iter().map(|b| b.size).sum::<u64>();
        self.inner
            .index
            .gc_forget(deleted.into_iter().map(|b| b.digest).collect())
            .await?;
        Ok(())
    }

    /// Store objects with no blob row, older than the grace period.
    async fn orphans(
        &self,
        cutoff: i64,
        dry_run: bool,
        claims: &HashSet<String>,
        report: &mut GcReport,
    ) -> Result<()> {
        let mut listing = self.inner.blobs.list().chunks(BATCH);
        while let Some(chunk) = listing.next().await {
            let objects: Vec<(String, u64)> = chunk
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::from)?
                .into_iter()
                .filter(|(d, _, modified)| *modified < cutoff && !claims.contains(&d.to_string()))
                .map(|(d, size, _)| (d.to_string(), size))
                .collect();
            if objects.is_empty() {
                continue;
            }
            let known = self
                .inner
                .index
                .gc_known(objects.iter().map(|o| o.0.clone()).collect())
                .await?;
            let unknown: Vec<(String, u64)> = objects
                .into_iter()
                .filter(|(d, _)| !known.contains(d))
                .collect();
            if dry_run {
                report.orphans_reclaimed += unknown.len();
                report.blobs_reclaimed += unknown.len();
                report.bytes_reclaimed += unknown.iter().map(|o| o.1).sum::<u64>();
                continue;
            }
            let sizes: HashMap<String, u64> = unknown.iter().cloned().collect();
            let doomed = self.inner.index.gc_doom_orphans(unknown).await?;
            report.orphans_reclaimed += doomed.len();
            let rows = doomed
                .into_iter()
                .map(|digest| BlobRow {
                    size: sizes.get(&digest).copied().unwrap_or(0),
                    digest,
                    created_at: 0,
                    inline: false,
                })
                .collect();
            self.reclaim(rows, report).await?;
        }
        Ok(())
    }

    /// Plans retention and, unless `dry_run`, applies the enforced part.
    /// Returns the manifests the plan deletes (`did, repo, digest`).
    async fn retention(
        &self,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<HashSet<(String, String, String)>> {
        let rules = &self.inner.cfg.gc.retention;
        let mut gone = HashSet::new();
        if rules.is_empty() {
            return Ok(gone);
        }
        let now = now();
        for (did, repo, display) in self.inner.index.repositories().await? {
            let Some(rule) = rules.iter().find(|r| r.matches(&display, &did, &repo)) else {
                continue;
            };
            let view = self.inner.index.retention_view(&did, &repo).await?;
            let plan = plan(rule, &view, now);
            for (tag, digest) in plan.tags {
                let a = RetentionAction {
                    repository: display.clone(),
                    tag: Some(tag.clone()),
                    digest,
                    rule: rule.pattern.clone(),
                    enforced: rule.enforce,
                };
                self.retention_apply(dry_run, &did, &repo, Reference::Tag(tag), a, report)
                    .await;
            }
            for digest in plan.manifests {
                if rule.enforce {
                    gone.insert((did.clone(), repo.clone(), digest.clone()));
                }
                let a = RetentionAction {
                    repository: display.clone(),
                    tag: None,
                    digest: digest.clone(),
                    rule: rule.pattern.clone(),
                    enforced: rule.enforce,
                };
                match Digest::parse(&digest) {
                    Ok(d) => {
                        self.retention_apply(dry_run, &did, &repo, Reference::Digest(d), a, report)
                            .await
                    }
                    Err(e) => report.retention_failures.push((a, e.message)),
                }
            }
        }
        Ok(gone)
    }

    async fn retention_apply(
        &self,
        dry_run: bool,
        did: &str,
        repo: &str,
        reference: Reference,
        a: RetentionAction,
        report: &mut GcReport,
    ) {
        if dry_run || !a.enforced {
            if !a.enforced {
                tracing::info!(target: "atcr::gc", repository = %a.repository, tag = ?a.tag,
                    digest = %a.digest, rule = %a.rule, "retention would delete (rule not enforced)");
            }
            report.retention.push(a);
            return;
        }
        let deleted = async {
            let did = atcr_syntax::Did::new(did)
                .map_err(|e| Error::Internal(format!("an indexed DID: {e}")))?;
            self.manifest_delete(&crate::Repository::of(&did, repo)?, &reference)
                .await
        };
        match deleted.await {
            Ok(()) => {
                tracing::info!(target: "atcr::gc", repository = %a.repository, tag = ?a.tag,
                    digest = %a.digest, rule = %a.rule, "retention deleted");
                report.retention.push(a);
            }
            // Deleted meanwhile (by its owner, or with its subject).
            Err(Error::ManifestUnknown(_)) => {}
            Err(e) => {
                tracing::warn!(target: "atcr::gc", repository = %a.repository, tag = ?a.tag,
                    digest = %a.digest, "retention: {e}");
                report.retention_failures.push((a, e.to_string()));
            }
        }
    }
}

/// What a rule deletes in one repository.
struct Plan {
    /// `(tag, digest)`.
    tags: Vec<(String, String)>,
    /// Manifest digests.
    manifests: Vec<String>,
}

fn plan(rule: &RetentionRule, view: &crate::index::RetentionView, now: i64) -> Plan {
    let mut tags = view.tags.clone();
    // Most recent first; ties by name, so the plan is deterministic.
    tags.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let filters = rule.keep_last.is_some() || rule.keep_tags.is_some();
    let mut kept_tags = vec![];
    let mut deleted_tags = vec![];
    for (i, (tag, digest, _)) in tags.into_iter().enumerate() {
        let keep = !filters
            || rule.keep_last.is_some_and(|n| i < n)
            || rule.keep_tags.as_ref().is_some_and(|r| r.is_match(&tag));
        if keep {
            kept_tags.push(digest);
        } else {
            deleted_tags.push((tag, digest));
        }
    }
    deleted_tags.sort();
    let Some(age) = rule.untagged_older_than else {
        return Plan {
            tags: deleted_tags,
            manifests: vec![],
        };
    };
    let cutoff = now - age.as_secs() as i64;
    // Kept: tagged or young manifests, what kept indexes list, and what
    // refers to a kept manifest (signatures, SBOMs), to a fixed point.
    let mut kept: HashSet<String> = kept_tags.into_iter().collect();
    kept.extend(
        view.manifests
            .iter()
            .filter(|m| m.created_at >= cutoff)
            .map(|m| m.digest.clone()),
    );
    let kids: HashMap<&str, Vec<String>> = view
        .manifests
        .iter()
        .map(|m| (m.digest.as_str(), children(m)))
        .collect();
    loop {
        let before = kept.len();
        for m in &view.manifests {
            if kept.contains(&m.digest) {
                if let Some(k) = kids.get(m.digest.as_str()) {
                    kept.extend(k.iter().cloned());
                }
            } else if m.subject.as_ref().is_some_and(|s| kept.contains(s)) {
                kept.insert(m.digest.clone());
            }
        }
        if kept.len() == before {
            break;
        }
    }
    let registry_artifact = |m: &RetentionManifest| {
        m.record_rkey.is_empty()
            && m.artifact_type.as_deref() == Some(atcr_oci::signature::SIGNATURE_ARTIFACT_TYPE)
    };
    let doomed: HashSet<&str> = view
        .manifests
        .iter()
        .filter(|m| !kept.contains(&m.digest))
        .map(|m| m.digest.as_str())
        .collect();
    let manifests = view
        .manifests
        .iter()
        .filter(|m| !kept.contains(&m.digest))
        // The registry's own signature artifacts go with their subject.
        .filter(|m| {
            !(registry_artifact(m) && m.subject.as_deref().is_some_and(|s| doomed.contains(s)))
        })
        .map(|m| m.digest.clone())
        .collect();
    Plan {
        tags: deleted_tags,
        manifests,
    }
}

/// Refuses an upload of a digest GC is deleting after waiting this long.
pub(crate) const DOOMED_WAIT: Duration = Duration::from_secs(30);

/// The error for an upload that waited [`DOOMED_WAIT`] on a doomed digest.
pub(crate) fn doomed_busy() -> crate::Error {
    Error::Unavailable(
        "garbage collection is deleting this blob; retry the upload's last request".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = glob("alice.example.com/*").unwrap();
        assert!(g.is_match("alice.example.com/app"));
        assert!(!g.is_match("alice.example.com/team/app"));
        assert!(!g.is_match("alice.example.community/app"));
        let g = glob("**").unwrap();
        assert!(g.is_match("a/b/c"));
        let g = glob("did-plc-*/ci-?").unwrap();
        assert!(g.is_match("did-plc-abc/ci-1"));
        assert!(!g.is_match("did-plc-abc/ci-12"));
    }

    fn m(digest: &str, subject: Option<&str>, created_at: i64) -> RetentionManifest {
        RetentionManifest {
            digest: digest.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            subject: subject.map(str::to_owned),
            artifact_type: None,
            record_rkey: "k".into(),
            created_at,
            bytes: b"{}".to_vec(),
        }
    }

    #[test]
    fn plans_keep_recent_and_matching_tags_and_what_they_hold() {
        let mut rule = RetentionRule::new("**").unwrap();
        rule.keep_last = Some(2);
        rule.keep_tags = Some(regex::Regex::new("^v").unwrap());
        rule.untagged_older_than = Some(Duration::from_secs(100));
        let view = crate::index::RetentionView {
            tags: vec![
                ("a".into(), "sha256:a".into(), 10),
                ("b".into(), "sha256:b".into(), 20),
                ("c".into(), "sha256:c".into(), 30),
                ("v1".into(), "sha256:v".into(), 1),
            ],
            manifests: vec![
                m("sha256:a", None, 0),
                m("sha256:b", None, 0),
                m("sha256:c", None, 0),
                m("sha256:v", None, 0),
                m("sha256:sig-of-b", Some("sha256:b"), 0),
                m("sha256:sig-of-a", Some("sha256:a"), 0),
                m("sha256:young", None, 950),
                m("sha256:old", None, 0),
            ],
        };
        let p = plan(&rule, &view, 1000);
        assert_eq!(p.tags, vec![("a".to_owned(), "sha256:a".to_owned())]);
        let mut ms = p.manifests;
        ms.sort();
        assert_eq!(ms, vec!["sha256:a", "sha256:old", "sha256:sig-of-a"]);
    }
}
