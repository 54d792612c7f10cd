//! The auditor's rules: given what each bank's database holds, is every cent accounted
//! for and did every transfer end in exactly one correct state?

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::{Amount, TransferState, TxNo};

/// What the auditor reads from one bank, in one consistent snapshot.
#[derive(Debug, Clone, Default)]
pub struct BankLedger {
    /// The bank's name, for the report.
    pub bank: String,
    /// The sum of all opening balances, in cents: the money that entered through this bank.
    pub opened_cents: i64,
    /// The sum of all current balances, in cents.
    pub balance_cents: i64,
    /// Returned money its source account could not take back, held on the bank's books.
    pub held_cents: i64,
    /// How many returns are held.
    pub held: usize,
    /// Transfers debited whose message no broker has taken yet (paid while the broker
    /// was away).
    pub queued: usize,
    /// Every transfer this bank sent or refused.
    pub outgoing: Vec<Outgoing>,
    /// Every transfer this bank received, credited or refused.
    pub incoming: Vec<Incoming>,
    /// Received messages this bank never applied (unreadable, unauthenticated,
    /// misrouted); not a violation, but something for an operator to look at.
    pub set_aside: usize,
    /// What this bank archived, in totals.
    pub archived: ArchivedTotals,
    /// Archived sent transfers that another bank's live transfers name (see
    /// [`unmatched`]): matched against, never counted again.
    pub archived_outgoing: Vec<Outgoing>,
    /// Archived received transfers that another bank's live transfers name.
    pub archived_incoming: Vec<Incoming>,
}

/// Settled transfers a bank moved to its archive, in totals: the auditor carries them
/// instead of reading every archived row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchivedTotals {
    /// Sent transfers credited by their destination.
    pub sent_credited: usize,
    /// Their amounts, in cents.
    pub sent_credited_cents: i64,
    /// Sent transfers whose money came back.
    pub returned: usize,
    /// Sent transfers rolled back (never debited).
    pub rolled_back: usize,
    /// Received transfers credited here.
    pub received_credited: usize,
    /// Their amounts, in cents.
    pub received_credited_cents: i64,
    /// Received transfers refused here.
    pub refused: usize,
}

/// The live transfers whose other side no live ledger holds: credits with no live debit,
/// and sent transfers reported credited with no live credit. Their other side may be
/// archived; the caller looks them up there and hands the rows found to [`audit`]
/// (`archived_outgoing`, `archived_incoming`).
pub fn unmatched(ledgers: &[BankLedger]) -> (Vec<TxNo>, Vec<TxNo>) {
    let (sent, received) = in_order(ledgers);
    let (mut credits_without_debit, mut reported_without_credit) = (Vec::new(), Vec::new());
    for (tx_no, outs, ins) in sides(&sent, &received) {
        if outs.is_empty() && ins.iter().any(|inc| inc.credited) {
            credits_without_debit.push(tx_no.clone());
        }
        if ins.is_empty() && outs.iter().any(|out| out.state == TransferState::Credited) {
            reported_without_credit.push(tx_no.clone());
        }
    }
    (credits_without_debit, reported_without_credit)
}

/// Every live transfer of `ledgers`, sent and received, each list in `tx_no` order.
fn in_order(ledgers: &[BankLedger]) -> (Vec<&Outgoing>, Vec<&Incoming>) {
    let mut sent: Vec<&Outgoing> = ledgers.iter().flat_map(|l| &l.outgoing).collect();
    let mut received: Vec<&Incoming> = ledgers.iter().flat_map(|l| &l.incoming).collect();
    // Stable sorts merge the banks' runs, which each come in order from its database.
    sent.sort_by(|a, b| a.tx_no.cmp(&b.tx_no));
    received.sort_by(|a, b| a.tx_no.cmp(&b.tx_no));
    (sent, received)
}

