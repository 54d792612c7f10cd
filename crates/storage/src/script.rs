//! Statements run together: a [`Script`] of inserts and updates that each must change
//! exactly the rows they aim at, in runs of a few shapes.

use crate::store::{is_unique_violation, query, rows, Engine, Transaction};

/// A value bound to a statement of a [`Script`].
pub(crate) enum Value<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
}

/// Statements that each change exactly the rows they aim at when all goes well (a row per
/// inserted row, one per targeted row of an update), run together inside a transaction.
/// On SQLite they go to the database as one call: sqlx runs every SQLite connection on a
/// thread of its own, and each call is a round trip to it, two thread switches, which
/// under load cost more than the statements. MySQL and PostgreSQL take them one by one.
#[derive(Default)]
pub(crate) struct Script<'a> {
    statements: Vec<(String, Vec<Value<'a>>)>,
    /// Rows the statements change when all goes well.
    expected_rows: u64,
}

impl<'a> Script<'a> {
    /// Adds a statement that changes `rows` rows when all goes well.
    pub(crate) fn push(&mut self, sql: impl Into<String>, values: Vec<Value<'a>>, rows: usize) {
        self.expected_rows += rows as u64;
        self.statements.push((sql.into(), values));
    }

    /// Adds `INSERT INTO {into} VALUES {row}, {row}, ...`, one `row` per value list: it
    /// inserts them all or fails.
    pub(crate) fn insert_rows(&mut self, into: &str, row: &str, rows: impl Iterator<Item = Vec<Value<'a>>>) {
        let (mut count, mut values) = (0, Vec::new());
        for row_values in rows {
            count += 1;
            values.extend(row_values);
        }
        self.push(
            format!("INSERT INTO {into} VALUES {}", vec![row; count].join(", ")),
            values,
            count,
        );
    }

    /// Runs the statements inside `tx`: true when each changed what it aimed at; false
    /// when any did not or a unique key refused a row (the caller must roll `tx` back).
    pub(crate) async fn run_and_check(self, tx: &mut Transaction, engine: Engine) -> Result<bool, sqlx::Error> {
        let expected = self.expected_rows;
        match self.execute_all(tx, engine).await {
            Ok(changed) => Ok(changed == expected),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Runs the statements inside `tx`, answering the rows they changed in all.
    pub(crate) async fn execute_all(self, tx: &mut Transaction, engine: Engine) -> Result<u64, sqlx::Error> {
        match engine {
            Engine::Sqlite => {
                // Batches of other sizes make other texts: prepared each time, not kept.
                let sql = self
                    .statements
                    .iter()
                    .map(|(sql, _)| sql.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n");
                let values = self.statements.iter().flat_map(|(_, values)| values);
                Self::execute(sqlx::query(&sql).persistent(false), values, tx).await
            }
            Engine::MySql | Engine::Postgres => {
                let mut changed = 0;
                for (sql, values) in &self.statements {
                    changed += Self::execute(query(engine, sql), values, tx).await?;
                }
                Ok(changed)
            }
        }
    }

    /// Binds `values` to `query` in order and runs it, answering the rows it changed.
    pub(crate) async fn execute<'q>(
        mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        values: impl IntoIterator<Item = &'q Value<'q>>,
        tx: &mut Transaction,
    ) -> Result<u64, sqlx::Error> {
        for value in values {
            query = match *value {
                Value::Text(text) => query.bind(text),
                Value::MaybeText(text) => query.bind(text),
                Value::Int(number) => query.bind(number),
            };
        }
        Ok(rows(&query.execute(&mut **tx).await?))
    }
}

/// `?, ?, ...`: `count` placeholders.
pub(crate) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// `items` in runs whose lengths are powers of two, longest first (45 = 32 + 8 + 4 + 1).
/// A statement over a run then comes in a few shapes only, which each MySQL connection's
/// statement cache keeps prepared (SQLite prepares a [`Script`] each time); one shape
/// per batch size filled the caches with up to 64 large variants of each statement,
/// evicting and preparing them again, and held megabytes of them in every bank.
pub(crate) fn in_runs<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let len = 1 << items.len().checked_ilog2()?;
        let (run, rest) = items.split_at(len);
        items = rest;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::in_runs;

    #[test]
    fn a_batch_splits_into_runs_of_powers_of_two_longest_first() {
        let lengths = |n: usize| in_runs(&vec![0; n]).map(<[i32]>::len).collect::<Vec<_>>();
        assert_eq!(lengths(0), Vec::<usize>::new());
        assert_eq!(lengths(1), [1]);
        assert_eq!(lengths(45), [32, 8, 4, 1]);
        assert_eq!(lengths(64), [64]);
        assert_eq!(lengths(63), [32, 16, 8, 4, 2, 1]);
        let items: Vec<usize> = (0..13).collect();
        let rejoined: Vec<usize> = in_runs(&items).flatten().copied().collect();
        assert_eq!(rejoined, items, "every item once, in order");
    }
}
