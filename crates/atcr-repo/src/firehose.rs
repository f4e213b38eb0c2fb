//! `com.atproto.sync.subscribeRepos` frames: encoding (for the PDS) and
//! strict decoding (for consumers such as the registry's follower).
//!
//! A frame is two DAG-CBOR values back to back: a header `{op, t}` (`op` 1
//! for a message of type `t`, -1 for an error) and the body. Decoding is
//! bounded and never trusts a field it has not checked: every block of a
//! commit's CAR slice is hash-checked, lists are capped, and unknown message
//! types decode as [`Frame::Unknown`] (consumers skip them, as the lexicon
//! requires).

use crate::{BlockMap, CarError, read_car, write_car};
use atcr_data::{Cid, DataError, Value, from_cbor_prefix, to_cbor};
use std::collections::BTreeMap;

/// Most operations a `#commit` frame may carry (the lexicon's bound).
pub const MAX_OPS: usize = 200;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not two DAG-CBOR values.
    #[error("frame is not DAG-CBOR: {0}")]
    Cbor(#[from] DataError),
    /// A required field is missing or has the wrong type.
    #[error("frame field {0} is missing or malformed")]
    Field(&'static str),
    /// The CAR slice of a commit is bad.
    #[error("frame blocks: {0}")]
    Car(#[from] CarError),
}

/// An operation of a `#commit` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOp {
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `collection/rkey`.
    pub path: String,
    /// The record CID after the commit (`None` for a delete).
    pub cid: Option<Cid>,
    /// The record CID before the commit (updates and deletes).
    pub prev: Option<Cid>,
}

/// A `#commit` message.
#[derive(Debug, Clone)]
pub struct CommitEvent {
    /// Sequence number.
    pub seq: i64,
    /// The repository's DID.
    pub repo: String,
    /// The new commit's CID.
    pub commit: Cid,
    /// The new commit's revision.
    pub rev: String,
    /// The previous commit's revision (`None` for the first commit).
    pub since: Option<String>,
    /// The blocks of the CAR slice (hash-checked), and its roots.
    pub blocks: BlockMap,
    /// The CAR slice's roots.
    pub roots: Vec<Cid>,
    /// The operations.
    pub ops: Vec<RepoOp>,
    /// The previous commit's data (MST root) CID.
    pub prev_data: Option<Cid>,
    /// When the PDS sequenced it.
    pub time: String,
}

/// A decoded frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// `#commit`.
    Commit(Box<CommitEvent>),
    /// `#sync`: the repository's head changed without a diff (e.g. after a
    /// key rotation re-signed it).
    Sync {
        /// Sequence number.
        seq: i64,
        /// The DID.
        did: String,
        /// The new revision.
        rev: String,
        /// The CAR slice holding the commit block.
        blocks: Vec<u8>,
    },
    /// `#identity`: the DID document or handle may have changed.
    Identity {
        /// Sequence number.
        seq: i64,
        /// The DID.
        did: String,
        /// The handle, when known.
        handle: Option<String>,
    },
    /// `#account`: the account's hosting status changed.
    Account {
        /// Sequence number.
        seq: i64,
        /// The DID.
        did: String,
        /// Whether the repository is served.
        active: bool,
        /// `deactivated`, `takendown`, `deleted`, … when inactive.
        status: Option<String>,
    },
    /// `#info` (e.g. `OutdatedCursor`).
    Info {
        /// The info name.
        name: String,
        /// A message.
        message: Option<String>,
    },
    /// An error frame (`op: -1`); the server closes the stream after it.
    Error {
        /// The error name (`FutureCursor`, `ConsumerTooSlow`, …).
        error: String,
        /// A message.
        message: Option<String>,
    },
    /// A message type this decoder does not know (skipped by consumers).
    Unknown(String),
}

impl Frame {
    /// The sequence number of a sequenced message.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Sync { seq, .. } | Frame::Identity { seq, .. } | Frame::Account { seq, .. } => {
                Some(*seq)
            }
            _ => None,
        }
    }

    /// The DID a sequenced message is about.
    pub fn did(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => Some(&c.repo),
            Frame::Sync { did, .. } | Frame::Identity { did, .. } | Frame::Account { did, .. } => {
                Some(did)
            }
            _ => None,
        }
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Encodes a message frame of type `t` (e.g. `#commit`) with `body`.
pub fn message_frame(t: &str, body: &Value) -> Vec<u8> {
    let mut out = to_cbor(&map(vec![("op", Value::Integer(1)), ("t", s(t))]));
    out.extend_from_slice(&to_cbor(body));
    out
}

