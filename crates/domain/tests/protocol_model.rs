//! The transfer protocol, model-checked: the sender (local transaction, half message,
//! check-back answer, re-drive), the broker (half messages, commit and rollback,
//! check-back, redelivery, lost messages and a lost store) and the receiver
//! (de-duplication, credit or refusal, settlement report, archive) as one state machine,
//! every interleaving of three transfers explored with at most two faults, one
//! duplicate and two re-drives. The sender's books move only as [`TransferState::after`] allows.
//! docs/PROTOCOL.md says what the model covers and what it assumes.

use stateright::{Checker, Model, Property};
use txbank_domain::{TransferEvent, TransferState};

/// How many transfers the model runs.
const TRANSFERS: usize = 3;
/// Their amounts, in cents.
const AMOUNTS: [i64; TRANSFERS] = [3, 2, 4];
/// Whether each destination account can take its transfer (the second is closed: its
/// transfer comes back).
const DESTINATION_OPEN: [bool; TRANSFERS] = [true, false, true];
/// The source account's opening balance: too little for all three, so that some
/// interleavings refuse one for insufficient funds.
const OPENING: i64 = 6;

/// Where a transfer's half message stands on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Half {
    /// Not sent yet.
    Absent,
    /// Stored, awaiting the sender's commit or rollback (or a check-back).
    Pending,
    /// Committed: the message is deliverable.
    Committed,
    /// Rolled back: never delivered.
    RolledBack,
    /// Lost with the broker's store before it was committed or rolled back.
    Lost,
}

/// One moment of the whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct World {
    /// The sender's books, per transfer (`None`: not recorded).
    sent: [Option<TransferState>; TRANSFERS],
    /// The source account's balance.
    source: i64,
    /// The broker's half message of each transfer.
    half: [Half; TRANSFERS],
    /// A committed (or re-driven) message of the transfer waits for delivery.
    deliverable: [bool; TRANSFERS],
    /// A settlement report (true: credited) waits for delivery to the sender.
    report: [Option<bool>; TRANSFERS],
    /// The receiver's `de_duplication` row.
    seen: [bool; TRANSFERS],
    /// The receiver's archive holds the transfer (its `de_duplication` row moved there).
    archived: [bool; TRANSFERS],
    /// What the receiver recorded (true: credited, false: refused).
    received: [Option<bool>; TRANSFERS],
    /// How often the receiver credited each transfer.
    credits: [u8; TRANSFERS],
    /// The destination accounts' balance.
    destination: i64,
    /// The receiver's settlement outbox (true: credited).
    outbox: [Option<bool>; TRANSFERS],
    /// Faults the environment may still inject (a lost message, report or store).
    faults: u8,
    /// Duplicates it may still make (a delivery or report not acknowledged).
    duplicates: u8,
    /// Re-drives the sender may still send.
    redrives: u8,
}

/// One step of some part of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    /// Sender: store the transfer's half message.
    SendHalf(usize),
    /// Sender: the local transaction (debit, or roll back when the balance is short).
    LocalTransaction(usize),
    /// Sender: answer the broker after the local transaction.
    EndTransaction(usize),
    /// Broker: ask the silent sender; the sender answers from its books.
    CheckBack(usize),
    /// Broker: deliver the transfer's message; `ack` false keeps it for redelivery.
    Deliver { transfer: usize, ack: bool },
    /// Receiver: move a settled transfer to the archive.
    Archive(usize),
    /// Receiver's relay: send a report; `delete` false keeps it in the outbox.
    Relay { transfer: usize, delete: bool },
    /// Broker: deliver a report to the sender; `ack` false keeps it for redelivery.
    Settle { transfer: usize, ack: bool },
    /// Sender: send a debited, unsettled transfer again from its books.
    Redrive(usize),
    /// Fault: a committed message is lost (retention, a dead letter).
    LoseMessage(usize),
    /// Fault: a report is lost.
    LoseReport(usize),
    /// Fault: the broker loses its store: every message, report and half message.
    LoseStore,
}

/// The protocol, with a switch to plant a mistake the checker must find.
struct Protocol {
    /// The receiver inserts into `de_duplication` and checks the archive (false plants a
    /// receiver that credits every delivery).
    deduplicates: bool,
}

