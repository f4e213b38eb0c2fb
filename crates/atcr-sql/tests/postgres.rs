//! The PostgreSQL store against a real server: the same units of work as
//! the SQLite store, migrations under a lock, and "unavailable" when the
//! server is down.

use atcr_sql::{Database, ErrorKind, Migration, PgOptions, SqlError};
use std::time::Duration;

const MIGRATIONS: &[Migration] = &[(
    1,
    "CREATE TABLE t (k TEXT COLLATE \"C\" PRIMARY KEY, n BIGINT NOT NULL, b BYTEA)",
)];

fn opts(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        timeout: Duration::from_secs(2),
        ca_file: None,
    }
}

/// Whether this session's connection is encrypted, as the server sees it.
async fn on_tls(db: &Database) -> bool {
    db.read(|c| {
        c.query_row(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            (),
            |r| r.get::<_, bool>(0),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_and_verifies_the_server_certificate() {
    let (pg, ca) = atcr_testkit::PgServer::start_tls();
    let tls_url = format!("{}?sslmode=require", pg.url);
    // Verified against the configured CA: the session is encrypted.
    let db = Database::postgres(
        &PgOptions {
            ca_file: Some(ca.clone()),
            ..opts(&tls_url)
        },
        MIGRATIONS,
    )
    .await
    .unwrap();
    assert!(on_tls(&db).await);
    // Without the CA the server's certificate is not trusted: refused,
    // never downgraded to plain text.
    let e = Database::postgres(&opts(&tls_url), MIGRATIONS)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("certificate"), "{e}");
    // A CA file that is not PEM says which setting is wrong.
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), "not a certificate").unwrap();
    let e = Database::postgres(
        &PgOptions {
            ca_file: Some(junk.path().to_owned()),
            ..opts(&tls_url)
        },
        MIGRATIONS,
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("index.postgres_ca_file"), "{e}");
    // A CA without sslmode=require is a mistake, not silently plain text.
    let e = Database::postgres(
        &PgOptions {
            ca_file: Some(ca),
            ..opts(&pg.url)
        },
        MIGRATIONS,
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("sslmode=require"), "{e}");
    // No sslmode: plain text, as before.
    let plain = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    assert!(!on_tls(&plain).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_behaves_like_sqlite() {
    let pg = atcr_testkit::PgServer::start();
    let db = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    assert_eq!(db.dialect(), atcr_sql::Dialect::Postgres);
    atcr_sql::conformance::units_of_work(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_writes_serialize() {
    let pg = atcr_testkit::PgServer::start();
    let mut opening = vec![];
    for _ in 0..4 {
        let o = opts(&pg.url);
        opening.push(tokio::spawn(async move {
            Database::postgres(&o, MIGRATIONS).await
        }));
    }
    let mut dbs = vec![];
    for o in opening {
        dbs.push(o.await.unwrap().unwrap());
    }
    // Read-modify-write from every "replica" at once: no update is lost.
    dbs[0]
        .write(|c| c.execute("INSERT INTO t (k, n) VALUES ('ctr', 0)", ()))
        .await
        .unwrap();
    let mut tasks = vec![];
    for db in &dbs {
        for _ in 0..25 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(|c| {
                    let n: i64 =
                        c.query_row("SELECT n FROM t WHERE k = 'ctr'", (), |r| r.get(0))?;
                    c.execute("UPDATE t SET n = ?1 WHERE k = 'ctr'", [n + 1])
                })
                .await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let n: i64 = dbs[3]
        .read(|c| c.query_row("SELECT n FROM t WHERE k = 'ctr'", (), |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(n, 100);
    let versions: i64 = dbs[1]
        .read(|c| c.query_row("SELECT COUNT(*) FROM atcr_schema", (), |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(versions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_then_recovers() {
    let mut pg = atcr_testkit::PgServer::start();
    let db = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    pg.stop();
    let r: Result<usize, SqlError> = db
        .write(|c| c.execute("INSERT INTO t (k, n) VALUES ('x', 1)", ()))
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    pg.restart();
    // Pooled connections to the old server are broken; new ones work.
    let mut ok = false;
    for _ in 0..5 {
        let r: Result<usize, SqlError> = db
            .write(|c| {
                c.execute(
                    "INSERT INTO t (k, n) VALUES ('x', 1) ON CONFLICT (k) DO NOTHING",
                    (),
                )
            })
            .await;
        if r.is_ok() {
            ok = true;
            break;
        }
        assert_eq!(r.unwrap_err().kind, ErrorKind::Unavailable);
    }
    assert!(ok, "the store reconnected after a restart");
    // Opening against a server that is not there says so.
    pg.stop();
    let e = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_locks_exclude_across_pools_and_die_with_their_holder() {
    let pg = atcr_testkit::PgServer::start();
    let a = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    let b = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    let held = a.lock("owner:did:plc:x").await.unwrap();
    assert!(b.try_lock("owner:did:plc:x").await.unwrap().is_none());
    // Another name is independent.
    assert!(b.try_lock("owner:did:plc:y").await.unwrap().is_some());
    // A waiter gets it once the holder lets go.
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("owner:did:plc:x").await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the lock is held");
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("granted after release")
        .unwrap()
        .unwrap();
    // The holder's pool going away (its process dying) releases it too.
    let c = Database::postgres(&opts(&pg.url), MIGRATIONS)
        .await
        .unwrap();
    let held = c.lock("gc").await.unwrap();
    assert!(a.try_lock("gc").await.unwrap().is_none());
    std::mem::forget(held);
    drop(c);
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction'");
    let mut ok = false;
    for _ in 0..50 {
        if a.try_lock("gc").await.unwrap().is_some() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a dead holder's lock is released");
}
