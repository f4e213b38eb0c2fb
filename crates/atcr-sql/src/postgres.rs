//! The PostgreSQL store: `tokio-postgres` connections in a `deadpool` pool.
//!
//! A unit of work holds one pooled connection for its transaction and runs
//! on Tokio's blocking pool, where each statement is driven to completion
//! with `Handle::block_on` (the connection's I/O task runs on the runtime as
//! usual). That keeps the index's units of work synchronous closures, the
//! same code for SQLite and PostgreSQL.
//!
//! TLS (`sslmode=require`) is rustls with the ring provider, as everywhere
//! in ATCR, through `tokio-postgres-rustls`.

use crate::{
    Conn, Dialect, ErrorKind, Job, Migration, Mode, Row, RunFuture, SqlError, Store, Value,
};
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Every write transaction takes this advisory lock (transaction-scoped), so
/// writes from all replicas are serialized as SQLite serializes them.
const WRITE_LOCK: i64 = 0x6174_6372_0001;
/// Held while migrations run, so replicas starting together apply them once.
const MIGRATE_LOCK: i64 = 0x6174_6372_0002;

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database` (or the key=value form).
    pub url: String,
    /// Most connections this process opens.
    pub pool_size: usize,
    /// How long a request waits for a connection (from the pool, or a new
    /// one) before the database counts as unavailable.
    pub timeout: Duration,
    /// PEM CAs trusted for the server's certificate besides the system's
    /// (`sslmode=require` only).
    pub ca_file: Option<PathBuf>,
}

/// The TLS client for `sslmode=require`: the server's certificate is always
/// verified (system CAs plus `ca_file`), unlike libpq's `require`; there is
/// no opportunistic TLS (`prefer` connects in plain text, as `disable`).
fn tls_config(ca_file: Option<&Path>) -> crate::Result<rustls::ClientConfig> {
    let bad = |m: String| SqlError::new(ErrorKind::Other, m);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(p) = ca_file {
        let name = format!("index.postgres_ca_file {}", p.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .map_err(|e| bad(format!("{name}: {e}")))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if certs.is_empty() {
            return Err(bad(format!("{name}: no PEM certificate")));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(format!("{name}: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(bad(
            "sslmode=require, but no CA is trusted: set index.postgres_ca_file".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        let unavailable = e.is_closed()
            || match e.code() {
                // No SQLSTATE: the connection itself failed (I/O, TLS, a
                // timeout), not the statement.
                None => true,
                Some(c) => {
                    let c = c.code();
                    // Connection exceptions, shutdown and start-up, too many
                    // connections, out of disk or memory.
                    c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
                }
            };
        let message = match e.as_db_error() {
            Some(db) => format!("postgres: {}: {}", db.code().code(), db.message()),
            None => {
                // The cause says what to fix (a refused certificate, a
                // refused connection): name every link of the chain.
                let mut m = format!("postgres: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    m.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                m
            }
        };
        SqlError::new(
            if unavailable {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Other
            },
            message,
        )
    }
}

impl From<PoolError> for SqlError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            e => SqlError::new(ErrorKind::Unavailable, format!("postgres pool: {e}")),
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                Type::JSONB | Type::JSON => {
                    // The text form of JSON, as the server parses it.
                    if *ty == Type::JSONB {
                        out.extend_from_slice(&[1]);
                    }
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("text cannot be bound to a {ty} parameter").into()),
            },
            Value::Bytes(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("bytes cannot be bound to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`, with an error naming the mismatch.
        true
    }

    to_sql_checked!();
}

/// `?N` placeholders (both engines' spelling in our SQL) to PostgreSQL's
/// `$N`; quoted text is left alone.
fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
pub(crate) fn translate_for_tests(sql: &str) -> String {
    translate(sql)
}

fn column(row: &tokio_postgres::Row, i: usize) -> crate::Result<Value> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
        ty => {
            return Err(SqlError::new(
                ErrorKind::Other,
                format!("column {i}: type {ty} is not used (cast it in the query)"),
            ));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

struct PgConn<'a> {
    client: &'a Object,
    rt: &'a tokio::runtime::Handle,
}