/// Encodes an error frame.
pub fn error_frame(error: &str, message: &str) -> Vec<u8> {
    let mut out = to_cbor(&map(vec![("op", Value::Integer(-1))]));
    out.extend_from_slice(&to_cbor(&map(vec![
        ("error", s(error)),
        ("message", s(message)),
    ])));
    out
}

/// The body of a `#commit` message (without `seq`, which the sequencer adds).
#[allow(clippy::too_many_arguments)]
pub fn commit_body(
    repo: &str,
    commit: &Cid,
    rev: &str,
    since: Option<&str>,
    blocks: &BlockMap,
    ops: &[RepoOp],
    blobs: &[Cid],
    prev_data: Option<&Cid>,
    time: &str,
) -> Value {
    let sorted = blocks.sorted();
    let car = write_car(&[*commit], sorted.values().map(|(c, b)| (c, &b[..])));
    let ops = ops
        .iter()
        .map(|op| {
            let mut e = vec![
                ("action", s(&op.action)),
                ("path", s(&op.path)),
                ("cid", op.cid.map_or(Value::Null, Value::Link)),
            ];
            if let Some(p) = op.prev {
                e.push(("prev", Value::Link(p)));
            }
            map(e)
        })
        .collect();
    let mut body = vec![
        ("repo", s(repo)),
        ("commit", Value::Link(*commit)),
        ("rev", s(rev)),
        ("since", since.map_or(Value::Null, s)),
        ("blocks", Value::Bytes(car)),
        ("ops", Value::List(ops)),
        (
            "blobs",
            Value::List(blobs.iter().copied().map(Value::Link).collect()),
        ),
        ("rebase", Value::Bool(false)),
        ("tooBig", Value::Bool(false)),
        ("time", s(time)),
    ];
    if let Some(p) = prev_data {
        body.push(("prevData", Value::Link(*p)));
    }
    map(body)
}

/// The body of a `#sync` message: the commit block alone in a CAR.
pub fn sync_body(did: &str, commit: &Cid, commit_bytes: &[u8], rev: &str, time: &str) -> Value {
    let car = write_car(&[*commit], [(commit, commit_bytes)]);
    map(vec![
        ("did", s(did)),
        ("blocks", Value::Bytes(car)),
        ("rev", s(rev)),
        ("time", s(time)),
    ])
}

/// The body of an `#identity` message.
pub fn identity_body(did: &str, handle: Option<&str>, time: &str) -> Value {
    let mut e = vec![("did", s(did)), ("time", s(time))];
    if let Some(h) = handle {
        e.push(("handle", s(h)));
    }
    map(e)
}

/// The body of an `#account` message.
pub fn account_body(did: &str, active: bool, status: Option<&str>, time: &str) -> Value {
    let mut e = vec![
        ("did", s(did)),
        ("active", Value::Bool(active)),
        ("time", s(time)),
    ];
    if let Some(st) = status {
        e.push(("status", s(st)));
    }
    map(e)
}

/// Adds `seq` to a message body.
pub fn with_seq(body: Value, seq: i64) -> Value {
    match body {
        Value::Map(mut m) => {
            m.insert("seq".into(), Value::Integer(seq));
            Value::Map(m)
        }
        other => other,
    }
}

fn get<'a>(m: &'a BTreeMap<String, Value>, k: &'static str) -> Result<&'a Value, FrameError> {
    m.get(k).ok_or(FrameError::Field(k))
}

fn get_str(m: &BTreeMap<String, Value>, k: &'static str) -> Result<String, FrameError> {
    get(m, k)?
        .as_str()
        .map(str::to_owned)
        .ok_or(FrameError::Field(k))
}

fn opt_str(m: &BTreeMap<String, Value>, k: &'static str) -> Result<Option<String>, FrameError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v.clone())),
        Some(_) => Err(FrameError::Field(k)),
    }
}

fn get_int(m: &BTreeMap<String, Value>, k: &'static str) -> Result<i64, FrameError> {
    match get(m, k)? {
        Value::Integer(i) => Ok(*i),
        _ => Err(FrameError::Field(k)),
    }
}

fn opt_link(m: &BTreeMap<String, Value>, k: &'static str) -> Result<Option<Cid>, FrameError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Link(c)) => Ok(Some(*c)),
        Some(_) => Err(FrameError::Field(k)),
    }
}

/// Decodes a frame. `max_blocks_bytes` bounds a commit's CAR slice.
pub fn decode_frame(bytes: &[u8], max_blocks_bytes: usize) -> Result<Frame, FrameError> {
    decode(bytes, max_blocks_bytes, true)
}

