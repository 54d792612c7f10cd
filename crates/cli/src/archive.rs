//! `txbank archive`: moves settled transfers older than a date out of the banks' hot
//! tables into their archive tables (docs/OPERATIONS.md).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use txbank_domain::retention::MIN_ARCHIVE_AGE_MS;

use crate::databases::{named_or_up, open_existing};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Archives the settled transfers recorded before `before` (`YYYY-MM-DD`, midnight UTC)
/// in `banks` (`NAME=URL`), or in `up`'s banks under `data_dir` when none are given.
/// Every bank is checked first (its schema is current, it is the named bank's, nothing
/// it sent before the date is in flight); none is changed unless all pass.
pub fn run(before: &str, banks: &[String], data_dir: &Path) -> Result<()> {
    let before_ms = parse_date(before)?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    if before_ms > now_ms {
        bail!("{before} is in the future: only the past can be archived");
    }
    let latest = now_ms - MIN_ARCHIVE_AGE_MS;
    if before_ms > latest {
        bail!(
            "{before} is less than {} days ago: a message about a transfer made since {} may still arrive; \
             archive before {} at the latest",
            MIN_ARCHIVE_AGE_MS / DAY_MS,
            format_date(latest),
            format_date(latest - latest.rem_euclid(DAY_MS)),
        );
    }
    let banks = named_or_up(banks, data_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let stores = open_existing(&banks).await?;
        for store in &stores {
            let bank = store.bank();
            store
                .require_current_schema()
                .await
                .with_context(|| format!("{bank}: nothing archived"))?;
            store
                .refuse_archive_cutting_in_flight(before_ms)
                .await
                .with_context(|| format!("{bank}: nothing archived"))?;
        }
        for store in &stores {
            let run = store
                .archive_before(before_ms)
                .await
                .with_context(|| format!("{}: archiving stopped", store.bank()))?;
            println!(
                "{}: archived {} sent and {} received transfers recorded before {before}, deleted {} de-duplication rows",
                store.bank(),
                run.sent,
                run.received,
                run.de_duplication
            );
            store.close().await;
        }
        Ok(())
    })
}

/// Midnight UTC of `YYYY-MM-DD`, Unix milliseconds.
fn parse_date(text: &str) -> Result<i64> {
    let invalid = || format!("{text:?} is not a date: expected YYYY-MM-DD");
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts[..] else {
        bail!(invalid());
    };
    let number = |part: &str, digits: usize| -> Result<i64> {
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_digit()) {
            bail!(invalid());
        }
        Ok(part.parse()?)
    };
    let (year, month, day) = (number(year, 4)?, number(month, 2)?, number(day, 2)?);
    let days = days_from_civil(year, month, day);
    if !(1..=12).contains(&month) || day < 1 || civil_from_days(days) != (year, month, day) {
        bail!(invalid());
    }
    Ok(days * DAY_MS)
}

/// `unix_ms` as `YYYY-MM-DD` (UTC).
fn format_date(unix_ms: i64) -> String {
    let (year, month, day) = civil_from_days(unix_ms.div_euclid(DAY_MS));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_midnight_utc_and_nonsense_is_refused() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("2026-12-01").unwrap(), 1_796_083_200_000);
        assert_eq!(format_date(1_796_083_200_000 + 5), "2026-12-01");
        assert_eq!(parse_date("2024-02-29").map(format_date).unwrap(), "2024-02-29");
        for bad in [
            "2025-02-29",
            "2026-13-01",
            "2026-00-10",
            "26-12-01",
            "2026-1-01",
            "yesterday",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