/// Each transaction number of `sent` and `received` (both in `tx_no` order) once, in
/// order, with its entries in each: the two sides of a transfer side by side, found by
/// walking both lists together rather than hashing tens of millions of numbers.
fn sides<'v, 'a>(
    sent: &'v [&'a Outgoing],
    received: &'v [&'a Incoming],
) -> impl Iterator<Item = (&'a TxNo, &'v [&'a Outgoing], &'v [&'a Incoming])> {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let tx_no: &'a TxNo = match (sent.get(i).copied(), received.get(j).copied()) {
            (Some(out), Some(inc)) => (&out.tx_no).min(&inc.tx_no),
            (Some(out), None) => &out.tx_no,
            (None, Some(inc)) => &inc.tx_no,
            (None, None) => return None,
        };
        let outs_end = i + sent[i..].iter().take_while(|out| out.tx_no == *tx_no).count();
        let ins_end = j + received[j..].iter().take_while(|inc| inc.tx_no == *tx_no).count();
        let (outs, ins) = (&sent[i..outs_end], &received[j..ins_end]);
        (i, j) = (outs_end, ins_end);
        Some((tx_no, outs, ins))
    })
}

/// A transfer as its sender recorded it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its transaction number.
    pub tx_no: TxNo,
    /// Where it stands.
    pub state: TransferState,
    /// How much.
    pub amount: Amount,
    /// When it was recorded, Unix milliseconds.
    pub created_at_ms: i64,
}

/// A transfer as its destination recorded it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its transaction number.
    pub tx_no: TxNo,
    /// How much.
    pub amount: Amount,
    /// True when credited; false when refused (the money goes back to its sender).
    pub credited: bool,
}

/// Something that must never happen, with the transfer it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// Opening balances ≠ current balances + money in flight.
    Conservation { opened_cents: i64, accounted_cents: i64 },
    /// A credit with no debit anywhere.
    CreditedWithoutDebit { tx_no: String },
    /// A credit of a transfer its sender rolled back.
    CreditedAfterRollback { tx_no: String },
    /// The same transfer credited in more than one bank.
    CreditedTwice { tx_no: String },
    /// Credited, and also returned to its sender.
    CreditedAndReturned { tx_no: String },
    /// Its sender records it as credited, yet no bank credited it.
    ReportedCreditMissing { tx_no: String },
    /// Credited with another amount than was debited.
    AmountMismatch {
        tx_no: String,
        debited_cents: i64,
        credited_cents: i64,
    },
}

/// How old a transfer in flight may get before the auditor calls it stuck, by default:
/// 10 minutes. Re-drive sends an unsettled transfer again within a minute or two, so
/// one older than this waits for something an operator must look at (a destination
/// down for long, a message set aside).
pub const DEFAULT_STUCK_AFTER_MS: i64 = 10 * 60 * 1000;

/// The auditor's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Money that entered the system (opening balances), in cents.
    pub opened_cents: i64,
    /// Money on accounts now, in cents.
    pub balance_cents: i64,
    /// Returned money held because its source could not take it back, in cents.
    pub held_cents: i64,
    /// Returns held.
    pub held: usize,
    /// Debited and not yet credited, in cents.
    pub in_flight_cents: i64,
    /// Transfers debited and not yet credited.
    pub in_flight: usize,
    /// Age of the oldest transfer in flight, in milliseconds.
    pub oldest_in_flight_ms: Option<i64>,
    /// Transfers debited by their senders (whatever happened after).
    pub debited: usize,
    /// Transfers rolled back by their senders.
    pub rolled_back: usize,
    /// Transfers credited by their destinations.
    pub credited: usize,
    /// Transfers their destinations refused.
    pub refused: usize,
    /// Transfers whose money went back to the source.
    pub returned: usize,
    /// Received messages never applied, over all banks (see `txbank dlq list`).
    pub set_aside: usize,
    /// Everything that must never happen; empty when the books balance.
    pub violations: Vec<Violation>,
}

