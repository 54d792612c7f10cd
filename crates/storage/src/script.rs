//! Statements run together: a [`Script`] of inserts and updates that each must change
//! exactly the rows they aim at, in runs of a few shapes.

use std::collections::BTreeMap;

use crate::accounts::{CREDIT_ONE_ACCOUNT, DEBIT_ONE_ACCOUNT};
use crate::store::{is_unique_violation, query, rows, Engine, Transaction, MAX_BALANCE_CENTS};

/// A value bound to a statement of a [`Script`].
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    /// What fills the room left in a statement's text on SQLite ([`statement_sizes`]).
    Null,
}

/// The most rows one statement of a [`Script`] covers on SQLite.
const SQLITE_MOST_ROWS: usize = 128;

/// A statement of a [`Script`] and the values bound to it.
struct Statement<'a> {
    sql: String,
    values: Vec<Value<'a>>,
    /// Kept prepared, with PostgreSQL's plan for it, rather than planned for its values
    /// each time.
    kept: bool,
}

/// Which way [`Script::move_balances`] moves each account's sum.
#[derive(Clone, Copy)]
pub(crate) enum Movement {
    /// Out of the account, which must be open and hold the sum.
    Debit,
    /// Into the account, which must be open and stay within the largest balance.
    Credit,
}

/// Statements that each change exactly the rows they aim at when all goes well (a row per
/// inserted row, one per targeted row of an update), run together inside a transaction,
/// one by one. The texts come in a few shapes, which every connection keeps prepared
/// (parsing a batch's statements anew each time cost a SQLite bank a sixth of its CPU):
/// the rows are split by [`statement_sizes`].
pub(crate) struct Script<'a> {
    engine: Engine,
    statements: Vec<Statement<'a>>,
    /// Rows the statements change when all goes well.
    expected_rows: u64,
}

