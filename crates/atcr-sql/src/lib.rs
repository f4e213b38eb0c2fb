//! One small SQL interface over ATCR's two index stores.
//!
//! * [`Database::sqlite`]: one file with one serialized writer (the default,
//!   one `atcr serve`), through [`atcr_sqlite`].
//! * [`Database::postgres`]: a PostgreSQL database shared by any number of
//!   registry replicas, through `tokio-postgres` with a `deadpool` pool.
//!
//! Callers write each query once, in the SQL both engines accept (`?1`
//! placeholders, `ON CONFLICT`, `RETURNING`), and branch on [`Conn::dialect`]
//! only where the engines differ (JSON, case-insensitive matching). A unit of
//! work is a closure over a [`Conn`] run in one transaction by
//! [`Database::read`], [`Database::write`] or [`Database::write_relaxed`].
//!
//! Write transactions are serialized on both engines: SQLite has one writer,
//! and on PostgreSQL every write transaction first takes one transaction-level
//! advisory lock, so replicas see exactly the semantics a single process has
//! (a read-modify-write in one closure never loses an update). Reads run
//! concurrently on a consistent snapshot.
//!
//! Why hand-written rather than `sqlx`: `sqlx` cannot share a workspace with
//! `rusqlite` (both link `sqlite3`, see `deps.md`), and the repository code
//! of the PDS needs `rusqlite`'s synchronous API. This layer is the small part
//! the index needs: positional values, rows and transactions.

use std::any::Any;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

#[doc(hidden)]
pub mod conformance;
mod postgres;
mod sqlite;
mod value;

pub use postgres::PgOptions;
pub use value::{FromValue, Params, Row, RowIndex, ToValue, Value};

/// A migration: a version number and the SQL that brings the schema to it.
pub type Migration = (i64, &'static str);

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database cannot be reached (down, restarting, refusing
    /// connections, pool exhausted): retry later; nothing was written.
    Unavailable,
    /// A query that must return a row returned none.
    NoRows,
    /// Anything else (a constraint, a bad value).
    Other,
}

/// A database error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// The class of the error.
    pub kind: ErrorKind,
    /// What the engine said.
    pub message: String,
}

impl SqlError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// True when the database could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

/// `Result` with [`SqlError`].
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// `.optional()`: a missing row as `None` rather than an error.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`ErrorKind::NoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind == ErrorKind::NoRows => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The engine behind a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The configuration name (`index.backend`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// A connection inside a transaction. Placeholders are `?1`, `?2`, ….
pub trait Conn {
    /// The engine.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn exec(&self, sql: &str, params: &[Value]) -> Result<usize>;
    /// Runs a query; every row.
    fn rows(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
}

impl dyn Conn + '_ {
    /// Runs a statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.exec(sql, &params.values())
    }

    /// The first row of a query, mapped by `f`; [`ErrorKind::NoRows`] when
    /// there is none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row) -> Result<T>,
    {
        match self.rows(sql, &params.values())?.first() {
            Some(r) => f(r),
            None => Err(SqlError::new(ErrorKind::NoRows, "query returned no rows")),
        }
    }

    /// A statement to run, perhaps several times (engines cache prepared
    /// statements by text, so this is the same as [`Self::prepare`]).
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(Stmt {
            conn: self,
            sql: sql.to_owned(),
        })
    }

    /// A statement to run, perhaps several times.
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        self.prepare_cached(sql)
    }
}

/// A statement bound to a connection.
pub struct Stmt<'s> {
    conn: &'s dyn Conn,
    sql: String,
}

impl Stmt<'_> {
    /// Runs it; the number of rows changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.exec(&self.sql, &params.values())
    }

    /// The first row, mapped by `f` ([`ErrorKind::NoRows`] when none).
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row) -> Result<T>,
    {
        self.conn.query_row(&self.sql, params, f)
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T, P, F>(&mut self, params: P, f: F) -> Result<impl Iterator<Item = Result<T>>>
    where
        P: Params,
        F: FnMut(&Row) -> Result<T>,
    {
        let rows = self.conn.rows(&self.sql, &params.values())?;
        let mut f = f;
        Ok(rows.into_iter().map(move |r| f(&r)))
    }
}

/// How a unit of work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads. Each statement sees the data committed when it starts.
    Read,
    /// Reads that must all see one snapshot (on every engine).
    Snapshot,
    /// A durable write transaction (flushed to disk on commit).
    Write,
    /// A write transaction whose commit is atomic but not flushed at once:
    /// for state a durable journal can rebuild.
    WriteRelaxed,
}

