//! The SQLite store: [`atcr_sqlite::Db`] (one durable writer, pooled
//! readers) behind [`Store`].

use crate::{
    Conn, Dialect, ErrorKind, Job, Migration, Mode, Row, RunFuture, SqlError, Store, Value,
};
use atcr_sqlite::rusqlite::types::{ToSqlOutput, ValueRef};
use atcr_sqlite::rusqlite::{self, Connection, params_from_iter};
use atcr_sqlite::{Db, DbError};
use std::any::Any;
use std::path::Path;

pub(crate) struct SqliteStore {
    db: Db,
}

impl From<DbError> for SqlError {
    fn from(e: DbError) -> Self {
        SqlError::new(ErrorKind::Other, e.to_string())
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => {
                SqlError::new(ErrorKind::NoRows, "query returned no rows")
            }
            e => SqlError::new(ErrorKind::Other, format!("sqlite: {e}")),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

struct SqliteConn<'a>(&'a Connection);

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, sql: &str, params: &[Value]) -> crate::Result<usize> {
        Ok(self
            .0
            .prepare_cached(sql)?
            .execute(params_from_iter(params))?)
    }

    fn rows(&self, sql: &str, params: &[Value]) -> crate::Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(params_from_iter(params))?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(
                        String::from_utf8(t.to_vec())
                            .map_err(|_| SqlError::new(ErrorKind::Other, "text is not UTF-8"))?,
                    ),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(SqlError::new(
                            ErrorKind::Other,
                            format!("column {i}: floating-point values are not used"),
                        ));
                    }
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}

/// A job's error result, carried out of the transaction so it rolls back.
enum Outcome {
    Db(DbError),
    Rollback(Box<dyn Any + Send>),
}

impl From<DbError> for Outcome {
    fn from(e: DbError) -> Self {
        Outcome::Db(e)
    }
}

impl SqliteStore {
    pub(crate) fn open(path: &Path, migrations: &[Migration]) -> crate::Result<Self> {
        Ok(Self {
            db: Db::open(path, migrations)?,
        })
    }
}

impl Store for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn run(&self, mode: Mode, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            let out = match mode {
                Mode::Read => {
                    self.db
                        .read(move |c| Ok::<_, DbError>(job(&SqliteConn(c)).1))
                        .await?
                }
                Mode::Snapshot => {
                    self.db
                        .read(move |c| {
                            // One snapshot for every statement of the job.
                            let tx = c.transaction().map_err(DbError::from)?;
                            Ok::<_, DbError>(job(&SqliteConn(&tx)).1)
                        })
                        .await?
                }
                Mode::Write | Mode::WriteRelaxed => {
                    let f = move |tx: &rusqlite::Transaction<'_>| match job(&SqliteConn(tx)) {
                        (true, out) => Ok(out),
                        (false, out) => Err(Outcome::Rollback(out)),
                    };
                    let r = if mode == Mode::Write {
                        self.db.write(f).await
                    } else {
                        self.db.write_relaxed(f).await
                    };
                    match r {
                        Ok(out) | Err(Outcome::Rollback(out)) => out,
                        Err(Outcome::Db(e)) => return Err(e.into()),
                    }
                }
            };
            Ok(out)
        })
    }
    fn lock(&self, _key: String, _wait: bool) -> crate::LockFuture<'_> {
        // One process per SQLite file: its own mutexes serialize it.
        Box::pin(async { Ok(Some(crate::Lock::local())) })
    }
}