impl Protocol {
    /// What `action` does to `world`, or `None` when it cannot happen there.
    fn step(&self, world: &World, action: Action) -> Option<World> {
        let mut next = world.clone();
        match action {
            Action::SendHalf(t) => {
                (world.half[t] == Half::Absent).then_some(())?;
                next.half[t] = Half::Pending;
            }
            Action::LocalTransaction(t) => {
                // The sender runs it once the broker acknowledged the half message,
                // whatever became of that message since (checked back, rolled back, lost).
                (world.half[t] != Half::Absent).then_some(())?;
                let event = if world.source >= AMOUNTS[t] {
                    TransferEvent::LocalCommit
                } else {
                    TransferEvent::RollBack
                };
                next.sent[t] = Some(TransferState::after(world.sent[t], event)?);
                if event == TransferEvent::LocalCommit {
                    next.source -= AMOUNTS[t];
                }
            }
            Action::EndTransaction(t) => {
                (world.half[t] == Half::Pending).then_some(())?;
                next.half[t] = match world.sent[t]? {
                    TransferState::Debited => Half::Committed,
                    _ => Half::RolledBack,
                };
                next.deliverable[t] |= next.half[t] == Half::Committed;
            }
            Action::CheckBack(t) => {
                (world.half[t] == Half::Pending).then_some(())?;
                // Nothing recorded: the rollback is recorded first, so that a late local
                // transaction can no longer debit.
                let state = match world.sent[t] {
                    None => TransferState::after(None, TransferEvent::RollBack)?,
                    Some(state) => state,
                };
                next.sent[t] = Some(state);
                next.half[t] = if state == TransferState::Debited {
                    Half::Committed
                } else {
                    Half::RolledBack
                };
                next.deliverable[t] |= next.half[t] == Half::Committed;
            }
            Action::Deliver { transfer: t, ack } => {
                world.deliverable[t].then_some(())?;
                if !ack {
                    next.duplicates = world.duplicates.checked_sub(1)?;
                }
                next.deliverable[t] = !ack;
                if self.deduplicates && (world.seen[t] || world.archived[t]) {
                    // A duplicate: its report is queued again from what was recorded.
                    next.outbox[t] = world.received[t];
                } else {
                    next.seen[t] = true;
                    let credited = DESTINATION_OPEN[t];
                    next.received[t] = Some(credited);
                    next.outbox[t] = Some(credited);
                    if credited {
                        next.credits[t] += 1;
                        next.destination += AMOUNTS[t];
                    }
                }
            }
            Action::Archive(t) => {
                (world.seen[t] && world.outbox[t].is_none() && !world.archived[t]).then_some(())?;
                next.seen[t] = false;
                next.archived[t] = true;
            }
            Action::Relay { transfer: t, delete } => {
                let report = world.outbox[t]?;
                if !delete {
                    next.duplicates = world.duplicates.checked_sub(1)?;
                }
                next.report[t] = Some(report);
                if delete {
                    next.outbox[t] = None;
                }
            }
            Action::Settle { transfer: t, ack } => {
                let credited = world.report[t]?;
                if !ack {
                    next.duplicates = world.duplicates.checked_sub(1)?;
                }
                if ack {
                    next.report[t] = None;
                }
                let event = if credited {
                    TransferEvent::ReportedCredited
                } else {
                    TransferEvent::ReportedReturned
                };
                if let Some(state) = TransferState::after(world.sent[t], event) {
                    next.sent[t] = Some(state);
                    if state == TransferState::Returned {
                        next.source += AMOUNTS[t];
                    }
                }
            }
            Action::Redrive(t) => {
                (world.sent[t] == Some(TransferState::Debited) && !world.deliverable[t]).then_some(())?;
                next.redrives = world.redrives.checked_sub(1)?;
                next.deliverable[t] = true;
            }
            Action::LoseMessage(t) => {
                world.deliverable[t].then_some(())?;
                next.faults = world.faults.checked_sub(1)?;
                next.deliverable[t] = false;
            }
            Action::LoseReport(t) => {
                world.report[t]?;
                next.faults = world.faults.checked_sub(1)?;
                next.report[t] = None;
            }
            Action::LoseStore => {
                next.faults = world.faults.checked_sub(1)?;
                for t in 0..TRANSFERS {
                    next.deliverable[t] = false;
                    next.report[t] = None;
                    if world.half[t] == Half::Pending {
                        next.half[t] = Half::Lost;
                    }
                }
            }
        }
        (next != *world).then_some(next)
    }

    /// Every action of every part, each of which may be impossible in a given state.
    fn every_action() -> Vec<Action> {
        let mut all = vec![Action::LoseStore];
        for t in 0..TRANSFERS {
            all.extend([
                Action::SendHalf(t),
                Action::LocalTransaction(t),
                Action::EndTransaction(t),
                Action::CheckBack(t),
                Action::Archive(t),
                Action::Redrive(t),
                Action::LoseMessage(t),
                Action::LoseReport(t),
            ]);
            for flag in [true, false] {
                all.extend([
                    Action::Deliver { transfer: t, ack: flag },
                    Action::Relay {
                        transfer: t,
                        delete: flag,
                    },
                    Action::Settle { transfer: t, ack: flag },
                ]);
            }
        }
        all
    }

