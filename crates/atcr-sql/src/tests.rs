//! The SQLite store (the PostgreSQL store runs the same units of work in
//! `tests/postgres.rs`, against a real server).

use super::*;

const MIGRATIONS: &[Migration] = &[(
    1,
    "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, b BLOB)",
)];

#[test]
fn placeholders_translate_outside_quotes() {
    assert_eq!(
        postgres_translate("SELECT '?1', ?1, x = ?12 WHERE y = 'a''?2'"),
        "SELECT '?1', $1, x = $12 WHERE y = 'a''?2'"
    );
}

fn postgres_translate(s: &str) -> String {
    super::postgres::translate_for_tests(s)
}

#[tokio::test]
async fn units_of_work_commit_or_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite(&dir.path().join("t.sqlite"), MIGRATIONS).unwrap();
    crate::conformance::units_of_work(&db).await;
}