impl AuditReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// True when a transfer has been in flight for longer than `after_ms`.
    pub fn has_stuck_transfers(&self, after_ms: i64) -> bool {
        self.oldest_in_flight_ms.is_some_and(|age| age > after_ms)
    }
}

/// One bank's own books, which that bank can check alone: the money that came in
/// (opening balances and credits received) equals the money on its accounts and held
/// returns plus the money that went out (debits of transfers not returned). Each bank serves this at `GET /audit`;
/// the cross-bank checks need every bank's ledger ([`audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankBooks {
    /// The bank.
    pub bank: String,
    /// Opening balances, in cents.
    pub opened_cents: i64,
    /// Credits received (from other banks and from this bank's own book transfers).
    pub received_cents: i64,
    /// Money on accounts now, in cents.
    pub balance_cents: i64,
    /// Returned money held because its source could not take it back, in cents.
    pub held_cents: i64,
    /// Debits of transfers sent and not returned, in cents.
    pub sent_cents: i64,
    /// True when came in = on accounts + went out.
    pub balanced: bool,
    /// Transfers sent and debited whose destination has not reported yet.
    pub awaiting_report: usize,
    /// Age of the oldest of those, in milliseconds.
    pub oldest_awaiting_report_ms: Option<i64>,
    /// True when the oldest of those is older than the threshold the books were read
    /// with ([`DEFAULT_STUCK_AFTER_MS`] unless asked otherwise).
    pub stuck: bool,
    /// Returns held because their source could not take the money back.
    pub held: usize,
    /// Of the transfers awaiting their report, those whose message no broker has taken
    /// yet.
    pub queued: usize,
    /// Received messages never applied.
    pub set_aside: usize,
}

impl BankBooks {
    /// These books, with `stuck` judged against `after_ms`.
    pub fn stuck_after(mut self, after_ms: i64) -> BankBooks {
        self.stuck = self.oldest_awaiting_report_ms.is_some_and(|age| age > after_ms);
        self
    }
}

/// The books of the bank whose ledger this is, at time `now_ms`.
pub fn books(ledger: &BankLedger, now_ms: i64) -> BankBooks {
    let received_cents = ledger
        .incoming
        .iter()
        .filter(|incoming| incoming.credited)
        .map(|incoming| incoming.amount.cents())
        .sum::<i64>()
        + ledger.archived.received_credited_cents;
    let sent_cents = ledger
        .outgoing
        .iter()
        .filter(|out| matches!(out.state, TransferState::Debited | TransferState::Credited))
        .map(|out| out.amount.cents())
        .sum::<i64>()
        + ledger.archived.sent_credited_cents;
    let awaiting: Vec<&Outgoing> = ledger
        .outgoing
        .iter()
        .filter(|out| out.state == TransferState::Debited)
        .collect();
    BankBooks {
        bank: ledger.bank.clone(),
        opened_cents: ledger.opened_cents,
        received_cents,
        balance_cents: ledger.balance_cents,
        held_cents: ledger.held_cents,
        sent_cents,
        balanced: ledger.opened_cents + received_cents == ledger.balance_cents + ledger.held_cents + sent_cents,
        awaiting_report: awaiting.len(),
        oldest_awaiting_report_ms: awaiting.iter().map(|out| now_ms - out.created_at_ms).max(),
        stuck: false,
        held: ledger.held,
        queued: ledger.queued,
        set_aside: ledger.set_aside,
    }
    .stuck_after(DEFAULT_STUCK_AFTER_MS)
}

