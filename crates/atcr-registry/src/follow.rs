//! Following the owners' PDS: records changed outside the registry (a tag
//! record deleted with any ATProto client, a manifest record removed) are
//! applied to the index, so the index keeps equalling the owner's records.
//!
//! Events are only a trigger. Whatever an event says, the record's current
//! state is read back from the owner's repository, under the owner's commit
//! lock, and that state is what the index takes: a replayed, reordered or
//! forged event can make the follower look, never make it believe. The
//! registry's own writes are recognised cheaply (the index already holds the
//! record CID the event names) and cost no PDS read.

use crate::records::OwnerPds;
use crate::{Error, Registry, Result};
use atcr_oci::records::{ManifestRecord, TagRecord, from_json};
use atcr_oci::{Digest, MANIFEST_COLLECTION, TAG_COLLECTION};
use atcr_pds::events::CursorStart;
use atcr_repo::firehose::{CommitEvent, Frame, decode_frame_ops};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use std::time::Instant;

/// The cursor name of the embedded PDS's stream in the index.
pub const EMBEDDED_SOURCE: &str = "embedded";

/// Events read per batch; the cursor is saved after each.
const BATCH: usize = 256;

/// Largest CAR slice accepted in a frame (the embedded PDS writes at most
/// 200 operations of records under 1 MiB).
const MAX_FRAME_BLOCKS: usize = 32 << 20;

/// Most records listed per collection when re-reading an owner.
const MAX_RESYNC_RECORDS: usize = 100_000;

/// `REPO`, `TAG` of a tag record key ([`atcr_oci::tag_rkey`]).
fn parse_tag_rkey(rkey: &str) -> Option<(String, String)> {
    let (repo, tag) = rkey.split_once(':')?;
    let repo = repo.replace('~', "/");
    (atcr_oci::tag_rkey(&repo, tag) == rkey && !tag.is_empty()).then(|| (repo, tag.to_owned()))
}

