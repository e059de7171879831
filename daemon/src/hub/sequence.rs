//! Exactly-once reports (DESIGN.md §7): which report numbers the hub has applied, per client
//! and report epoch. A door node numbers its reports 1, 2, 3... within an epoch, a random id
//! made with its state file, and registers with it; a node that lost its state starts a new
//! epoch, so its new report 1 is news rather than a duplicate. Within an epoch reports arrive
//! in order (the node sends one at a time and waits for `OK`): a number at or below the last
//! applied is a resend, the next one is new, anything else is refused.
//!
//! Pure bookkeeping: no I/O. The table is persisted in the state file and bounded, so
//! clients making up names and epochs cannot grow it without limit.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Epochs remembered per client (a node that lost its state a few times; the newest win).
pub const MAX_EPOCHS_PER_CLIENT: usize = 8;
/// Clients remembered in all; beyond it the one heard from longest ago is forgotten.
pub const MAX_CLIENTS: usize = 1024;

/// One epoch's last applied report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Seen {
    pub epoch: String,
    pub seq: u64,
    /// Unix seconds of the last report (to forget the stalest client first).
    pub at: u64,
}

/// Per client name, its epochs, most recently used last.
pub type SeenTable = BTreeMap<String, Vec<Seen>>;

/// What to do with a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it. `first` when its epoch was unknown; `earlier_epochs` when the client had
    /// others (a node that lost its state, or a new SD card).
    New { first: bool, earlier_epochs: bool },
    /// Applied before: acknowledge, change nothing.
    Duplicate,
    /// Neither: the hub has not seen the reports before it.
    OutOfOrder { last: u64 },
}

/// Classifies `seq` against the last number applied in its epoch (`None`: a new epoch, which
/// counts from its first report, whatever its number).
pub fn classify(last: Option<u64>, seq: u64) -> Verdict {
    match last {
        None => Verdict::New {
            first: true,
            earlier_epochs: false,
        },
        Some(last) if seq <= last => Verdict::Duplicate,
        Some(last) if Some(seq) == last.checked_add(1) => Verdict::New {
            first: false,
            earlier_epochs: false,
        },
        Some(last) => Verdict::OutOfOrder { last },
    }
}

/// The last sequence applied for `client` in `epoch`.
pub fn last(table: &SeenTable, client: &str, epoch: &str) -> Option<u64> {
    table
        .get(client)?
        .iter()
        .find(|s| s.epoch == epoch)
        .map(|s| s.seq)
}

/// Looks a report up: the verdict, with `earlier_epochs` filled in.
pub fn check(table: &SeenTable, client: &str, epoch: &str, seq: u64) -> Verdict {
    match classify(last(table, client, epoch), seq) {
        Verdict::New { first: true, .. } => Verdict::New {
            first: true,
            earlier_epochs: table.get(client).is_some_and(|l| !l.is_empty()),
        },
        other => other,
    }
}

/// Records `seq` as applied for `client` in `epoch` at `now` (unix seconds), keeping the
/// table within its bounds.
pub fn record(table: &mut SeenTable, client: &str, epoch: &str, seq: u64, now: u64) {
    if !table.contains_key(client) && table.len() >= MAX_CLIENTS {
        let stalest = table
            .iter()
            .map(|(name, list)| (list.iter().map(|s| s.at).max().unwrap_or(0), name))
            .min()
            .map(|(_, name)| name.clone());
        if let Some(name) = stalest {
            table.remove(&name);
        }
    }
    let list = table.entry(client.to_string()).or_default();
    if let Some(i) = list.iter().position(|s| s.epoch == epoch) {
        list.remove(i);
    }
    list.push(Seen {
        epoch: epoch.to_string(),
        seq,
        at: now,
    });
    if list.len() > MAX_EPOCHS_PER_CLIENT {
        list.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_counts_from_its_first_report() {
        assert_eq!(
            classify(None, 533),
            Verdict::New {
                first: true,
                earlier_epochs: false
            }
        );
    }

    #[test]
    fn at_or_below_the_last_is_a_duplicate_and_the_next_is_new() {
        assert_eq!(classify(Some(5), 5), Verdict::Duplicate);
        assert_eq!(classify(Some(5), 1), Verdict::Duplicate);
        assert!(matches!(
            classify(Some(5), 6),
            Verdict::New { first: false, .. }
        ));
    }

    #[test]
    fn a_gap_is_out_of_order() {
        assert_eq!(classify(Some(5), 7), Verdict::OutOfOrder { last: 5 });
        assert_eq!(classify(Some(u64::MAX), 1), Verdict::Duplicate);
        assert_eq!(classify(Some(0), u64::MAX), Verdict::OutOfOrder { last: 0 });
    }

    #[test]
    fn a_client_with_other_epochs_is_flagged_when_it_starts_a_new_one() {
        let mut t = SeenTable::new();
        assert_eq!(
            check(&t, "front", "a", 1),
            Verdict::New {
                first: true,
                earlier_epochs: false
            }
        );
        record(&mut t, "front", "a", 1, 10);
        assert_eq!(
            check(&t, "front", "b", 1),
            Verdict::New {
                first: true,
                earlier_epochs: true
            }
        );
        assert_eq!(check(&t, "front", "a", 1), Verdict::Duplicate);
        assert_eq!(
            check(&t, "back", "a", 1),
            Verdict::New {
                first: true,
                earlier_epochs: false
            },
            "epochs are per client"
        );
    }

    #[test]
    fn epochs_per_client_are_bounded_and_the_oldest_goes() {
        let mut t = SeenTable::new();
        for i in 0..=MAX_EPOCHS_PER_CLIENT {
            record(&mut t, "front", &format!("e{i}"), 1, i as u64);
        }
        assert_eq!(t["front"].len(), MAX_EPOCHS_PER_CLIENT);
        assert_eq!(last(&t, "front", "e0"), None);
        assert_eq!(
            last(&t, "front", &format!("e{MAX_EPOCHS_PER_CLIENT}")),
            Some(1)
        );
    }

    #[test]
    fn clients_are_bounded_and_the_stalest_goes() {
        let mut t = SeenTable::new();
        for i in 0..MAX_CLIENTS {
            record(&mut t, &format!("c{i}"), "e", 1, 100 + i as u64);
        }
        record(&mut t, "c0", "e", 2, 5000);
        record(&mut t, "new", "e", 1, 5001);
        assert_eq!(t.len(), MAX_CLIENTS);
        assert!(t.contains_key("c0"), "used recently");
        assert!(!t.contains_key("c1"), "the stalest");
    }
}