/// Audits the banks' ledgers at time `now_ms`.
///
/// Read receiving banks before sending banks (or audit at rest): a credit read before
/// its debit would otherwise look like money from nowhere.
pub fn audit(ledgers: &[BankLedger], now_ms: i64) -> AuditReport {
    let mut report = AuditReport::default();
    let mut archived_sent: HashMap<&TxNo, &Outgoing> = HashMap::new();
    let mut archived_credits: HashSet<&TxNo> = HashSet::new();
    for ledger in ledgers {
        report.opened_cents += ledger.opened_cents;
        report.balance_cents += ledger.balance_cents;
        report.held_cents += ledger.held_cents;
        report.held += ledger.held;
        report.set_aside += ledger.set_aside;
        let archived = &ledger.archived;
        report.debited += archived.sent_credited + archived.returned;
        report.returned += archived.returned;
        report.rolled_back += archived.rolled_back;
        report.credited += archived.received_credited;
        report.refused += archived.refused;
        archived_sent.extend(ledger.archived_outgoing.iter().map(|out| (&out.tx_no, out)));
        archived_credits.extend(
            ledger
                .archived_incoming
                .iter()
                .filter(|inc| inc.credited)
                .map(|inc| &inc.tx_no),
        );
        for out in &ledger.outgoing {
            match out.state {
                TransferState::RolledBack => report.rolled_back += 1,
                TransferState::Returned => report.returned += 1,
                TransferState::Debited | TransferState::Credited => {}
            }
            report.debited += usize::from(out.state.was_debited());
        }
    }
    let (sent, received) = in_order(ledgers);
    for (tx_no, outs, ins) in sides(&sent, &received) {
        let debit = outs.last().copied().or_else(|| archived_sent.get(tx_no).copied());
        let mut credited = archived_credits.contains(tx_no);
        report.refused += ins.iter().filter(|inc| !inc.credited).count();
        for incoming in ins.iter().filter(|inc| inc.credited) {
            report.credited += 1;
            let tx_no = tx_no.to_string();
            if std::mem::replace(&mut credited, true) {
                report.violations.push(Violation::CreditedTwice { tx_no });
                continue;
            }
            match debit {
                None => report.violations.push(Violation::CreditedWithoutDebit { tx_no }),
                Some(out) if out.state == TransferState::RolledBack => {
                    report.violations.push(Violation::CreditedAfterRollback { tx_no })
                }
                Some(out) if out.state == TransferState::Returned => {
                    report.violations.push(Violation::CreditedAndReturned { tx_no })
                }
                Some(out) if out.amount != incoming.amount => report.violations.push(Violation::AmountMismatch {
                    tx_no,
                    debited_cents: out.amount.cents(),
                    credited_cents: incoming.amount.cents(),
                }),
                Some(_) => {}
            }
        }
        match outs.last() {
            Some(out) if !credited && out.state == TransferState::Debited => {
                report.in_flight += 1;
                report.in_flight_cents += out.amount.cents();
                let age = now_ms - out.created_at_ms;
                report.oldest_in_flight_ms = Some(report.oldest_in_flight_ms.map_or(age, |oldest| oldest.max(age)));
            }
            Some(out) if !credited && out.state == TransferState::Credited => {
                report.violations.push(Violation::ReportedCreditMissing {
                    tx_no: out.tx_no.to_string(),
                })
            }
            _ => {}
        }
    }
    let accounted_cents = report.balance_cents + report.held_cents + report.in_flight_cents;
    if accounted_cents != report.opened_cents {
        report.violations.insert(
            0,
            Violation::Conservation {
                opened_cents: report.opened_cents,
                accounted_cents,
            },
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(tx: &str, state: TransferState, cents: i64, at: i64) -> Outgoing {
        Outgoing {
            tx_no: TxNo::parse(tx).unwrap(),
            state,
            amount: Amount::from_cents(cents).unwrap(),
            created_at_ms: at,
        }
    }

    fn inc(tx: &str, cents: i64) -> Incoming {
        Incoming {
            tx_no: TxNo::parse(tx).unwrap(),
            amount: Amount::from_cents(cents).unwrap(),
            credited: true,
        }
    }

    fn refused(tx: &str, cents: i64) -> Incoming {
        Incoming {
            credited: false,
            ..inc(tx, cents)
        }
    }

    /// bank1 opened with 100.00 and sent `outgoing`; bank2 opened with 0 and credited `incoming`.
    fn books(
        bank1_balance: i64,
        outgoing: Vec<Outgoing>,
        bank2_balance: i64,
        incoming: Vec<Incoming>,
    ) -> Vec<BankLedger> {
        vec![
            BankLedger {
                bank: "bank1".into(),
                opened_cents: 10_000,
                balance_cents: bank1_balance,
                outgoing,
                incoming: vec![],
                set_aside: 0,
                ..Default::default()
            },
            BankLedger {
                bank: "bank2".into(),
                opened_cents: 0,
                balance_cents: bank2_balance,
                outgoing: vec![],
                incoming,
                set_aside: 1,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn each_bank_checks_its_own_books_alone() {
        let [bank1, bank2] = books(
            9_000,
            vec![
                out("c", TransferState::Credited, 600, 0),
                out("d", TransferState::Debited, 400, 5),
                out("r", TransferState::Returned, 300, 1),
            ],
            600,
            vec![inc("c", 600)],
        )
        .try_into()
        .unwrap();
        let sender = super::books(&bank1, 10);
        assert!(sender.balanced, "{sender:?}");
        assert_eq!(
            (
                sender.sent_cents,
                sender.awaiting_report,
                sender.oldest_awaiting_report_ms
            ),
            (1_000, 1, Some(5))
        );
        let receiver = super::books(&bank2, 10);
        assert!(receiver.balanced, "{receiver:?}");
        let mut skimmed = bank2.clone();
        skimmed.balance_cents -= 1;
        assert!(!super::books(&skimmed, 10).balanced);
    }

    #[test]
    fn set_aside_messages_are_reported_but_are_no_violation() {
        let report = audit(&books(10_000, vec![], 0, vec![]), 0);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.set_aside, 1);
    }

    #[test]
    fn settled_books_are_clean() {
        let report = audit(
            &books(
                9_000,
                vec![out("a", TransferState::Debited, 1_000, 0)],
                1_000,
                vec![inc("a", 1_000)],
            ),
            5,
        );
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.debited, report.credited, report.in_flight), (1, 1, 0));
    }

    #[test]
    fn money_in_flight_is_conserved_and_its_age_reported() {
        let report = audit(
            &books(9_000, vec![out("a", TransferState::Debited, 1_000, 100)], 0, vec![]),
            600,
        );
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(
            (report.in_flight, report.in_flight_cents, report.oldest_in_flight_ms),
            (1, 1_000, Some(500))
        );
    }

    #[test]
    fn a_refused_transfer_is_in_flight_until_its_money_is_back() {
        let refused_only = books(
            9_000,
            vec![out("r", TransferState::Debited, 1_000, 0)],
            0,
            vec![refused("r", 1_000)],
        );
        let report = audit(&refused_only, 0);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.in_flight, report.refused), (1, 1));

        let returned = books(
            10_000,
            vec![out("r", TransferState::Returned, 1_000, 0)],
            0,
            vec![refused("r", 1_000)],
        );
        let report = audit(&returned, 0);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.in_flight, report.returned, report.debited), (0, 1, 1));
    }

    #[test]
    fn each_broken_rule_is_named_with_its_transfer() {
        let cases = [
            (
                books(10_000, vec![], 1_000, vec![inc("x", 1_000)]),
                "credited_without_debit",
            ),
            (
                books(
                    10_000,
                    vec![out("r", TransferState::RolledBack, 5, 0)],
                    5,
                    vec![inc("r", 5)],
                ),
                "credited_after_rollback",
            ),
            (
                books(
                    9_000,
                    vec![out("m", TransferState::Debited, 1_000, 0)],
                    999,
                    vec![inc("m", 999)],
                ),
                "amount_mismatch",
            ),
            (books(9_000, vec![], 0, vec![]), "conservation"),
            (
                books(
                    10_000,
                    vec![out("t", TransferState::Returned, 1_000, 0)],
                    1_000,
                    vec![inc("t", 1_000)],
                ),
                "credited_and_returned",
            ),
            (
                books(9_000, vec![out("c", TransferState::Credited, 1_000, 0)], 1_000, vec![]),
                "reported_credit_missing",
            ),
        ];
        for (ledgers, kind) in cases {
            let report = audit(&ledgers, 0);
            let kinds: Vec<_> = report
                .violations
                .iter()
                .map(|v| serde_json::to_value(v).unwrap()["kind"].clone())
                .collect();
            assert!(kinds.iter().any(|k| k == kind), "{kind}: {kinds:?}");
        }
    }

    #[test]
    fn a_held_return_stays_on_the_books() {
        // bank1 sent 3.00, bank2 returned it, and account 1 could not take it back.
        let mut ledgers = books(
            9_700,
            vec![out("r", TransferState::Returned, 300, 0)],
            0,
            vec![refused("r", 300)],
        );
        assert!(!audit(&ledgers, 0).is_clean(), "money held nowhere is missing");
        ledgers[0].held_cents = 300;
        ledgers[0].held = 1;
        let report = audit(&ledgers, 0);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.held, report.held_cents), (1, 300));
        assert!(super::books(&ledgers[0], 0).balanced);
    }

    #[test]
    fn a_transfer_in_flight_past_the_threshold_is_stuck_though_the_books_balance() {
        let ledgers = books(9_000, vec![out("d", TransferState::Debited, 1_000, 0)], 0, vec![]);
        let report = audit(&ledgers, 20 * 60 * 1000);
        assert!(report.is_clean(), "{report:?}");
        assert!(report.has_stuck_transfers(DEFAULT_STUCK_AFTER_MS));
        assert!(!report.has_stuck_transfers(30 * 60 * 1000));
        let sender = super::books(&ledgers[0], 20 * 60 * 1000);
        assert!(sender.balanced && sender.stuck, "{sender:?}");
        assert!(!sender.stuck_after(30 * 60 * 1000).stuck);
        assert!(!super::books(&ledgers[0], 1_000).stuck);
    }

    #[test]
    fn a_transfer_credited_in_two_banks_is_a_violation() {
        let mut ledgers = books(
            9_000,
            vec![out("d", TransferState::Debited, 1_000, 0)],
            1_000,
            vec![inc("d", 1_000)],
        );
        ledgers.push(BankLedger {
            bank: "bank3".into(),
            incoming: vec![inc("d", 1_000)],
            balance_cents: 1_000,
            ..Default::default()
        });
        assert!(audit(&ledgers, 0)
            .violations
            .contains(&Violation::CreditedTwice { tx_no: "d".into() }));
    }

    #[test]
    fn archived_transfers_are_carried_in_totals_and_match_live_ones() {
        // bank1 archived "a" (credited) and "old" (credited); bank2 archived only "old".
        let mut ledgers = books(
            8_000,
            vec![out("b", TransferState::Credited, 500, 0)],
            2_000,
            vec![inc("a", 1_000), inc("b", 500)],
        );
        ledgers[0].archived = ArchivedTotals {
            sent_credited: 2,
            sent_credited_cents: 1_500,
            ..Default::default()
        };
        ledgers[1].archived = ArchivedTotals {
            received_credited: 1,
            received_credited_cents: 500,
            ..Default::default()
        };
        let (debits_missing, credits_missing) = unmatched(&ledgers);
        assert_eq!(
            (debits_missing, credits_missing),
            (vec![TxNo::parse("a").unwrap()], vec![])
        );
        let alone = audit(&ledgers, 0);
        assert!(alone
            .violations
            .contains(&Violation::CreditedWithoutDebit { tx_no: "a".into() }));

        ledgers[0].archived_outgoing = vec![out("a", TransferState::Credited, 1_000, 0)];
        let report = audit(&ledgers, 0);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.debited, report.credited), (3, 3));
        assert!(super::books(&ledgers[0], 0).balanced);
        assert!(super::books(&ledgers[1], 0).balanced);
    }
}