impl PgConn<'_> {
    fn statement(&self, sql: &str) -> crate::Result<tokio_postgres::Statement> {
        Ok(self
            .rt
            .block_on(self.client.prepare_cached(&translate(sql)))?)
    }
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&self, sql: &str, params: &[Value]) -> crate::Result<usize> {
        let stmt = self.statement(sql)?;
        let n = self
            .rt
            .block_on(self.client.execute(&stmt, &refs(params)))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn rows(&self, sql: &str, params: &[Value]) -> crate::Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let rows = self.rt.block_on(self.client.query(&stmt, &refs(params)))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| column(r, i))
                    .collect::<crate::Result<_>>()
                    .map(Row)
            })
            .collect()
    }
}

pub(crate) struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub(crate) async fn open(opts: &PgOptions, migrations: &[Migration]) -> crate::Result<Self> {
        let mut cfg: tokio_postgres::Config = opts.url.parse().map_err(|e| {
            SqlError::new(
                ErrorKind::Other,
                format!("index.postgres_url is not a PostgreSQL URL: {e}"),
            )
        })?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(opts.timeout);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("atcr");
        }
        let manager_cfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if matches!(cfg.get_ssl_mode(), SslMode::Require) {
            let tls = MakeRustlsConnect::new(tls_config(opts.ca_file.as_deref())?);
            Manager::from_config(cfg, tls, manager_cfg)
        } else if opts.ca_file.is_some() {
            return Err(SqlError::new(
                ErrorKind::Other,
                "index.postgres_ca_file is set, but index.postgres_url does not ask for TLS: add sslmode=require",
            ));
        } else {
            Manager::from_config(cfg, NoTls, manager_cfg)
        };
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| SqlError::new(ErrorKind::Other, format!("postgres pool: {e}")))?;
        let store = Self { pool };
        store.migrate(migrations).await?;
        Ok(store)
    }

    async fn migrate(&self, migrations: &[Migration]) -> crate::Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS atcr_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM atcr_schema", &[])
            .await?
            .try_get(0)?;
        for (version, sql) in migrations {
            if *version > current {
                tracing::info!(version, "index: applying PostgreSQL migration");
                tx.batch_execute(sql).await?;
                tx.execute("INSERT INTO atcr_schema (version) VALUES ($1)", &[version])
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Store for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn run(&self, mode: Mode, job: Job) -> RunFuture<'_> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let rt = tokio::runtime::Handle::current();
            let begin = match mode {
                // Each statement on its own (autocommit): two round trips
                // fewer than a transaction, and the index's reads are single
                // statements or need no common snapshot.
                Mode::Read => String::new(),
                // One snapshot for every statement of the job.
                Mode::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_owned(),
                Mode::Write => format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"),
                Mode::WriteRelaxed => format!(
                    "BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                ),
            };
            tokio::task::spawn_blocking(move || {
                let transaction = !begin.is_empty();
                if transaction {
                    rt.block_on(client.batch_execute(&begin))?;
                }
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    job(&PgConn {
                        client: &client,
                        rt: &rt,
                    })
                }));
                let (ok, out) = match ran {
                    Ok(r) => r,
                    Err(panic) => {
                        // Never back to the pool inside a transaction.
                        drop(Object::take(client));
                        std::panic::resume_unwind(panic);
                    }
                };
                if !transaction {
                    return Ok(out);
                }
                let end = if ok { "COMMIT" } else { "ROLLBACK" };
                if let Err(e) = rt.block_on(client.batch_execute(end)) {
                    drop(Object::take(client));
                    return Err(e.into());
                }
                Ok(out)
            })
            .await
            .map_err(|e| SqlError::new(ErrorKind::Other, format!("database task failed: {e}")))?
        })
    }
    fn lock(&self, key: String, wait: bool) -> crate::LockFuture<'_> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            // A transaction-level lock on a connection kept for the guard:
            // released by ROLLBACK on drop, or by the server if this process
            // dies (its connection closes).
            client.batch_execute("BEGIN").await?;
            let f = if wait {
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), true"
            } else {
                "SELECT NULL::int, pg_try_advisory_xact_lock(hashtextextended($1, 0))"
            };
            let got: bool = match client.query_one(f, &[&key]).await {
                Ok(r) => r.try_get(1)?,
                Err(e) => {
                    drop(Object::take(client));
                    return Err(e.into());
                }
            };
            if !got {
                client.batch_execute("ROLLBACK").await?;
                return Ok(None);
            }
            Ok(Some(crate::Lock::holding(Box::new(PgLock(Some(client))))))
        })
    }
}

/// A connection in a transaction holding an advisory lock.
struct PgLock(Option<Object>);

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            // No runtime to end the transaction on: close the connection,
            // which releases the lock.
            Err(_) => drop(Object::take(client)),
        }
    }
}
