//! The owner's PDS, embedded or remote, behind one interface, and the
//! `io.atcr.manifest` / `io.atcr.tag` records written on push.

use crate::index::{Index, StoredSession};
use atcr_pds::{Pds, Write};
use atcr_xrpc::types::{ApplyWrite, ApplyWriteResult, ApplyWritesInput};
use atcr_xrpc::{ClientError, PdsClient, Session};
use std::future::Future;
use std::pin::Pin;

/// The manifest record collection.
pub use atcr_oci::MANIFEST_COLLECTION;
/// The tag record collection.
pub use atcr_oci::TAG_COLLECTION;

/// A boxed future (the trait is object-safe).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a PDS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The PDS refused the content (e.g. a record it cannot store).
    #[error("the PDS refused the record: {0}")]
    Rejected(String),
    /// The owner's session is missing or no longer valid.
    #[error("no valid PDS session for {0}: log in again (docker login)")]
    NoSession(String),
    /// The PDS could not be reached or failed.
    #[error("the owner's PDS is unavailable: {0}")]
    Unavailable(String),
}

/// What one commit wrote.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// CID of the new commit (`None` when nothing changed).
    pub commit_cid: Option<String>,
    /// The new CID of each write (`None` for deletes).
    pub cids: Vec<Option<String>>,
}

/// Write access to one owner's repository.
pub trait OwnerPds: Send + Sync {
    /// The owner DID.
    fn did(&self) -> &str;
    /// Stores blobs `(bytes, mime)` (their references are
    /// [`atcr_pds::blob_ref`]) and applies writes as one commit.
    fn commit(
        &self,
        blobs: Vec<(Vec<u8>, String)>,
        writes: Vec<Write>,
    ) -> BoxFut<'_, Result<Committed, RecordError>>;
    /// CID of the repository's current commit.
    fn latest_commit(&self) -> BoxFut<'_, Result<String, RecordError>>;
    /// A record's current CID and value, `None` when absent.
    fn get_record(
        &self,
        collection: String,
        rkey: String,
    ) -> BoxFut<'_, Result<Option<(String, serde_json::Value)>, RecordError>>;
    /// One page (up to 100) of a collection's records as `(rkey, value)`,
    /// and the cursor of the next page.
    fn list_records(
        &self,
        collection: String,
        cursor: Option<String>,
    ) -> BoxFut<'_, Result<RecordPage, RecordError>>;
}

/// A page of records: `(rkey, value)` and the next cursor.
pub type RecordPage = (Vec<(String, serde_json::Value)>, Option<String>);

/// An owner whose account lives in the embedded PDS.
pub struct EmbeddedOwner {
    pub(crate) pds: Pds,
    pub(crate) did: String,
}

fn from_pds(e: atcr_pds::PdsError) -> RecordError {
    if e.0.status >= 500 {
        RecordError::Unavailable(e.0.to_string())
    } else {
        RecordError::Rejected(e.0.to_string())
    }
}

impl OwnerPds for EmbeddedOwner {
    fn did(&self) -> &str {
        &self.did
    }
    fn latest_commit(&self) -> BoxFut<'_, Result<String, RecordError>> {
        Box::pin(async move {
            let c = self.pds.latest_commit(&self.did).await.map_err(from_pds)?;
            Ok(c.cid)
        })
    }
    fn commit(
        &self,
        blobs: Vec<(Vec<u8>, String)>,
        writes: Vec<Write>,
    ) -> BoxFut<'_, Result<Committed, RecordError>> {
        // One transaction for the blobs and the commit: one fsync.
        Box::pin(async move {
            let r = self
                .pds
                .write_with_blobs(&self.did, blobs, writes, None)
                .await
                .map_err(from_pds)?;
            Ok(Committed {
                commit_cid: r.commit.map(|c| c.cid),
                cids: r.results.into_iter().map(|(_, cid)| cid).collect(),
            })
        })
    }
    fn get_record(
        &self,
        collection: String,
        rkey: String,
    ) -> BoxFut<'_, Result<Option<(String, serde_json::Value)>, RecordError>> {
        Box::pin(async move {
            match self.pds.get_record(&self.did, &collection, &rkey).await {
                Ok(r) => Ok(r),
                Err(e) if e.0.error == "RecordNotFound" => Ok(None),
                Err(e) => Err(from_pds(e)),
            }
        })
    }
    fn list_records(
        &self,
        collection: String,
        cursor: Option<String>,
    ) -> BoxFut<'_, Result<RecordPage, RecordError>> {
        Box::pin(async move {
            let (rows, next) = self
                .pds
                .list_records(&self.did, &collection, 100, cursor, false)
                .await
                .map_err(from_pds)?;
            Ok((rows.into_iter().map(|(k, _, v)| (k, v)).collect(), next))
        })
    }
}

