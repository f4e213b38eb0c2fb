//! The repository event log behind `com.atproto.sync.subscribeRepos`.
//!
//! Every repository change is sequenced in the same transaction as the
//! change itself (so an event exists exactly when its commit does), as a
//! ready-to-send frame. Sequence numbers are persisted and never reused
//! (`AUTOINCREMENT`). Events older than the backfill window are pruned;
//! a cursor behind the window gets an `#info OutdatedCursor` and the oldest
//! retained events. Live consumers are woken through a watch channel holding
//! the newest sequence number and read frames from the log, so a consumer's
//! memory is one batch whatever its lag, and commits are seen in sequence
//! order however the writers' tasks interleave.

use crate::{Pds, PdsError, PdsResult};
use atcr_data::{Cid, Value};
use atcr_repo::firehose::{self, RepoOp};
use atcr_repo::{AppliedOp, BlockMap, CommitData};
use atcr_sqlite::rusqlite::{self, OptionalExtension};
use std::time::Duration;

/// Frames read from the log at once by one consumer.
pub const BATCH: usize = 256;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Prunes the log every this many events.
const PRUNE_EVERY: i64 = 256;

/// Appends an event to the log inside the caller's transaction, returning
/// its sequence number.
pub(crate) fn sequence(
    tx: &rusqlite::Transaction<'_>,
    did: &str,
    t: &str,
    body: Value,
    backfill: Duration,
) -> rusqlite::Result<i64> {
    let now = now_ms();
    tx.prepare_cached(
        "INSERT INTO repo_seq (did, kind, frame, sequenced_at) VALUES (?1, ?2, x'', ?3)",
    )?
    .execute((did, t, now))?;
    let seq = tx.last_insert_rowid();
    let frame = firehose::message_frame(t, &firehose::with_seq(body, seq));
    tx.prepare_cached("UPDATE repo_seq SET frame = ?2 WHERE seq = ?1")?
        .execute((seq, frame))?;
    if seq % PRUNE_EVERY == 0 {
        let cutoff = now - backfill.as_millis() as i64;
        let through: Option<i64> = tx
            .query_row(
                "SELECT MAX(seq) FROM repo_seq WHERE sequenced_at < ?1",
                [cutoff],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if let Some(through) = through {
            tx.execute("DELETE FROM repo_seq WHERE seq <= ?1", [through])?;
            tx.execute(
                "UPDATE seq_meta SET pruned_through = MAX(pruned_through, ?1)",
                [through],
            )?;
        }
    }
    Ok(seq)
}

/// The `#commit` event of a write.
pub(crate) fn commit_event(
    did: &str,
    data: &CommitData,
    since: Option<&str>,
    prev_data: Option<&Cid>,
    blobs: &[Cid],
) -> Value {
    let mut blocks = BlockMap::new();
    blocks.extend(&data.new_blocks);
    blocks.extend(&data.relevant_blocks);
    let ops: Vec<RepoOp> = data.ops.iter().map(repo_op).collect();
    firehose::commit_body(
        did,
        &data.commit_cid,
        data.commit.rev.as_str(),
        since,
        &blocks,
        &ops,
        blobs,
        prev_data,
        atcr_syntax::Datetime::now().as_str(),
    )
}

fn repo_op(op: &AppliedOp) -> RepoOp {
    let action = match (op.cid, op.prev) {
        (Some(_), None) => "create",
        (Some(_), Some(_)) => "update",
        (None, _) => "delete",
    };
    RepoOp {
        action: action.into(),
        path: op.path.clone(),
        cid: op.cid,
        prev: op.prev,
    }
}

/// What a consumer asked for with its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStart {
    /// Events after this sequence number.
    After(i64),
    /// The cursor is behind the backfill window: the oldest retained
    /// events follow, after an `#info OutdatedCursor`.
    Outdated(i64),
    /// The cursor is ahead of the stream.
    Future,
}

impl Pds {
    /// Tells consumers that events up to `seq` are committed.
    pub(crate) fn published(&self, seq: i64) {
        self.inner.events.send_modify(|s| *s = (*s).max(seq));
    }

    /// A receiver of the newest committed sequence number.
    pub fn event_watch(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.events.subscribe()
    }

    /// The newest committed sequence number.
    pub fn latest_seq(&self) -> i64 {
        *self.inner.events.borrow()
    }

    /// Where a consumer with `cursor` starts (`None`: live, after the
    /// newest event).
    pub async fn cursor_start(&self, cursor: Option<i64>) -> PdsResult<CursorStart> {
        let latest = self.latest_seq();
        let Some(cursor) = cursor else {
            return Ok(CursorStart::After(latest));
        };
        if cursor > latest {
            return Ok(CursorStart::Future);
        }
        let pruned: i64 = self
            .db()
            .read(|c| {
                c.query_row("SELECT pruned_through FROM seq_meta", [], |r| r.get(0))
                    .map_err(PdsError::from)
            })
            .await?;
        Ok(if cursor < pruned {
            CursorStart::Outdated(pruned)
        } else {
            CursorStart::After(cursor.max(0))
        })
    }

    /// Up to `limit` frames after `after`, in sequence order.
    pub async fn events_after(&self, after: i64, limit: usize) -> PdsResult<Vec<(i64, Vec<u8>)>> {
        self.db()
            .read(move |c| {
                let mut s = c.prepare_cached(
                    "SELECT seq, frame FROM repo_seq WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = s.query_map((after, limit as i64), |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(PdsError::from)
            })
            .await
    }
}

/// The newest sequence number in the log at `path` (read once at start-up).
pub(crate) fn max_seq(path: &std::path::Path) -> rusqlite::Result<i64> {
    let c = rusqlite::Connection::open(path)?;
    c.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'repo_seq'), 0)",
        [],
        |r| r.get(0),
    )
}
