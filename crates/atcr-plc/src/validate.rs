use crate::{DocumentData, Operation, PlcError, did_for_genesis};
use atcr_data::Cid;
use atcr_syntax::Did;

/// How long after an operation a more authoritative key may still nullify it.
pub const RECOVERY_WINDOW_MS: i64 = 72 * 3600 * 1000;

/// An accepted operation of a DID's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedOp {
    /// The operation.
    pub operation: Operation,
    /// Its CID.
    pub cid: Cid,
    /// When the directory accepted it (Unix milliseconds).
    pub created_at_ms: i64,
}

/// The outcome of accepting an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextOp {
    /// Operations the new one nullifies (rewritten history).
    pub nullified: Vec<Cid>,
    /// The operation it follows.
    pub prev: Option<Cid>,
}

/// Checks that `proposed` may be appended to `ops`, the DID's current
/// (non-nullified) operations in order, at time `now_ms`.
pub fn validate_next(
    did: &Did,
    ops: &[IndexedOp],
    proposed: &Operation,
    now_ms: i64,
) -> Result<NextOp, PlcError> {
    // The same limits whether the operation came as JSON or was built here.
    proposed.check_shape()?;
    let Some(_) = ops.first() else {
        if proposed.is_tombstone() {
            return Err(PlcError::Improper(
                "the first operation cannot be a tombstone".into(),
            ));
        }
        if proposed.prev()?.is_some() {
            return Err(PlcError::Improper(
                "the genesis operation must have a null prev".into(),
            ));
        }
        proposed.verify_signature(&proposed.rotation_keys())?;
        let expected = did_for_genesis(proposed);
        if expected != *did {
            return Err(PlcError::GenesisHash(expected.to_string()));
        }
        return Ok(NextOp {
            nullified: vec![],
            prev: None,
        });
    };
    if matches!(proposed, Operation::LegacyCreate(_)) {
        return Err(PlcError::Improper(
            "create is only valid as the genesis operation".into(),
        ));
    }
    let prev = proposed
        .prev()?
        .ok_or_else(|| PlcError::Misordered("operation has no prev".into()))?;
    let idx = ops.iter().position(|o| o.cid == prev).ok_or_else(|| {
        PlcError::Misordered(format!("prev {prev} is not an operation of this DID"))
    })?;
    let (in_history, nullified) = ops.split_at(idx + 1);
    let last = &in_history[idx];
    if last.operation.is_tombstone() {
        return Err(PlcError::Misordered("the DID is tombstoned".into()));
    }
    let keys = last.operation.rotation_keys();
    let Some(first_nullified) = nullified.first() else {
        proposed.verify_signature(&keys)?;
        return Ok(NextOp {
            nullified: vec![],
            prev: Some(prev),
        });
    };
    // Rewriting history: only a key listed before (more authoritative than)
    // the one that signed the first nullified operation, within the window.
    let disputed = first_nullified.operation.verify_signature(&keys)?;
    let rank = keys.iter().position(|k| k == disputed).unwrap_or(0);
    proposed.verify_signature(&keys[..rank])?;
    let lapsed = now_ms - first_nullified.created_at_ms;
    if lapsed > RECOVERY_WINDOW_MS {
        return Err(PlcError::LateRecovery(lapsed));
    }
    Ok(NextOp {
        nullified: nullified.iter().map(|o| o.cid).collect(),
        prev: Some(prev),
    })
}

/// One entry of a directory's audit log (`GET /{did}/log/audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The operation.
    pub operation: Operation,
    /// The CID the directory claims for it.
    pub cid: Cid,
    /// Whether the directory says it was nullified.
    pub nullified: bool,
    /// When the directory accepted it (Unix milliseconds).
    pub created_at_ms: i64,
}

/// Replays a full audit log (in acceptance order, nullified entries included)
/// and returns the current document data, or `None` for a tombstoned DID.
/// Every CID, signature and nullification is re-derived; the directory's
/// `nullified` flags must agree with the replay.
pub fn audit_log(did: &Did, entries: &[AuditEntry]) -> Result<Option<DocumentData>, PlcError> {
    if entries.is_empty() {
        return Err(PlcError::Improper("empty log".into()));
    }
    let mut chain: Vec<IndexedOp> = vec![];
    let mut replay_nullified: Vec<Cid> = vec![];
    for e in entries {
        let cid = e.operation.cid();
        if cid != e.cid {
            return Err(PlcError::Improper(format!(
                "entry claims CID {} but hashes to {cid}",
                e.cid
            )));
        }
        let next = validate_next(did, &chain, &e.operation, e.created_at_ms)?;
        chain.retain(|o| !next.nullified.contains(&o.cid));
        replay_nullified.extend(next.nullified);
        chain.push(IndexedOp {
            operation: e.operation.clone(),
            cid,
            created_at_ms: e.created_at_ms,
        });
    }
    for e in entries {
        if e.nullified != replay_nullified.contains(&e.cid) {
            return Err(PlcError::Improper(format!(
                "nullified flag of {} disagrees with the replay",
                e.cid
            )));
        }
    }
    let last = chain.last().expect("at least one accepted entry");
    Ok(last.operation.data(did.as_str()))
}