/// An owner whose account lives on another PDS; writes use the session
/// obtained when they logged in to the registry.
pub struct RemoteOwner {
    pub(crate) client: PdsClient,
    pub(crate) did: String,
    pub(crate) index: Index,
}

fn from_client(did: &str, e: ClientError) -> RecordError {
    match e.xrpc_name() {
        Some(
            "ExpiredToken"
            | "InvalidToken"
            | "AuthenticationRequired"
            | "AuthRequired"
            | "AuthMissing",
        ) => RecordError::NoSession(did.to_owned()),
        _ if e.is_transient() => RecordError::Unavailable(e.to_string()),
        Some(_) => RecordError::Rejected(e.to_string()),
        None => RecordError::Unavailable(e.to_string()),
    }
}

impl RemoteOwner {
    /// Persists the session when the client refreshed it.
    async fn save(&self, before: Option<Session>) {
        let now = self.client.session();
        if now != before
            && let Some(s) = now
        {
            let stored = StoredSession {
                pds: self.client.base().to_string(),
                handle: s.handle,
                access_jwt: s.access_jwt,
                refresh_jwt: s.refresh_jwt,
            };
            if let Err(e) = self.index.save_session(&self.did, &stored).await {
                tracing::warn!("saving the refreshed PDS session of {}: {e}", self.did);
            }
        }
    }
}

impl RemoteOwner {
    /// Uploads blobs; each reference the PDS returns must be the one the
    /// records were built with.
    async fn upload_blobs(&self, blobs: Vec<(Vec<u8>, String)>) -> Result<(), RecordError> {
        for (bytes, mime) in blobs {
            let expected = atcr_pds::blob_ref(&bytes, &mime);
            let out = self
                .client
                .upload_blob(bytes, &mime)
                .await
                .map_err(|e| from_client(&self.did, e))?;
            if out.blob["ref"] != expected["ref"] {
                return Err(RecordError::Rejected(format!(
                    "the PDS stored the blob as {}, expected {}",
                    out.blob["ref"], expected["ref"]
                )));
            }
        }
        Ok(())
    }
}

