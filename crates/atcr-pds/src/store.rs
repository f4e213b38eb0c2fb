//! Schema and low-level queries.

use crate::PdsResult;
use atcr_data::Cid;
use atcr_repo::{BlockSource, StoreError};
use atcr_sqlite::rusqlite::{self, OptionalExtension};
use atcr_sqlite::{Db, DbError};
use std::sync::Arc;

const MIGRATIONS: &[atcr_sqlite::Migration] = &[
    (
        1,
        "CREATE TABLE account (
        did TEXT PRIMARY KEY,
        handle TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE account_key (
        did TEXT PRIMARY KEY REFERENCES account (did),
        signing_alg TEXT NOT NULL,
        signing_key BLOB NOT NULL,
        rotation_key BLOB NOT NULL
    );
    CREATE TABLE app_password (
        did TEXT NOT NULL REFERENCES account (did),
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (did, name)
    );
    CREATE TABLE refresh_token (
        jti TEXT PRIMARY KEY,
        did TEXT NOT NULL REFERENCES account (did),
        app_password TEXT,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE TABLE repo_root (
        did TEXT PRIMARY KEY REFERENCES account (did),
        cid TEXT NOT NULL,
        rev TEXT NOT NULL
    );
    CREATE TABLE repo_block (
        did TEXT NOT NULL,
        cid TEXT NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (did, cid)
    ) WITHOUT ROWID;
    CREATE TABLE record (
        did TEXT NOT NULL,
        collection TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid TEXT NOT NULL,
        PRIMARY KEY (did, collection, rkey)
    ) WITHOUT ROWID;
    CREATE TABLE blob (
        did TEXT NOT NULL,
        cid TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (did, cid)
    ) WITHOUT ROWID;",
    ),
    // Blobs move to a rowid table: uploads are written into the row with
    // incremental blob I/O from a spool file, never whole in memory. The
    // bytes are the last column: SQLite only leaves a trailing zeroblob()
    // unmaterialised.
    (
        2,
        "CREATE TABLE blob_rows (
            did TEXT NOT NULL,
            cid TEXT NOT NULL,
            mime_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            bytes BLOB NOT NULL,
            PRIMARY KEY (did, cid)
        );
        INSERT INTO blob_rows (did, cid, mime_type, size, created_at, bytes)
            SELECT did, cid, mime_type, size, created_at, bytes FROM blob;
        DROP TABLE blob;
        ALTER TABLE blob_rows RENAME TO blob;",
    ),
    // App passwords are found by a keyed hash of the password, so a login
    // runs one argon2 check whatever the number of app passwords (timing
    // does not tell accounts apart). Older rows have none and are checked
    // one by one.
    (
        3,
        "ALTER TABLE app_password ADD COLUMN lookup TEXT;
        CREATE INDEX app_password_lookup ON app_password (did, lookup);",
    ),
    // The event log of `subscribeRepos` (frames ready to send; `seq` never
    // reused), the newest sequence number pruned by the backfill window,
    // and the revision that last wrote each block (`getRepo?since=`).
    (
        4,
        "CREATE TABLE repo_seq (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            did TEXT NOT NULL,
            kind TEXT NOT NULL,
            frame BLOB NOT NULL,
            sequenced_at INTEGER NOT NULL
        );
        CREATE INDEX repo_seq_did ON repo_seq (did);
        CREATE TABLE seq_meta (id INTEGER PRIMARY KEY CHECK (id = 1), pruned_through INTEGER NOT NULL);
        INSERT INTO seq_meta (id, pruned_through) VALUES (1, 0);
        ALTER TABLE repo_block ADD COLUMN rev TEXT;
        UPDATE repo_block SET rev = (SELECT rev FROM repo_root r WHERE r.did = repo_block.did);
        CREATE INDEX repo_block_rev ON repo_block (did, rev);",
    ),
];

/// Opens the database, restricting its permissions (it holds private keys).
pub fn open(path: &std::path::Path) -> PdsResult<Db> {
    let db = Db::open(path, MIGRATIONS)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            path.to_owned(),
            path.with_extension("sqlite-wal"),
            path.with_extension("sqlite-shm"),
        ] {
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| DbError::Task(format!("chmod {}: {e}", p.display())))?;
            }
        }
    }
    Ok(db)
}

/// A repository's blocks, read through a connection (inside the caller's
/// transaction when it is one).
pub struct SqlBlocks<'a> {
    pub conn: &'a rusqlite::Connection,
    pub did: &'a str,
}

impl BlockSource for SqlBlocks<'_> {
    fn get_block(&self, cid: &Cid) -> Result<Option<Arc<[u8]>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM repo_block WHERE did = ?1 AND cid = ?2")
            .map_err(|e| StoreError(e.to_string()))?;
        stmt.query_row((self.did, cid.to_string()), |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map(|o| o.map(Arc::from))
            .map_err(|e| StoreError(e.to_string()))
    }
}

/// The head commit of a repository.
pub fn repo_root(
    conn: &rusqlite::Connection,
    did: &str,
) -> rusqlite::Result<Option<(String, String)>> {
    conn.query_row(
        "SELECT cid, rev FROM repo_root WHERE did = ?1",
        [did],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}