    /// Where `world` ends when, from now on, nothing fails and every part keeps working
    /// (fair delivery): each pending half message is settled, each message delivered and
    /// acknowledged, each report relayed and applied, and each debited transfer with no
    /// message on its way re-driven.
    fn without_faults(&self, world: &World) -> World {
        let mut world = world.clone();
        world.faults = 0;
        world.duplicates = 0;
        for _ in 0..100 {
            let progress = (0..TRANSFERS).find_map(|t| {
                [
                    Action::CheckBack(t),
                    Action::Deliver { transfer: t, ack: true },
                    Action::Relay {
                        transfer: t,
                        delete: true,
                    },
                    Action::Settle { transfer: t, ack: true },
                ]
                .into_iter()
                .find_map(|action| self.step(&world, action))
                .or_else(|| {
                    let waiting = world.report[t].is_none() && world.outbox[t].is_none();
                    let redriven = World {
                        redrives: 1,
                        ..world.clone()
                    };
                    waiting
                        .then(|| self.step(&redriven, Action::Redrive(t)))
                        .flatten()
                        .map(|next| World { redrives: 0, ..next })
                })
            });
            match progress {
                Some(next) => world = next,
                None => return world,
            }
        }
        world
    }
}

/// Money on the accounts plus money in flight (debited, not credited).
fn accounted(world: &World) -> i64 {
    let in_flight: i64 = (0..TRANSFERS)
        .filter(|&t| world.sent[t] == Some(TransferState::Debited) && world.received[t] != Some(true))
        .map(|t| AMOUNTS[t])
        .sum();
    world.source + world.destination + in_flight
}

impl Model for Protocol {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        vec![World {
            sent: [None; TRANSFERS],
            source: OPENING,
            half: [Half::Absent; TRANSFERS],
            deliverable: [false; TRANSFERS],
            report: [None; TRANSFERS],
            seen: [false; TRANSFERS],
            archived: [false; TRANSFERS],
            received: [None; TRANSFERS],
            credits: [0; TRANSFERS],
            destination: 0,
            outbox: [None; TRANSFERS],
            faults: 2,
            duplicates: 1,
            redrives: 2,
        }]
    }

    fn actions(&self, world: &World, actions: &mut Vec<Action>) {
        actions.extend(
            Protocol::every_action()
                .into_iter()
                .filter(|action| self.step(world, *action).is_some()),
        );
    }

    fn next_state(&self, world: &World, action: Action) -> Option<World> {
        self.step(world, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("money is conserved to the cent", |_, world: &World| {
                accounted(world) == OPENING
            }),
            Property::always("never credited twice", |_, world: &World| {
                world.credits.iter().all(|&credits| credits <= 1)
            }),
            Property::always("never both credited and returned", |_, world: &World| {
                (0..TRANSFERS)
                    .all(|t| !(world.received[t] == Some(true) && world.sent[t] == Some(TransferState::Returned)))
            }),
            Property::always("nothing credited that was not debited", |_, world: &World| {
                (0..TRANSFERS).all(|t| {
                    world.received[t] != Some(true)
                        || matches!(world.sent[t], Some(TransferState::Debited | TransferState::Credited))
                })
            }),
            Property::always(
                "under fair delivery every debit ends credited or returned",
                |model: &Protocol, world: &World| {
                    let end = model.without_faults(world);
                    end.sent.iter().all(|state| state != &Some(TransferState::Debited))
                        && end.half.iter().all(|half| *half != Half::Pending)
                },
            ),
            Property::sometimes("a transfer is credited", |_, world: &World| {
                world.sent[0] == Some(TransferState::Credited)
            }),
            Property::sometimes("a transfer is returned", |_, world: &World| {
                world.sent[1] == Some(TransferState::Returned)
            }),
            Property::sometimes("a lost message is re-driven and credited", |_, world: &World| {
                world.faults == 0 && world.redrives < 2 && world.sent[0] == Some(TransferState::Credited)
            }),
        ]
    }
}

#[test]
fn the_protocol_keeps_every_invariant_in_every_interleaving() {
    let checker = Protocol { deduplicates: true }.checker().spawn_bfs().join();
    checker.assert_properties();
    assert!(
        checker.unique_state_count() > 100_000,
        "explored only {} states",
        checker.unique_state_count()
    );
}

#[test]
fn a_receiver_without_de_duplication_is_caught_crediting_twice() {
    let checker = Protocol { deduplicates: false }.checker().spawn_bfs().join();
    let path = checker
        .discovery("never credited twice")
        .expect("the checker finds the double credit");
    let actions = path.into_actions();
    assert!(
        actions
            .iter()
            .any(|action| matches!(action, Action::Deliver { ack: false, .. } | Action::Redrive(_))),
        "the counterexample delivers a transfer twice: {actions:?}"
    );
}
