//! Helpers for txbank's tests: a fresh, empty database on the MySQL/MariaDB or
//! PostgreSQL server the tests use.

/// Creates a uniquely named, empty database on the MySQL/MariaDB server named by
/// `TXBANK_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`) and returns its URL.
///
/// Panics when the server does not answer: the tests need it (`scripts/test.sh` starts it).
pub async fn fresh_mysql_database() -> String {
    fresh_database("TXBANK_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306", "MySQL/MariaDB").await
}

/// Creates a uniquely named, empty database on the PostgreSQL server named by
/// `TXBANK_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432`) and returns
/// its URL.
///
/// Panics when the server does not answer: the tests need it (`scripts/test.sh` starts it).
pub async fn fresh_postgres_database() -> String {
    fresh_database(
        "TXBANK_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432",
        "PostgreSQL",
    )
    .await
}

async fn fresh_database(variable: &str, default: &str, server: &str) -> String {
    let url = std::env::var(variable).unwrap_or_else(|_| default.into());
    let name = format!("txbank_t_{}", uuid::Uuid::new_v4().simple());
    txbank_storage::create_database(&url, &name)
        .await
        .unwrap_or_else(|error| panic!("{server} must run for the tests (scripts/test.sh starts it): {error}"))
}
