use atcr_plc::{AuditEntry, DocumentData, IndexedOp, Operation, PlcError, validate_next};
use atcr_sqlite::{Db, DbError, rusqlite};
use atcr_syntax::{Datetime, Did};
use std::path::Path;

/// Directory errors.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The operation is invalid for this DID's log.
    #[error(transparent)]
    Invalid(#[from] PlcError),
    /// The DID has no operations.
    #[error("DID not registered: {0}")]
    NotFound(String),
    /// The DID is tombstoned.
    #[error("DID not available: {0}")]
    Gone(String),
    /// The request itself is malformed (not a did:plc, body not JSON).
    #[error("{0}")]
    BadRequest(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for DirectoryError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

const MIGRATIONS: &[atcr_sqlite::Migration] = &[(
    1,
    "CREATE TABLE plc_operation (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        did TEXT NOT NULL,
        cid TEXT NOT NULL,
        operation TEXT NOT NULL,
        nullified INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX plc_operation_did ON plc_operation (did, seq);
    CREATE UNIQUE INDEX plc_operation_cid ON plc_operation (did, cid);",
)];

/// One stored log entry.
struct Row {
    cid: String,
    operation: Operation,
    nullified: bool,
    created_at_ms: i64,
}

fn load(conn: &rusqlite::Connection, did: &str) -> Result<Vec<Row>, DirectoryError> {
    let mut stmt =
        conn.prepare_cached("SELECT cid, operation, nullified, created_at_ms FROM plc_operation WHERE did = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([did], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = vec![];
    for row in rows {
        let (cid, op, nullified, created_at_ms) = row?;
        let json: serde_json::Value = serde_json::from_str(&op)
            .map_err(|e| PlcError::Improper(format!("stored operation: {e}")))?;
        out.push(Row {
            cid,
            operation: Operation::from_json(&json)?,
            nullified,
            created_at_ms,
        });
    }
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A persisted PLC directory.
#[derive(Clone)]
pub struct Directory {
    db: Db,
}

impl Directory {
    /// Opens (or creates) the directory database.
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS)?,
        })
    }

    /// Validates and appends an operation, nullifying what it overrides.
    pub async fn submit(&self, did: &Did, op: Operation) -> Result<(), DirectoryError> {
        let did = did.clone();
        self.db
            .write(move |tx| {
                let rows = load(tx, did.as_str())?;
                let active: Vec<IndexedOp> = rows
                    .iter()
                    .filter(|r| !r.nullified)
                    .map(|r| {
                        Ok(IndexedOp {
                            operation: r.operation.clone(),
                            cid: atcr_data::parse_cid(&r.cid).map_err(|e| PlcError::Improper(e.to_string()))?,
                            created_at_ms: r.created_at_ms,
                        })
                    })
                    .collect::<Result<_, DirectoryError>>()?;
                // Legacy `create` operations stand in old logs, but a new DID
                // must begin with a `plc_operation` (as the reference
                // directory requires).
                if active.is_empty() && matches!(op, Operation::LegacyCreate(_)) {
                    return Err(DirectoryError::Invalid(PlcError::Improper(
                        "legacy create operations are not accepted for new DIDs: use plc_operation"
                            .into(),
                    )));
                }
                let now = now_ms();
                let next = validate_next(&did, &active, &op, now)?;
                for c in &next.nullified {
                    tx.execute(
                        "UPDATE plc_operation SET nullified = 1 WHERE did = ?1 AND cid = ?2",
                        (did.as_str(), c.to_string()),
                    )?;
                }
                tx.execute(
                    "INSERT INTO plc_operation (did, cid, operation, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    (did.as_str(), op.cid().to_string(), op.to_json().to_string(), now),
                )
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        DirectoryError::Invalid(PlcError::Misordered("operation already in the log".into()))
                    }
                    e => e.into(),
                })?;
                Ok(())
            })
            .await
    }

    async fn rows(&self, did: &Did) -> Result<Vec<Row>, DirectoryError> {
        let d = did.to_string();
        let rows = self.db.read(move |c| load(c, &d)).await?;
        if rows.is_empty() {
            return Err(DirectoryError::NotFound(did.to_string()));
        }
        Ok(rows)
    }

    /// The current (non-nullified) operations, in order.
    pub async fn log(&self, did: &Did) -> Result<Vec<serde_json::Value>, DirectoryError> {
        Ok(self
            .rows(did)
            .await?
            .into_iter()
            .filter(|r| !r.nullified)
            .map(|r| r.operation.to_json())
            .collect())
    }

    /// The last current operation.
    pub async fn last(&self, did: &Did) -> Result<serde_json::Value, DirectoryError> {
        let rows = self.rows(did).await?;
        let last = rows
            .into_iter()
            .rfind(|r| !r.nullified)
            .ok_or_else(|| DirectoryError::NotFound(did.to_string()))?;
        Ok(last.operation.to_json())
    }

    /// The full audit log, nullified entries included.
    pub async fn audit(&self, did: &Did) -> Result<Vec<serde_json::Value>, DirectoryError> {
        Ok(self
            .rows(did)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "did": did.as_str(),
                    "operation": r.operation.to_json(),
                    "cid": r.cid,
                    "nullified": r.nullified,
                    "createdAt": Datetime::from_unix_millis(r.created_at_ms).as_str(),
                })
            })
            .collect())
    }

    /// The audit log as typed entries (for [`atcr_plc::audit_log`]).
    pub async fn audit_entries(&self, did: &Did) -> Result<Vec<AuditEntry>, DirectoryError> {
        self.rows(did)
            .await?
            .into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    cid: atcr_data::parse_cid(&r.cid)
                        .map_err(|e| PlcError::Improper(e.to_string()))?,
                    operation: r.operation,
                    nullified: r.nullified,
                    created_at_ms: r.created_at_ms,
                })
            })
            .collect()
    }

    /// The current document data.
    pub async fn data(&self, did: &Did) -> Result<DocumentData, DirectoryError> {
        let rows = self.rows(did).await?;
        let last = rows
            .into_iter()
            .rfind(|r| !r.nullified)
            .ok_or_else(|| DirectoryError::NotFound(did.to_string()))?;
        last.operation
            .data(did.as_str())
            .ok_or_else(|| DirectoryError::Gone(did.to_string()))
    }

    /// The DID document.
    pub async fn document(&self, did: &Did) -> Result<serde_json::Value, DirectoryError> {
        Ok(self.data(did).await?.to_did_document())
    }
}

impl atcr_plc::PlcDirectory for Directory {
    fn last_operation<'a>(&'a self, did: &'a Did) -> atcr_plc::PlcFuture<'a, Option<Operation>> {
        Box::pin(async move {
            match Directory::last(self, did).await {
                Ok(j) => Operation::from_json(&j)
                    .map(Some)
                    .map_err(|e| e.to_string()),
                Err(DirectoryError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn submit<'a>(&'a self, did: &'a Did, op: &'a Operation) -> atcr_plc::PlcFuture<'a, ()> {
        Box::pin(async move {
            Directory::submit(self, did, op.clone())
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn document<'a>(&'a self, did: &'a Did) -> atcr_plc::PlcFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            match Directory::document(self, did).await {
                Ok(d) => Ok(Some(d)),
                Err(DirectoryError::NotFound(_) | DirectoryError::Gone(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
