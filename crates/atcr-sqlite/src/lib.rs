//! SQLite for ATCR's services (PDS, PLC directory, registry index).
//!
//! One file per service, opened in WAL mode with `synchronous = FULL`, so a
//! committed transaction survives a crash or power loss and a crash at any
//! point leaves the last committed state readable. Writes go through one
//! connection (SQLite has one writer anyway), which serializes them with no
//! lost update; reads use a small pool of their own connections. Blocking
//! calls run on Tokio's blocking pool.
//!
//! `rusqlite` rather than `sqlx`: the repository code reads blocks
//! synchronously inside a transaction, which a sync API does directly.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use rusqlite;

/// Database errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

/// A migration: a version number and the SQL that brings the schema to it.
pub type Migration = (i64, &'static str);

/// A SQLite database with one writer and pooled readers.
#[derive(Clone)]
pub struct Db {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations newer than its `user_version`, each in its own transaction.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (version, sql) in migrations {
            if *version > current {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version)?;
                tx.commit()?;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(vec![])),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction (committed if `f` returns `Ok`),
    /// durable (fsynced) when this returns.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// Like [`Db::write`], but the commit is not fsynced (`synchronous =
    /// NORMAL` for this transaction): it is atomic, and durable once any later
    /// durable write commits, but a crash before that may lose it. For state
    /// that a durable journal can rebuild.
    pub async fn write_relaxed<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_with(false, f).await
    }

    async fn write_with<T, E, F>(&self, durable: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            if durable {
                return Self::transact(&mut conn, f);
            }
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| E::from(DbError::from(e)))?;
            let out = Self::transact(&mut conn, f);
            // Back to durable for every other writer of this connection; if
            // that fails the connection must not be used relaxed by accident.
            if let Err(e) = conn.pragma_update(None, "synchronous", "FULL") {
                return Err(E::from(DbError::from(e)));
            }
            out
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    fn transact<T, E, F>(conn: &mut Connection, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| E::from(DbError::from(e)))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| E::from(DbError::from(e)))?;
        Ok(out)
    }

    /// Runs `f` on a read connection (a consistent snapshot for its duration
    /// when `f` opens a transaction).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.take_reader().map_err(E::from)?;
            let out = f(&mut conn);
            this.readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            out
        })
        .await
        .map_err(|e| E::from(DbError::Task(e.to_string())))?
    }

    fn take_reader(&self) -> Result<Connection, DbError> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let conn = Connection::open(&self.path)?;
        configure(&conn)?;
        Ok(conn)
    }
}