/// A unit of work: whether to commit, and its boxed result.
pub type Job = Box<dyn FnOnce(&dyn Conn) -> (bool, Box<dyn Any + Send>) + Send>;

/// A boxed future returned by [`Store::run`].
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<Box<dyn Any + Send>>> + Send + 'a>>;

/// An index store: runs units of work in transactions. Two implementations,
/// SQLite and PostgreSQL.
pub trait Store: Send + Sync + 'static {
    /// The engine.
    fn dialect(&self) -> Dialect;
    /// Runs `job` in one transaction of `mode`, committed when the job says
    /// so and rolled back otherwise. An error here means the job may not
    /// have run and nothing was committed.
    fn run(&self, mode: Mode, job: Job) -> RunFuture<'_>;
    /// Takes the lock named `key`, held by at most one holder among all the
    /// processes sharing the database until the returned guard is dropped
    /// (or its holder dies). `wait`: wait for it, else `None` when taken.
    /// A database only one process uses returns a guard at once: the
    /// process serializes itself.
    fn lock(&self, key: String, wait: bool) -> LockFuture<'_>;
}

/// A boxed future returned by [`Store::lock`].
pub type LockFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Lock>>> + Send + 'a>>;

/// A held lock (see [`Database::lock`]); released on drop.
pub struct Lock {
    _held: Option<Box<dyn Send + Sync>>,
}

impl Lock {
    /// A guard that holds nothing (single-process stores).
    pub fn local() -> Self {
        Self { _held: None }
    }

    /// A guard whose drop releases `held`.
    pub fn holding(held: Box<dyn Send + Sync>) -> Self {
        Self { _held: Some(held) }
    }
}

/// A database handle (cheap to clone).
#[derive(Clone)]
pub struct Database {
    store: Arc<dyn Store>,
}

impl Database {
    /// Opens (creating) the SQLite database at `path`, applying migrations.
    pub fn sqlite(path: &Path, migrations: &[Migration]) -> Result<Self> {
        Ok(Self {
            store: Arc::new(sqlite::SqliteStore::open(path, migrations)?),
        })
    }

    /// Connects to PostgreSQL and applies migrations, holding an advisory
    /// lock so replicas starting together do not race.
    pub async fn postgres(opts: &PgOptions, migrations: &[Migration]) -> Result<Self> {
        Ok(Self {
            store: Arc::new(postgres::PgStore::open(opts, migrations).await?),
        })
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        self.store.dialect()
    }

    /// Waits for the lock named `key`, shared by every process on this
    /// database (see [`Store::lock`]).
    pub async fn lock(&self, key: &str) -> Result<Lock> {
        match self.store.lock(key.to_owned(), true).await? {
            Some(l) => Ok(l),
            None => Err(SqlError::new(ErrorKind::Other, "lock not granted")),
        }
    }

    /// The lock named `key` if no one holds it.
    pub async fn try_lock(&self, key: &str) -> Result<Option<Lock>> {
        self.store.lock(key.to_owned(), false).await
    }

    /// Runs `f`'s reads: each statement sees what was committed when it
    /// started (see [`Mode::Read`]).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
        F: FnOnce(&dyn Conn) -> Result<T, E> + Send + 'static,
    {
        self.run(Mode::Read, f).await
    }

    /// Runs `f`'s reads on one snapshot.
    pub async fn read_snapshot<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
        F: FnOnce(&dyn Conn) -> Result<T, E> + Send + 'static,
    {
        self.run(Mode::Snapshot, f).await
    }

    /// Runs `f` in a durable write transaction, committed when it returns
    /// `Ok`.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
        F: FnOnce(&dyn Conn) -> Result<T, E> + Send + 'static,
    {
        self.run(Mode::Write, f).await
    }

    /// Like [`Database::write`], but the commit is not flushed at once: it is
    /// atomic, and durable once a later durable write commits.
    pub async fn write_relaxed<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
        F: FnOnce(&dyn Conn) -> Result<T, E> + Send + 'static,
    {
        self.run(Mode::WriteRelaxed, f).await
    }

    async fn run<T, E, F>(&self, mode: Mode, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SqlError> + Send + 'static,
        F: FnOnce(&dyn Conn) -> Result<T, E> + Send + 'static,
    {
        let job: Job = Box::new(move |c| {
            let out = f(c);
            (out.is_ok(), Box::new(out) as Box<dyn Any + Send>)
        });
        let out = self.store.run(mode, job).await.map_err(E::from)?;
        match out.downcast::<Result<T, E>>() {
            Ok(r) => *r,
            // The job above boxes exactly this type.
            Err(_) => Err(E::from(SqlError::new(
                ErrorKind::Other,
                "unit of work returned an unexpected type",
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