/// Decodes a frame without reading a commit's CAR slice (its `blocks` and
/// `roots` come back empty; its size is still bounded): for a consumer that
/// reads the records an event names back from their repository instead of
/// trusting the event, as the registry's follower does. Hashing every block
/// would be work thrown away.
pub fn decode_frame_ops(bytes: &[u8], max_blocks_bytes: usize) -> Result<Frame, FrameError> {
    decode(bytes, max_blocks_bytes, false)
}

fn decode(bytes: &[u8], max_blocks_bytes: usize, with_blocks: bool) -> Result<Frame, FrameError> {
    let (header, used) = from_cbor_prefix(bytes)?;
    let body = atcr_data::from_cbor(&bytes[used..])?;
    let header = header.as_map().ok_or(FrameError::Field("header"))?;
    let body = body.as_map().ok_or(FrameError::Field("body"))?;
    let op = get_int(header, "op")?;
    if op == -1 {
        return Ok(Frame::Error {
            error: get_str(body, "error")?,
            message: opt_str(body, "message")?,
        });
    }
    if op != 1 {
        return Err(FrameError::Field("op"));
    }
    let t = get_str(header, "t")?;
    Ok(match t.as_str() {
        "#commit" => {
            let blocks_bytes = match get(body, "blocks")? {
                Value::Bytes(b) if b.len() <= max_blocks_bytes => b,
                _ => return Err(FrameError::Field("blocks")),
            };
            let (roots, blocks) = if with_blocks {
                read_car(blocks_bytes)?
            } else {
                (vec![], BlockMap::new())
            };
            let Value::List(raw_ops) = get(body, "ops")? else {
                return Err(FrameError::Field("ops"));
            };
            if raw_ops.len() > MAX_OPS {
                return Err(FrameError::Field("ops"));
            }
            let mut ops = Vec::with_capacity(raw_ops.len());
            for o in raw_ops {
                let o = o.as_map().ok_or(FrameError::Field("ops"))?;
                let action = get_str(o, "action")?;
                if !matches!(action.as_str(), "create" | "update" | "delete") {
                    return Err(FrameError::Field("action"));
                }
                ops.push(RepoOp {
                    action,
                    path: get_str(o, "path")?,
                    cid: opt_link(o, "cid")?,
                    prev: opt_link(o, "prev")?,
                });
            }
            Frame::Commit(Box::new(CommitEvent {
                seq: get_int(body, "seq")?,
                repo: get_str(body, "repo")?,
                commit: opt_link(body, "commit")?.ok_or(FrameError::Field("commit"))?,
                rev: get_str(body, "rev")?,
                since: opt_str(body, "since")?,
                blocks,
                roots,
                ops,
                prev_data: opt_link(body, "prevData")?,
                time: get_str(body, "time")?,
            }))
        }
        "#sync" => Frame::Sync {
            seq: get_int(body, "seq")?,
            did: get_str(body, "did")?,
            rev: get_str(body, "rev")?,
            blocks: match get(body, "blocks")? {
                Value::Bytes(b) if b.len() <= max_blocks_bytes => b.clone(),
                _ => return Err(FrameError::Field("blocks")),
            },
        },
        "#identity" => Frame::Identity {
            seq: get_int(body, "seq")?,
            did: get_str(body, "did")?,
            handle: opt_str(body, "handle")?,
        },
        "#account" => Frame::Account {
            seq: get_int(body, "seq")?,
            did: get_str(body, "did")?,
            active: matches!(get(body, "active")?, Value::Bool(true)),
            status: opt_str(body, "status")?,
        },
        "#info" => Frame::Info {
            name: get_str(body, "name")?,
            message: opt_str(body, "message")?,
        },
        _ => Frame::Unknown(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let f = message_frame(
            "#identity",
            &with_seq(identity_body("did:plc:x", Some("a.test"), "t"), 7),
        );
        match decode_frame(&f, 1 << 20).unwrap() {
            Frame::Identity { seq, did, handle } => {
                assert_eq!(
                    (seq, did.as_str(), handle.as_deref()),
                    (7, "did:plc:x", Some("a.test"))
                );
            }
            other => panic!("{other:?}"),
        }
        match decode_frame(&error_frame("FutureCursor", "m"), 10).unwrap() {
            Frame::Error { error, .. } => assert_eq!(error, "FutureCursor"),
            other => panic!("{other:?}"),
        }
        assert!(decode_frame(&[0xff, 0x00], 10).is_err());
        assert!(decode_frame(&f[..f.len() - 1], 10).is_err());
        let unknown = message_frame("#future", &map(vec![("x", Value::Integer(1))]));
        assert!(matches!(decode_frame(&unknown, 10).unwrap(), Frame::Unknown(t) if t == "#future"));
    }
}