impl<'a> Script<'a> {
    /// An empty script for a database of `engine`.
    pub(crate) fn new(engine: Engine) -> Script<'a> {
        Script {
            engine,
            statements: Vec::new(),
            expected_rows: 0,
        }
    }

    /// Adds a statement that changes `rows` rows when all goes well.
    pub(crate) fn push(&mut self, sql: impl Into<String>, values: Vec<Value<'a>>, rows: usize) {
        self.add(sql.into(), values, rows, true);
    }

    /// How many statements the script runs.
    #[cfg(test)]
    pub(crate) fn statement_count(&self) -> usize {
        self.statements.len()
    }

    fn add(&mut self, sql: String, values: Vec<Value<'a>>, rows: usize, kept: bool) {
        self.expected_rows += rows as u64;
        self.statements.push(Statement { sql, values, kept });
    }

    /// Adds `INSERT INTO {into} VALUES {row}, {row}, ...` for all `rows`, one row per value
    /// list, as few statements as [`statement_sizes`] allows: each inserts its rows or
    /// fails. The first value of every row must not be NULL.
    pub(crate) fn insert_rows(&mut self, into: &str, row: &str, rows: impl IntoIterator<Item = Vec<Value<'a>>>) {
        let mut rows = rows.into_iter().collect::<Vec<_>>().into_iter();
        for (count, room) in statement_sizes(self.engine, rows.len()) {
            let mut values: Vec<Value<'a>> = rows.by_ref().take(count).flatten().collect();
            let width = values.len() / count;
            values.extend(nulls((room - count) * width));
            let listed = vec![row; room].join(", ");
            let sql = if room == count {
                format!("INSERT INTO {into} VALUES {listed}")
            } else {
                // The rows of NULLs that fill the room are left out.
                format!("INSERT INTO {into} SELECT * FROM (VALUES {listed}) WHERE column1 IS NOT NULL")
            };
            self.push(sql, values, count);
        }
    }

    /// Adds `INSERT INTO {into} VALUES {row}, {row}, ...` for all `rows` in one statement,
    /// whatever their number.
    pub(crate) fn insert_rows_at_once(&mut self, into: &str, row: &str, rows: impl Iterator<Item = Vec<Value<'a>>>) {
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

    /// Adds `{head} ({listed values})`, an update whose last condition is `… IN` a list,
    /// after `leading` values, for all of `listed`, split as [`statement_sizes`] says: each
    /// changes one row per listed value when all goes well. PostgreSQL plans it for its
    /// values each time: its generic plan for `UPDATE transfer_out … WHERE tx_no IN (…)`,
    /// cached while a new bank's `transfer_out` was nearly empty, scanned the whole table:
    /// 0.3 to 0.7 s a statement once it held 100,000 rows (`pg_stat_activity`).
    pub(crate) fn update_listed(&mut self, head: &str, leading: &[Value<'a>], listed: &[Value<'a>]) {
        let kept = self.engine != Engine::Postgres;
        let mut listed = listed.iter();
        for (count, room) in statement_sizes(self.engine, listed.len()) {
            let mut values: Vec<Value<'a>> = leading.to_vec();
            values.extend(listed.by_ref().take(count).copied());
            values.extend(nulls(room - count));
            self.add(format!("{head} ({})", placeholders(room)), values, count, kept);
        }
    }

    /// Adds the statements that move each account's sum of `sums` out of it or into it,
    /// as few `UPDATE`s as [`statement_sizes`] allows on SQLite, one per account on
    /// MySQL and PostgreSQL (whose plan for the run's join scanned every account and
    /// halved a bank's throughput at 64 clients). Each changes every account of its run
    /// or the script is not whole: an account unknown, closed, short of its sum (debit)
    /// or pushed past the largest balance (credit) changes nothing.
    pub(crate) fn move_balances(&mut self, movement: Movement, sums: &BTreeMap<&'a str, i64>) {
        let sums: Vec<(&'a str, i64)> = sums.iter().map(|(account, cents)| (*account, *cents)).collect();
        let (sign, compared) = match movement {
            Movement::Debit => ("-", ">="),
            Movement::Credit => ("+", "<="),
        };
        // The bound each balance is checked against: the sum for a debit, the room left
        // below the largest balance for a credit.
        let bound = |cents: i64| match movement {
            Movement::Debit => cents,
            Movement::Credit => MAX_BALANCE_CENTS - cents,
        };
        if self.engine != Engine::Sqlite {
            let one_account = match movement {
                Movement::Debit => DEBIT_ONE_ACCOUNT,
                Movement::Credit => CREDIT_ONE_ACCOUNT,
            };
            for (account, cents) in sums {
                self.push(
                    one_account,
                    vec![Value::Int(cents), Value::Text(account), Value::Int(bound(cents))],
                    1,
                );
            }
            return;
        }
        let mut sums = sums.into_iter();
        for (count, room) in statement_sizes(self.engine, sums.len()) {
            let mut values: Vec<Value<'a>> = sums
                .by_ref()
                .take(count)
                .flat_map(|(account, cents)| [Value::Text(account), Value::Int(cents), Value::Int(bound(cents))])
                .collect();
            // Rows of NULLs fill the room and match no account.
            values.extend(nulls((room - count) * 3));
            self.push(
                format!(
                    "WITH sums (account_no, cents, bound) AS (VALUES {})
                     UPDATE account_info SET account_balance_cents = account_balance_cents {sign} sums.cents
                     FROM sums WHERE account_info.account_no = sums.account_no
                     AND account_info.closed = 0 AND account_info.account_balance_cents {compared} sums.bound",
                    vec!["(?, ?, ?)"; room].join(", ")
                ),
                values,
                count,
            );
        }
    }

    /// Runs the statements inside `tx`: true when each changed what it aimed at; false
    /// when any did not or a unique key refused a row (the caller must roll `tx` back).
    pub(crate) async fn run_and_check(self, tx: &mut Transaction) -> Result<bool, sqlx::Error> {
        let expected = self.expected_rows;
        match self.execute_all(tx).await {
            Ok(changed) => Ok(changed == expected),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Runs the statements inside `tx`, answering the rows they changed in all.
    pub(crate) async fn execute_all(self, tx: &mut Transaction) -> Result<u64, sqlx::Error> {
        let mut changed = 0;
        for Statement { sql, values, kept } in &self.statements {
            changed += Self::execute(query(self.engine, sql).persistent(*kept), values, tx).await?;
        }
        Ok(changed)
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
                Value::Null => query.bind(None::<&str>),
            };
        }
        Ok(rows(&query.execute(&mut **tx).await?))
    }
}

/// `?, ?, ...`: `count` placeholders.
pub(crate) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// `count` NULLs, to fill the room left in a statement's text ([`statement_sizes`]).
fn nulls<'a>(count: usize) -> impl Iterator<Item = Value<'a>> {
    std::iter::repeat_n(Value::Null, count)
}

/// How a [`Script`] splits `count` rows into statements on `engine`: for each statement,
/// the rows it covers and the rows its text has room for. On SQLite, which writes one
/// transaction at a time, each statement is a trip to the connection's thread inside the
/// bank's one write turn, so rows go as few statements as possible: up to 128 each, in a
/// text with room for the next power of two, the room left filled with NULLs (eight
/// shapes of each statement). On MySQL and PostgreSQL a statement's rows fill its text
/// exactly, in runs whose lengths are powers of two ([`in_runs`]).
pub(crate) fn statement_sizes(engine: Engine, count: usize) -> Vec<(usize, usize)> {
    if engine != Engine::Sqlite {
        return in_runs(&vec![(); count]).map(|run| (run.len(), run.len())).collect();
    }
    let mut sizes = vec![(SQLITE_MOST_ROWS, SQLITE_MOST_ROWS); count / SQLITE_MOST_ROWS];
    let rest = count % SQLITE_MOST_ROWS;
    if rest > 0 {
        sizes.push((rest, rest.next_power_of_two()));
    }
    sizes
}

/// `items` in runs whose lengths are powers of two, longest first (45 = 32 + 8 + 4 + 1).
/// A statement over a run then comes in a few shapes only, which each connection's
/// statement cache keeps prepared; one shape per batch size filled the caches with up
/// to 64 large variants of each statement, evicting and preparing them again, and held
/// megabytes of them in every bank.
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
    use super::{in_runs, statement_sizes};
    use crate::store::Engine;

    #[test]
    fn on_sqlite_a_statement_covers_up_to_128_rows_in_room_for_a_power_of_two() {
        let sizes = |count: usize| statement_sizes(Engine::Sqlite, count);
        assert_eq!(sizes(0), []);
        assert_eq!(sizes(1), [(1, 1)]);
        assert_eq!(sizes(45), [(45, 64)]);
        assert_eq!(sizes(128), [(128, 128)]);
        assert_eq!(sizes(300), [(128, 128), (128, 128), (44, 64)]);
    }

    #[test]
    fn on_mysql_and_postgres_statements_cover_runs_of_powers_of_two_exactly() {
        for engine in [Engine::MySql, Engine::Postgres] {
            assert_eq!(statement_sizes(engine, 45), [(32, 32), (8, 8), (4, 4), (1, 1)]);
            assert_eq!(statement_sizes(engine, 0), []);
        }
    }

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
