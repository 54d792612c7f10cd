//! Exact money: an integer number of cents, parsed from and shown as decimal text.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// The largest value DECIMAL(10,2) holds, in cents: 99,999,999.99.
const MAX_CENTS: i64 = 9_999_999_999;

/// A non-negative amount of money with exactly two decimals, such as a balance.
///
/// Stored as whole cents so that arithmetic is exact; at most 99,999,999.99, the range
/// of the seed's `DECIMAL(10,2)` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Money(i64);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);
    /// The most a balance holds: 99,999,999.99.
    pub const MAX: Money = Money(MAX_CENTS);

    /// Money from whole cents; refuses negative values and values above 99,999,999.99.
    pub fn from_cents(cents: i64) -> Result<Self, DomainError> {
        if cents < 0 {
            return Err(DomainError::NonPositiveAmount {
                input: cents.to_string(),
            });
        }
        if cents > MAX_CENTS {
            return Err(DomainError::AmountOutOfRange {
                input: cents.to_string(),
            });
        }
        Ok(Money(cents))
    }

    /// Parses decimal text such as `"100"`, `"100.5"` or `"9900.00"`.
    ///
    /// Refuses signs other than a leading `-` (reported as non-positive), exponents,
    /// more than two decimals, and anything above 99,999,999.99.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let cents = parse_cents(input)?;
        if cents < 0 {
            return Err(DomainError::NonPositiveAmount {
                input: input.to_string(),
            });
        }
        Ok(Money(cents))
    }

    /// The value in whole cents.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` when the sum leaves the DECIMAL(10,2) range.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).filter(|c| *c <= MAX_CENTS).map(Money)
    }

    /// `self - other`, or `None` when the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).filter(|c| *c >= 0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// A positive amount of money to transfer: a [`Money`] that is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(Money);

impl Amount {
    /// Parses decimal text like [`Money::parse`] and also refuses zero.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let cents = parse_cents(input)?;
        if cents <= 0 {
            return Err(DomainError::NonPositiveAmount {
                input: input.to_string(),
            });
        }
        Ok(Amount(Money(cents)))
    }

    /// An amount from whole cents; refuses zero, negative and out-of-range values.
    pub fn from_cents(cents: i64) -> Result<Self, DomainError> {
        if cents <= 0 {
            return Err(DomainError::NonPositiveAmount {
                input: cents.to_string(),
            });
        }
        Money::from_cents(cents).map(Amount)
    }

    /// The amount as [`Money`].
    pub fn money(self) -> Money {
        self.0
    }

    /// The amount in whole cents.
    pub fn cents(self) -> i64 {
        self.0.cents()
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses `[-]digits[.d[d]]` into cents; a leading `-` yields a negative result so the
/// caller can report it as "not positive" rather than "malformed".
fn parse_cents(input: &str) -> Result<i64, DomainError> {
    let malformed = || DomainError::MalformedAmount {
        input: input.to_string(),
    };
    let out_of_range = || DomainError::AmountOutOfRange {
        input: input.to_string(),
    };
    let (negative, unsigned) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(malformed());
    }
    if unsigned.contains('.') && fraction.is_empty() {
        return Err(malformed());
    }
    if fraction.len() > 2 {
        return Err(malformed());
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 8 {
        return Err(out_of_range());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| malformed())?
    };
    let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| malformed())?;
    let cents = whole * 100 + fraction;
    Ok(if negative { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_whole_and_decimal_amounts_exactly() {
        for (text, cents) in [
            ("100", 10_000),
            ("100.5", 10_050),
            ("0.01", 1),
            ("99999999.99", MAX_CENTS),
            ("007.10", 710),
        ] {
            assert_eq!(Amount::parse(text).unwrap().cents(), cents, "{text}");
        }
    }

    #[test]
    fn refuses_amounts_a_bank_must_not_accept() {
        let cases = [
            ("", "malformed"),
            ("abc", "malformed"),
            ("1e3", "malformed"),
            ("NaN", "malformed"),
            ("inf", "malformed"),
            ("1.", "malformed"),
            (".5", "malformed"),
            ("+5", "malformed"),
            ("1.001", "malformed"),
            ("1,00", "malformed"),
            (" 1", "malformed"),
            ("１", "malformed"),
            ("0", "non-positive"),
            ("0.00", "non-positive"),
            ("-1", "non-positive"),
            ("100000000", "range"),
            ("99999999999999999999999", "range"),
        ];
        for (text, kind) in cases {
            let err = Amount::parse(text).unwrap_err();
            let matches = match kind {
                "malformed" => matches!(err, DomainError::MalformedAmount { .. }),
                "non-positive" => matches!(err, DomainError::NonPositiveAmount { .. }),
                _ => matches!(err, DomainError::AmountOutOfRange { .. }),
            };
            assert!(matches, "{text:?} gave {err:?}, expected {kind}");
        }
    }

    #[test]
    fn money_allows_zero_but_amount_does_not() {
        assert_eq!(Money::parse("0").unwrap(), Money::ZERO);
        assert!(Amount::parse("0").is_err());
    }

    #[test]
    fn displays_with_two_decimals() {
        assert_eq!(Money::from_cents(990_000).unwrap().to_string(), "9900.00");
        assert_eq!(Money::from_cents(5).unwrap().to_string(), "0.05");
    }

    #[test]
    fn subtraction_never_goes_negative_and_addition_stays_in_range() {
        let ten = Money::from_cents(1000).unwrap();
        let eleven = Money::from_cents(1100).unwrap();
        assert_eq!(ten.checked_sub(eleven), None);
        assert_eq!(
            Money::from_cents(MAX_CENTS)
                .unwrap()
                .checked_add(Money::from_cents(1).unwrap()),
            None
        );
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(cents in 0i64..=MAX_CENTS) {
            let money = Money::from_cents(cents).unwrap();
            prop_assert_eq!(Money::parse(&money.to_string()).unwrap(), money);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = Money::parse(&text);
            let _ = Amount::parse(&text);
        }

        #[test]
        fn add_then_subtract_restores(a in 0i64..=MAX_CENTS / 2, b in 0i64..=MAX_CENTS / 2) {
            let (a, b) = (Money::from_cents(a).unwrap(), Money::from_cents(b).unwrap());
            prop_assert_eq!(a.checked_add(b).unwrap().checked_sub(b).unwrap(), a);
        }
    }
}

crate::text_form!(Money);
