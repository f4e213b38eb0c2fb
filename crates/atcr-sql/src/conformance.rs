//! Behaviour both stores must show, run against each by the tests.

use crate::{Database, Dialect, ErrorKind, OptionalExtension, SqlError, params};

/// A table `t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, b BLOB/BYTEA)` is
/// expected. Panics on any difference.
pub async fn units_of_work(db: &Database) {
    // A committed write is visible; typed values round-trip.
    db.write(|c| {
        c.execute(
            "INSERT INTO t (k, n, b) VALUES (?1, ?2, ?3)",
            params!["a", 1i64, vec![0u8, 255]],
        )?;
        c.execute("INSERT INTO t (k, n) VALUES (?1, ?2)", ("b", 2i64))?;
        Ok::<_, SqlError>(())
    })
    .await
    .unwrap();
    let (n, b): (i64, Option<Vec<u8>>) = db
        .read(|c| {
            c.query_row("SELECT n, b FROM t WHERE k = ?1", ["a"], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .await
        .unwrap();
    assert_eq!((n, b), (1, Some(vec![0, 255])));

    // A unit of work that fails rolls back all of its statements.
    let r: Result<(), SqlError> = db
        .write(|c| {
            c.execute("UPDATE t SET n = 10 WHERE k = ?1", ["a"])?;
            Err(SqlError::new(ErrorKind::Other, "changed my mind"))
        })
        .await;
    assert!(r.is_err());
    let n: i64 = db
        .read(|c| c.query_row("SELECT n FROM t WHERE k = 'a'", (), |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(n, 1, "the failed unit of work was rolled back");

    // A constraint violation is an error, not a panic, and loses nothing.
    let r = db
        .write(|c| c.execute("INSERT INTO t (k, n) VALUES (?1, ?2)", ("a", 3i64)))
        .await;
    assert!(
        matches!(r, Err(ref e) if e.kind == ErrorKind::Other),
        "{r:?}"
    );

    // Missing rows: NoRows, and None through `optional`.
    let none = db
        .read(|c| {
            c.query_row("SELECT n FROM t WHERE k = ?1", ["zz"], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
        })
        .await
        .unwrap();
    assert_eq!(none, None);

    // Upserts, RETURNING and counts are spelled the same on both engines.
    let id: i64 = db
        .write_relaxed(|c| {
            c.execute(
                "INSERT INTO t (k, n) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET n = excluded.n",
                ("b", 20i64),
            )?;
            c.query_row(
                "INSERT INTO t (k, n) VALUES (?1, ?2) RETURNING n",
                ("c", 30i64),
                |r| r.get(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(id, 30);
    let rows: Vec<(String, i64)> = db
        .read(|c| {
            c.prepare("SELECT k, n FROM t WHERE k > ?1 ORDER BY k")?
                .query_map([""], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![("a".into(), 1), ("b".into(), 20), ("c".into(), 30)]
    );
    let (count, exists): (i64, bool) = db
        .read(|c| {
            c.query_row(
                "SELECT COUNT(*), EXISTS (SELECT 1 FROM t WHERE k = 'c') FROM t",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    assert_eq!((count, exists), (3, true));

    // Text compares bytewise on both ('B' < 'a'), as the catalog's paging
    // relies on.
    db.write(|c| c.execute("INSERT INTO t (k, n) VALUES ('B', 0)", ()))
        .await
        .unwrap();
    let first: String = db
        .read(|c| c.query_row("SELECT k FROM t ORDER BY k LIMIT 1", (), |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(first, "B");
    assert!(matches!(db.dialect(), Dialect::Sqlite | Dialect::Postgres));
}