impl OwnerPds for RemoteOwner {
    fn did(&self) -> &str {
        &self.did
    }
    fn latest_commit(&self) -> BoxFut<'_, Result<String, RecordError>> {
        Box::pin(async move {
            let c = self
                .client
                .get_latest_commit(&self.did)
                .await
                .map_err(|e| from_client(&self.did, e))?;
            Ok(c.cid)
        })
    }
    fn commit(
        &self,
        blobs: Vec<(Vec<u8>, String)>,
        writes: Vec<Write>,
    ) -> BoxFut<'_, Result<Committed, RecordError>> {
        Box::pin(async move {
            let before = self.client.session();
            let uploaded = self.upload_blobs(blobs).await;
            self.save(before).await;
            uploaded?;
            // applyWrites#update of a record that does not exist fails on the
            // reference PDS, so an upsert becomes a create when it is absent
            // (the caller holds the owner's write lock).
            let mut mapped = Vec::with_capacity(writes.len());
            for w in writes {
                mapped.push(match w {
                    Write::Create {
                        collection,
                        rkey,
                        record,
                    } => ApplyWrite::Create {
                        collection,
                        rkey,
                        value: record,
                    },
                    Write::Put {
                        collection,
                        rkey,
                        record,
                        ..
                    } => {
                        let exists =
                            match self.client.get_record(&self.did, &collection, &rkey).await {
                                Ok(_) => true,
                                Err(e) if e.xrpc_name() == Some("RecordNotFound") => false,
                                Err(e) => return Err(from_client(&self.did, e)),
                            };
                        if exists {
                            ApplyWrite::Update {
                                collection,
                                rkey,
                                value: record,
                            }
                        } else {
                            ApplyWrite::Create {
                                collection,
                                rkey: Some(rkey),
                                value: record,
                            }
                        }
                    }
                    Write::Delete {
                        collection, rkey, ..
                    } => ApplyWrite::Delete { collection, rkey },
                });
            }
            let writes = mapped;
            let input = ApplyWritesInput {
                repo: self.did.clone(),
                validate: Some(false),
                writes,
                swap_commit: None,
            };
            let before = self.client.session();
            let r = self.client.apply_writes(&input).await;
            self.save(before).await;
            let out = r.map_err(|e| from_client(&self.did, e))?;
            Ok(Committed {
                commit_cid: Some(out.commit.cid),
                cids: out
                    .results
                    .into_iter()
                    .map(|r| match r {
                        ApplyWriteResult::Create { cid, .. }
                        | ApplyWriteResult::Update { cid, .. } => Some(cid),
                        ApplyWriteResult::Delete {} => None,
                    })
                    .collect(),
            })
        })
    }
    fn get_record(
        &self,
        collection: String,
        rkey: String,
    ) -> BoxFut<'_, Result<Option<(String, serde_json::Value)>, RecordError>> {
        Box::pin(async move {
            match self.client.get_record(&self.did, &collection, &rkey).await {
                Ok(r) => Ok(Some((r.cid, r.value))),
                Err(e) if e.xrpc_name() == Some("RecordNotFound") => Ok(None),
                Err(e) => Err(from_client(&self.did, e)),
            }
        })
    }
    fn list_records(
        &self,
        collection: String,
        cursor: Option<String>,
    ) -> BoxFut<'_, Result<RecordPage, RecordError>> {
        Box::pin(async move {
            let out = self
                .client
                .list_records(&self.did, &collection, 100, cursor.as_deref())
                .await
                .map_err(|e| from_client(&self.did, e))?;
            let rows = out
                .records
                .into_iter()
                .filter_map(|r| {
                    let rkey = r.uri.rsplit('/').next()?.to_owned();
                    Some((rkey, r.value))
                })
                .collect();
            Ok((rows, out.cursor))
        })
    }
}

pub use atcr_oci::tag_rkey;

/// The at-uri of a record.
pub fn at_uri(did: &str, collection: &str, rkey: &str) -> String {
    format!("at://{did}/{collection}/{rkey}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use atcr_oci::records::{ManifestRecord, TagRecord, to_json};

    #[test]
    fn tag_keys_are_legal_and_distinct() {
        let a = tag_rkey("team/app", "v1");
        let b = tag_rkey("team~app", "v1");
        assert_eq!(a, "team~app:v1");
        assert!(atcr_syntax::RecordKey::new(&a).is_ok());
        // "team~app" is not a legal REPO, so the mapping cannot collide.
        assert!(atcr_oci::RepoName::parse("alice.test/team~app").is_err());
        assert_eq!(a, b);
        // The longest REPO and tag still make a legal key (≤ 512 bytes).
        let longest = tag_rkey(&"a/".repeat(120), &"t".repeat(128));
        assert!(atcr_syntax::RecordKey::new(&longest).is_ok());
    }

    fn required(lexicon: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../lexicons/io/atcr")
            .join(lexicon);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::from_value(v["defs"]["main"]["record"]["required"].clone()).unwrap()
    }

    #[test]
    fn records_carry_every_field_their_lexicon_requires() {
        let m = to_json(&ManifestRecord::new(
            "team/app",
            "sha256:00",
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::json!({"schemaVersion": 2, "layers": []}),
            serde_json::json!({"$type": "blob"}),
            "2026-11-22T00:00:00.000Z",
        ));
        for f in required("manifest.json") {
            assert!(m.get(&f).is_some(), "manifest record lacks {f}");
        }
        assert_eq!(m["$type"], MANIFEST_COLLECTION);
        let t = to_json(&TagRecord::new(
            "team/app",
            "v1",
            "sha256:00",
            "at://x/y/z",
            "2026-11-22T00:00:00.000Z",
        ));
        for f in required("tag.json") {
            assert!(t.get(&f).is_some(), "tag record lacks {f}");
        }
        assert_eq!(t["$type"], TAG_COLLECTION);
    }
}