impl Registry {
    /// Follows the embedded PDS's event stream for as long as it runs,
    /// resuming after the last event applied (kept in the index).
    pub async fn follow_embedded(&self) {
        let Some(pds) = self.inner.pds.clone() else {
            return;
        };
        let mut watch = pds.event_watch();
        let mut after = loop {
            match self.follow_start(&pds).await {
                Ok(a) => break a,
                Err(e) => {
                    tracing::warn!("following the embedded PDS: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch = match pds.events_after(after, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("reading the embedded PDS's events: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let full = batch.len() == BATCH;
            let before = after;
            let mut failed = false;
            for (seq, frame) in batch {
                if let Err(e) = self.apply_frame(&frame).await {
                    // Not skipped: the same event is applied again after a pause.
                    tracing::warn!(seq, "applying a PDS event to the index: {e}; retrying");
                    failed = true;
                    break;
                }
                after = seq;
            }
            if after != before
                && let Err(e) = self.index().set_follow_cursor(EMBEDDED_SOURCE, after).await
            {
                tracing::warn!("saving the follow cursor: {e}");
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            backoff = Duration::from_millis(100);
            if !full {
                // Wait for news; the value itself is re-read from the log.
                if *watch.borrow_and_update() <= after && watch.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Where following starts: after the saved cursor, or, when the PDS no
    /// longer holds the events after it (pruned, or a different PDS log),
    /// after a full re-read of every owner hosted there.
    async fn follow_start(&self, pds: &atcr_pds::Pds) -> Result<i64> {
        let saved = self.index().follow_cursor(EMBEDDED_SOURCE).await?;
        let start = pds
            .cursor_start(Some(saved.unwrap_or(0)))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let after = match start {
            CursorStart::After(a) => return Ok(a),
            CursorStart::Outdated(first) => first,
            CursorStart::Future => pds.latest_seq(),
        };
        tracing::info!(
            ?saved,
            "the embedded PDS no longer has the events after the registry's cursor; re-reading every owner"
        );
        for did in self.index().owners().await? {
            if pds.lookup_did(&did).await.is_ok() {
                self.resync_owner(&did).await?;
            }
        }
        self.index()
            .set_follow_cursor(EMBEDDED_SOURCE, after)
            .await?;
        Ok(after)
    }

    /// Applies one event-stream frame; returns the index rows changed.
    /// Frames that do not decode are skipped (logged): they cannot name a
    /// record to look at.
    pub async fn apply_frame(&self, frame: &[u8]) -> Result<usize> {
        match decode_frame_ops(frame, MAX_FRAME_BLOCKS) {
            Ok(Frame::Commit(ev)) => self.apply_commit(&ev).await,
            Ok(Frame::Account {
                did,
                active: false,
                status,
                ..
            }) if status.as_deref() == Some("deleted") => {
                // Only an account the embedded PDS really no longer has.
                match &self.inner.pds {
                    Some(p) if p.lookup_did(&did).await.is_err() => {
                        match atcr_syntax::Did::new(did) {
                            Ok(did) => self.forget_owner(&did).await,
                            Err(e) => Err(Error::Internal(format!("a firehose DID: {e}"))),
                        }
                    }
                    _ => Ok(0),
                }
            }
            Ok(_) => Ok(0),
            Err(e) => {
                tracing::warn!("an event that does not decode: {e}");
                Ok(0)
            }
        }
    }

    /// Applies the `io.atcr.tag` / `io.atcr.manifest` operations of a commit.
    pub async fn apply_commit(&self, ev: &CommitEvent) -> Result<usize> {
        let did = ev.repo.as_str();
        let mut changed = 0;
        for op in &ev.ops {
            let Some((collection, rkey)) = op.path.split_once('/') else {
                continue;
            };
            let op_cid = op.cid.as_ref().map(ToString::to_string);
            if collection == TAG_COLLECTION {
                let Some((repo, tag)) = parse_tag_rkey(rkey) else {
                    continue;
                };
                let known = self.index().tag(did, &repo, &tag).await?;
                let agrees = match (&known, &op_cid) {
                    (None, None) => true,
                    (Some((_, cid)), Some(op_cid)) => cid == op_cid,
                    _ => false,
                };
                if agrees {
                    continue;
                }
                let Ok(owner) = self.owner_pds(did).await else {
                    continue; // not an owner this registry writes for
                };
                let queue = self.owner_queue(did);
                let _guard = queue.commit.lock().await;
                // Across replicas too (a shared index).
                let _owner = self.inner.index.lock_owner(did).await?;
                let current = owner
                    .get_record(TAG_COLLECTION.into(), rkey.to_owned())
                    .await
                    .map_err(Error::from)?;
                changed += self.settle_tag(did, &repo, &tag, current).await? as usize;
            } else if collection == atcr_oci::SIGNATURE_COLLECTION && op.action == "create" {
                // A co-signature: made into an artifact when it signs a
                // manifest held here; a refusal is the signer's, not the
                // stream's, so it is logged and the stream goes on.
                match self
                    .cosign_from_record(did, rkey, &ev.commit.to_string())
                    .await
                {
                    Ok(added) => changed += added as usize,
                    Err(e) => {
                        tracing::info!(signer = did, rkey, "co-signature record not taken: {}", e)
                    }
                }
            } else if collection == MANIFEST_COLLECTION {
                let Some((repo, digest, cid)) = self.index().manifest_by_record(did, rkey).await?
                else {
                    // A manifest record the registry never wrote: its
                    // manifest and blobs are not here to serve.
                    continue;
                };
                if op_cid.as_deref() == Some(cid.as_str()) {
                    continue;
                }
                let Ok(owner) = self.owner_pds(did).await else {
                    continue;
                };
                let queue = self.owner_queue(did);
                let _guard = queue.commit.lock().await;
                // Across replicas too (a shared index).
                let _owner = self.inner.index.lock_owner(did).await?;
                let current = owner
                    .get_record(MANIFEST_COLLECTION.into(), rkey.to_owned())
                    .await
                    .map_err(Error::from)?;
                changed += self
                    .settle_manifest(did, &repo, &digest, rkey, current)
                    .await? as usize;
            }
        }
        Ok(changed)
    }

    /// Brings a tag's index row to the record's current state. The caller
    /// holds the owner's commit lock.
    async fn settle_tag(
        &self,
        did: &str,
        repo: &str,
        tag: &str,
        current: Option<(String, serde_json::Value)>,
    ) -> Result<bool> {
        let to = match current {
            None => None,
            Some((cid, value)) => {
                let digest = from_json::<TagRecord>(&value)
                    .ok()
                    .and_then(|r| r.digest_for(repo, tag).map(str::to_owned));
                match digest {
                    // A tag is served only for a manifest the registry holds.
                    Some(d) if self.index().manifest(did, repo, &d, false).await?.is_some() => {
                        Some((d, cid))
                    }
                    _ => None,
                }
            }
        };
        let removed = to.is_none();
        let changed = self.index().settle_tag(did, repo, tag, to).await?;
        if changed {
            tracing::info!(
                did,
                repo,
                tag,
                removed,
                "tag changed in the owner's PDS; index updated"
            );
        }
        Ok(changed)
    }

    /// Brings a manifest's index row to its record's current state: gone
    /// (or no longer signing this manifest) is a revocation: its tags go, so
    /// it is not pullable by tag; by digest it still is, and a verifier then
    /// reports it revoked.
    async fn settle_manifest(
        &self,
        did: &str,
        repo: &str,
        digest: &str,
        rkey: &str,
        current: Option<(String, serde_json::Value)>,
    ) -> Result<bool> {
        let still = current.and_then(|(cid, value)| {
            let d = Digest::parse(digest).ok()?;
            from_json::<ManifestRecord>(&value)
                .ok()
                .filter(|r| r.check_names(repo, &d).is_ok())
                .map(|_| cid)
        });
        match still {
            Some(cid) => {
                self.index().set_manifest_record(did, rkey, &cid).await?;
                Ok(false)
            }
            None => {
                let untagged = self.index().untag_manifest(did, repo, digest).await?;
                if untagged {
                    tracing::info!(
                        did,
                        repo,
                        digest,
                        "manifest record gone from the owner's PDS (revoked); its tags removed"
                    );
                }
                Ok(untagged)
            }
        }
    }

    /// Re-reads every tag and manifest record of an owner and brings the
    /// index to them (after missed events). Returns the rows changed.
    pub async fn resync_owner(&self, did: &str) -> Result<usize> {
        let owner = self.owner_pds(did).await?;
        let queue = self.owner_queue(did);
        let _guard = queue.commit.lock().await;
        // Across replicas too (a shared index).
        let _owner = self.inner.index.lock_owner(did).await?;
        let tags = list_all(owner.as_ref(), TAG_COLLECTION).await?;
        let manifests = list_all(owner.as_ref(), MANIFEST_COLLECTION).await?;
        let mut changed = 0;
        for (rkey, (cid, _)) in &manifests {
            if let Some((_, _, known)) = self.index().manifest_by_record(did, rkey).await?
                && &known != cid
            {
                self.index().set_manifest_record(did, rkey, cid).await?;
            }
        }
        for (rkey, _) in self.index().owner_manifest_records(did).await? {
            if let Some((repo, digest, _)) = self.index().manifest_by_record(did, &rkey).await? {
                let current = manifests.get(&rkey).cloned();
                changed += self
                    .settle_manifest(did, &repo, &digest, &rkey, current)
                    .await? as usize;
            }
        }
        for (repo, tag, _) in self.index().owner_tags(did).await? {
            let current = tags.get(&atcr_oci::tag_rkey(&repo, &tag)).cloned();
            changed += self.settle_tag(did, &repo, &tag, current).await? as usize;
        }
        // Tags set outside the registry (created, or moved) are taken too.
        for (rkey, current) in tags {
            if let Some((repo, tag)) = parse_tag_rkey(&rkey)
                && self.index().repository_exists(did, &repo).await?
            {
                changed += self.settle_tag(did, &repo, &tag, Some(current)).await? as usize;
            }
        }
        Ok(changed)
    }
}

/// Most bytes of one message from a remote PDS's event stream.
const MAX_REMOTE_MESSAGE: usize = 8 << 20;

/// A remote stream silent this long is reconnected (PDSes ping idle ones).
const REMOTE_IDLE: Duration = Duration::from_secs(300);

/// How often the set of owners a remote PDS hosts is re-read.
const HOSTED_REFRESH: Duration = Duration::from_secs(5);

/// Longest pause between reconnections to a remote PDS.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A connection to a remote PDS: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Why a remote stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// The PDS closed it (or went silent): reconnect soon.
    Closed,
    /// Anything else: reconnect after a growing pause.
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for StreamEnd {
    fn from(e: E) -> Self {
        Self::Failed(e.to_string())
    }
}

impl Registry {
    /// Follows the event stream of every remote PDS an owner here logged in
    /// with (`subscribeRepos` over the network), one task per PDS, each
    /// resuming from its cursor and reconnecting with backoff. PDSes of new
    /// sessions are picked up within a second.
    pub async fn follow_remote(&self) {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        // Tasks end with this one (the caller aborts it on shutdown).
        struct AbortAll<'a>(&'a mut HashMap<String, tokio::task::JoinHandle<()>>);
        impl Drop for AbortAll<'_> {
            fn drop(&mut self) {
                for t in self.0.values() {
                    t.abort();
                }
            }
        }
        let guard = AbortAll(&mut running);
        loop {
            match self.index().remote_pdses().await {
                Ok(list) => {
                    for pds in list {
                        if guard.0.get(&pds).is_some_and(|t| !t.is_finished()) {
                            continue;
                        }
                        let Ok(base) = url::Url::parse(&pds) else {
                            continue;
                        };
                        let reg = self.clone();
                        let source = pds.clone();
                        let task = tokio::spawn(async move { reg.follow_pds(source, base).await });
                        guard.0.insert(pds, task);
                    }
                }
                Err(e) => tracing::warn!("listing remote PDSes to follow: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Follows one remote PDS (`source`: its URL as the owners' sessions
    /// store it) for as long as an owner here uses it.
    async fn follow_pds(&self, source: String, base: url::Url) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.index().owners_at(&source).await {
                Ok(o) if o.is_empty() => return,
                _ => {}
            }
            match self.follow_pds_once(&source, &base).await {
                StreamEnd::Closed => backoff = Duration::from_secs(1),
                StreamEnd::Failed(e) => {
                    tracing::warn!(pds = %source, "following the PDS's event stream: {e}; reconnecting in {backoff:?}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection to a remote PDS's stream, until it ends.
    async fn follow_pds_once(&self, source: &str, base: &url::Url) -> StreamEnd {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        let cursor = match self.index().follow_cursor(source).await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let mut ws = match self.connect_stream(base, cursor).await {
            Ok(ws) => ws,
            Err(e) => return StreamEnd::Failed(e),
        };
        if cursor.is_none() {
            // First contact (or the PDS lost our cursor): what changed before
            // is read from the records themselves.
            // A failure is logged, not fatal: the stream is still followed,
            // and the next first contact (no cursor yet) tries again.
            if let Err(e) = self.resync_pds(source).await {
                tracing::warn!(pds = %source, "re-reading the owners' records: {}", e);
            }
        }
        tracing::info!(pds = %source, ?cursor, "following the PDS's event stream");
        let mut last = cursor.unwrap_or(0);
        let mut saved = (last, Instant::now());
        // The owners this PDS hosts, re-read every few seconds: a busy PDS's
        // stream is mostly other people's commits, skipped without a query.
        let mut hosted = (HashSet::new(), Instant::now() - HOSTED_REFRESH);
        let mut forget_cursor = false;
        let end = loop {
            let msg = match tokio::time::timeout(REMOTE_IDLE, ws.next()).await {
                Err(_) | Ok(None) => break StreamEnd::Closed,
                Ok(Some(Err(e))) => break e.into(),
                Ok(Some(Ok(m))) => m,
            };
            let bytes = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break StreamEnd::Closed,
                _ => continue,
            };
            let frame = match decode_frame_ops(&bytes, MAX_REMOTE_MESSAGE) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(pds = %source, "an event that does not decode, skipped: {e}");
                    continue;
                }
            };
            match &frame {
                Frame::Error { error, message } => {
                    // After FutureCursor the PDS's log is not the one our
                    // cursor counts in.
                    forget_cursor = error == "FutureCursor";
                    break StreamEnd::Failed(format!(
                        "error frame {error}: {}",
                        message.as_deref().unwrap_or("")
                    ));
                }
                Frame::Info { name, .. } if name == "OutdatedCursor" => {
                    if let Err(e) = self.resync_pds(source).await {
                        tracing::warn!(pds = %source, "re-reading the owners' records: {}", e);
                    }
                    continue;
                }
                _ => {}
            }
            let Some(seq) = frame.seq() else { continue };
            if seq <= last {
                continue; // replayed: already applied
            }
            if let Frame::Commit(ev) = &frame {
                if hosted.1.elapsed() >= HOSTED_REFRESH {
                    match self.index().owners_at(source).await {
                        Ok(o) => hosted = (o.into_iter().collect(), Instant::now()),
                        Err(e) => break e.into(),
                    }
                }
                // Only commits of owners whose PDS this is: a PDS speaks for
                // the repositories it hosts, never for others.
                if hosted.0.contains(&ev.repo)
                    && let Err(e) = self.apply_commit(ev).await
                {
                    break e.to_string().into();
                }
            }
            last = seq;
            // Saved at most once a second: at worst a second of events is
            // looked at again after a restart (applying is idempotent).
            if saved.1.elapsed() >= Duration::from_secs(1) {
                if let Err(e) = self.index().set_follow_cursor(source, last).await {
                    break e.into();
                }
                saved = (last, Instant::now());
            }
        };
        let kept = if forget_cursor {
            self.index().clear_follow_cursor(source).await
        } else if last != saved.0 {
            self.index().set_follow_cursor(source, last).await
        } else {
            Ok(())
        };
        if let Err(e) = kept {
            tracing::warn!(pds = %source, "saving the follow cursor: {e}");
        }
        end
    }

    /// Re-reads the records of every owner whose session is with `pds`.
    async fn resync_pds(&self, pds: &str) -> Result<usize> {
        let mut changed = 0;
        for did in self.index().owners_at(pds).await? {
            changed += self.resync_owner(&did).await?;
        }
        Ok(changed)
    }

    /// Opens `subscribeRepos` on a remote PDS. The egress rules apply as to
    /// every request the registry makes for a user: the URL's scheme, and
    /// each address the name resolves to (checked here, then connected to).
    async fn connect_stream(
        &self,
        base: &url::Url,
        cursor: Option<i64>,
    ) -> std::result::Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>, String> {
        let egress = &self.inner.egress;
        egress.check_url(base)?;
        let host = base
            .host_str()
            .ok_or("a PDS URL without a host")?
            .to_owned();
        let port = base
            .port_or_known_default()
            .ok_or("a PDS URL without a port")?;
        let mut url = base
            .join("xrpc/com.atproto.sync.subscribeRepos")
            .map_err(|e| e.to_string())?;
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", &c.to_string());
        }
        let tls = url.scheme() == "https";
        url.set_scheme(if tls { "wss" } else { "ws" })
            .map_err(|()| "cannot make a WebSocket URL".to_owned())?;
        let trimmed = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((trimmed.as_str(), port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .filter(|a| egress.allows_host(&host) || egress.allows_ip(a.ip()))
            .collect();
        if addrs.is_empty() {
            return Err(format!(
                "{host} has no public address (registry.remote_pds_allow)"
            ));
        }
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&addrs[..]),
        )
        .await
        .map_err(|_| format!("{host}: connect timed out"))?
        .map_err(|e| format!("{host}: {e}"))?;
        let io: Box<dyn Io> = if tls {
            use rustls_platform_verifier::ConfigVerifierExt as _;
            atcr_http::install_crypto_provider();
            let config =
                rustls::ClientConfig::with_platform_verifier().map_err(|e| format!("TLS: {e}"))?;
            let name = rustls::pki_types::ServerName::try_from(trimmed)
                .map_err(|e| format!("{host}: {e}"))?;
            Box::new(
                tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("{host}: TLS: {e}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(MAX_REMOTE_MESSAGE);
        config.max_frame_size = Some(MAX_REMOTE_MESSAGE);
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(config)),
        )
        .await
        .map_err(|_| format!("{host}: WebSocket handshake timed out"))?
        .map_err(|e| format!("{host}: {e}"))?;
        Ok(ws)
    }
}

/// Every record of a collection as `rkey → (cid, value)`.
pub(crate) async fn list_all(
    owner: &dyn OwnerPds,
    collection: &str,
) -> Result<HashMap<String, (String, serde_json::Value)>> {
    let mut out = HashMap::new();
    let mut cursor = None;
    loop {
        let (rows, next) = owner
            .list_records(collection.to_owned(), cursor.take())
            .await
            .map_err(Error::from)?;
        for (rkey, value) in rows {
            // listRecords gives values; the CID is read per record only when
            // needed, so the value's own CID is computed here instead.
            let cid = atcr_data::json::from_json(&value)
                .map(|v| atcr_data::cid_for_cbor(&atcr_data::to_cbor(&v)).to_string())
                .unwrap_or_default();
            out.insert(rkey, (cid, value));
        }
        match next {
            Some(c) if out.len() < MAX_RESYNC_RECORDS => cursor = Some(c),
            Some(_) => {
                return Err(Error::Unavailable(format!(
                    "over {MAX_RESYNC_RECORDS} {collection} records"
                )));
            }
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rkeys_parse_back_and_reject_others() {
        assert_eq!(
            parse_tag_rkey(&atcr_oci::tag_rkey("team/app", "v1.0")),
            Some(("team/app".into(), "v1.0".into()))
        );
        assert_eq!(parse_tag_rkey("3kabcdefghij2"), None);
        assert_eq!(parse_tag_rkey("app:"), None);
    }
}
