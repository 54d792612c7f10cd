//! Helpers for tests in this and other crates (feature `test-support`).

/// Creates a uniquely named, empty database on the MySQL/MariaDB server named by
/// `TXBANK_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`) and returns its URL.
///
/// Panics when the server does not answer: the tests need it (`scripts/test.sh` starts it).
pub async fn fresh_mysql_database() -> String {
    let server = std::env::var("TXBANK_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let name = format!("txbank_t_{}", uuid::Uuid::new_v4().simple());
    crate::create_mysql_database(&server, &name)
        .await
        .expect("MySQL/MariaDB must run for the tests (scripts/test.sh starts it)")
}
