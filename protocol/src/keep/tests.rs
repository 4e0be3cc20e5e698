use super::*;
use proptest::prelude::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z.
const START: i64 = 20_454 * DAY;

/// `n` snapshots, one every `step` ms from START; ids 1..=n.
fn every(n: u64, step: i64) -> Vec<Snapshot> {
    (0..n)
        .map(|i| Snapshot {
            id: i + 1,
            time_ms: START + i as i64 * step,
            protected: false,
            unchanged: false,
            held_until_ms: 0,
        })
        .collect()
}

/// No rule, and no lock (the lock's own tests set one).
fn unlocked() -> Rules {
    Rules {
        lock: Some(Period::Millis(0)),
        ..Rules::default()
    }
}

fn kept(decision: &Decision) -> Vec<u64> {
    decision
        .iter()
        .filter(|(_, why)| !why.is_empty())
        .map(|(id, _)| *id)
        .collect()
}

fn hints_last(n: u32) -> Retention {
    Retention {
        keep_last: Some(n),
        ..Retention::default()
    }
}

#[test]
fn without_relay_rules_everything_is_kept_whatever_the_hints() {
    let snaps = every(5, DAY);
    let decision = decide(&snaps, &Rules::default(), &hints_last(0), START + 10 * DAY);
    assert_eq!(kept(&decision), vec![1, 2, 3, 4, 5]);
    assert!(decision[&1].contains(&KeptBy::NoRules));
}

#[test]
fn hints_keep_more_never_less_than_the_relays_rules() {
    let snaps = every(5, DAY);
    let rules = Rules {
        keep_last: Some(3),
        ..unlocked()
    };
    let now = START + 10 * DAY;
    assert_eq!(
        kept(&decide(&snaps, &rules, &hints_last(1), now)),
        vec![3, 4, 5]
    );
    let more = decide(&snaps, &rules, &hints_last(4), now);
    assert_eq!(kept(&more), vec![2, 3, 4, 5]);
    assert_eq!(more[&2], vec![KeptBy::Hint]);
    assert_eq!(more[&5], vec![KeptBy::Newest, KeptBy::Last, KeptBy::Hint]);
}

#[test]
fn min_and_max_count_and_within() {
    let snaps = every(10, DAY);
    let now = START + 9 * DAY;
    let within = Rules {
        keep_within: Some(Period::parse("2d").unwrap()),
        ..unlocked()
    };
    assert_eq!(
        kept(&decide(&snaps, &within, &Retention::default(), now)),
        vec![8, 9, 10]
    );
    let floor = Rules {
        min_count: Some(5),
        ..within
    };
    assert_eq!(
        kept(&decide(&snaps, &floor, &Retention::default(), now)),
        vec![6, 7, 8, 9, 10]
    );
    let cap = Rules {
        keep_daily: Some(30),
        max_count: Some(4),
        ..unlocked()
    };
    assert_eq!(
        kept(&decide(&snaps, &cap, &Retention::default(), now)),
        vec![7, 8, 9, 10]
    );
}

#[test]
fn archival_keeps_one_per_period_for_its_span() {
    // One a day through 2026 and into 2027; keep only the last 2, archive
    // the newest of each month for 6 months.
    let snaps = every(400, DAY);
    let now = START + 399 * DAY;
    let rules = Rules {
        keep_last: Some(2),
        archive_every: Some(Period::parse("1 month").unwrap()),
        archive_for: Some(Period::parse("6 months").unwrap()),
        ..unlocked()
    };
    let decision = decide(&snaps, &rules, &Retention::default(), now);
    let archived: Vec<u64> = decision
        .iter()
        .filter(|(_, why)| why.contains(&KeptBy::Archived))
        .map(|(id, _)| *id)
        .collect();
    // The last day of each month (ids: day of year + 1), the current month's newest.
    assert!((6..=8).contains(&archived.len()), "{archived:?}");
    // 2026-10-31 is day 303 of 2026 (id 304): archived; 2026-10-30 is not.
    assert!(
        archived.contains(&304) && !archived.contains(&303),
        "{archived:?}"
    );
    assert_eq!(kept(&decision).len(), archived.len() + 1);
}

#[test]
fn periods_parse() {
    assert_eq!(Period::parse("36h"), Ok(Period::Millis(36 * 3_600_000)));
    assert_eq!(
        Period::parse("2 weeks"),
        Ok(Period::Millis(14 * 86_400_000))
    );
    assert_eq!(Period::parse("6 months"), Ok(Period::Months(6)));
    assert_eq!(Period::parse("1y"), Ok(Period::Months(12)));
    assert!(Period::parse("fortnight").is_err());
    for text in ["36h", "2w", "6 months", "1y", "3d"] {
        assert_eq!(Period::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(Period::Months(1).to_string(), "1 month");
    assert!(Period::parse("3 eons").is_err());
}

fn any_rules() -> impl Strategy<Value = Rules> {
    let count = || proptest::option::of(0u32..6);
    let period = || {
        proptest::option::of(prop_oneof![
            (1u64..100).prop_map(|h| Period::Millis(h * 3_600_000)),
            (1u32..13).prop_map(Period::Months),
        ])
    };
    (
        (count(), count(), count(), count(), count(), count()),
        (period(), count(), count(), period(), period()),
    )
        .prop_map(
            |((last, hourly, daily, weekly, monthly, yearly), (within, min, max, every, span))| {
                Rules {
                    keep_last: last,
                    keep_hourly: hourly,
                    keep_daily: daily,
                    keep_weekly: weekly,
                    keep_monthly: monthly,
                    keep_yearly: yearly,
                    lock: Some(Period::Millis(0)),
                    keep_within: within,
                    min_count: min,
                    max_count: max,
                    archive_every: every,
                    archive_for: span,
                }
            },
        )
}

fn any_hints() -> impl Strategy<Value = Retention> {
    let count = || proptest::option::of(0u32..6);
    (count(), count(), count(), count()).prop_map(|(l, d, w, m)| Retention {
        keep_last: l,
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
    })
}

fn any_snapshots() -> impl Strategy<Value = Vec<Snapshot>> {
    proptest::collection::vec((0i64..400 * DAY, any::<bool>()), 0..40).prop_map(|times| {
        times
            .into_iter()
            .enumerate()
            .map(|(i, (t, protected))| Snapshot {
                id: i as u64 + 1,
                time_ms: START + t,
                protected,
                unchanged: false,
                held_until_ms: 0,
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn the_union_is_kept_and_the_newest_and_protected_always(
        snaps in any_snapshots(),
        rules in any_rules(),
        hints in any_hints(),
        ahead in 0i64..30 * DAY,
    ) {
        let now = START + 400 * DAY + ahead;
        let both = decide(&snaps, &rules, &hints, now);
        let by_rules = decide(&snaps, &rules, &Retention::default(), now);
        let by_hints = decide(&snaps, &Rules::default(), &hints, now);
        prop_assert_eq!(both.len(), snaps.len());
        for (id, why) in &by_rules {
            // What the relay's rules keep, the hints never take away.
            if !why.is_empty() {
                prop_assert!(!both[id].is_empty(), "snapshot {} kept by the rules was forgotten", id);
            }
        }
        if rules.is_set() && hints.is_set() {
            // Hints keep more: what they keep alone (where there are rules) is kept.
            for id in hints.keep(&snaps.iter().map(|s| (s.id, s.time_ms)).collect::<Vec<_>>()) {
                prop_assert!(!both[&id].is_empty());
            }
        } else if !rules.is_set() {
            prop_assert!(both.values().all(|why| !why.is_empty()));
            prop_assert!(by_hints.values().all(|why| !why.is_empty()));
        }
        for s in &snaps {
            if s.protected {
                prop_assert!(both[&s.id].contains(&KeptBy::Protected));
            }
        }
        if let Some(newest) = snaps.iter().max_by_key(|s| s.id) {
            prop_assert!(both[&newest.id].contains(&KeptBy::Newest));
        }
    }
}

#[test]
fn a_relay_clock_stepped_back_never_forgets_the_snapshot_being_committed() {
    const YEAR: i64 = 365 * DAY;
    // Two backups, three with the clock a year ahead, then one corrected.
    let times = [0, HOUR, YEAR, YEAR + HOUR, YEAR + 2 * HOUR, 2 * HOUR];
    let snaps: Vec<Snapshot> = times
        .iter()
        .enumerate()
        .map(|(i, t)| Snapshot {
            id: i as u64 + 1,
            time_ms: START + t,
            protected: false,
            unchanged: false,
            held_until_ms: 0,
        })
        .collect();
    let rules = Rules {
        keep_last: Some(3),
        ..unlocked()
    };
    let decision = decide(&snaps, &rules, &Retention::default(), START + 2 * HOUR);
    assert_eq!(kept(&decision), vec![4, 5, 6], "the last three committed");
    assert!(decision[&6].contains(&KeptBy::Newest));
    // With a lock, what is dated in the future is locked too.
    let locked = decide(
        &snaps,
        &Rules {
            lock: Some(Period::parse("1d").unwrap()),
            ..rules
        },
        &Retention::default(),
        START + 2 * HOUR,
    );
    assert_eq!(kept(&locked), vec![1, 2, 3, 4, 5, 6]);
    assert!(locked[&3].contains(&KeptBy::Locked));
}

#[test]
fn nothing_younger_than_the_lock_is_forgotten_whatever_the_counts() {
    // Twelve backups within an hour, keep-last 1, max-count 1.
    let snaps = every(12, 60_000);
    let rules = Rules {
        keep_last: Some(1),
        max_count: Some(1),
        lock: None,
        ..unlocked()
    };
    let now = START + HOUR;
    let decision = decide(&snaps, &rules, &Retention::default(), now);
    assert_eq!(kept(&decision).len(), 12, "the default lock holds them all");
    assert!(decision[&1].contains(&KeptBy::Locked));
    // Once the lock has passed, the counts decide again.
    let later = decide(&snaps, &rules, &Retention::default(), now + 15 * DAY);
    assert_eq!(kept(&later), vec![12]);
}

#[test]
fn count_rules_count_a_run_of_identical_snapshots_once() {
    // Three real backups, then nine identical (empty) ones.
    let mut snaps = every(12, HOUR);
    for s in snaps.iter_mut().skip(4) {
        s.unchanged = true;
    }
    let rules = Rules {
        keep_last: Some(3),
        ..unlocked()
    };
    let decision = decide(&snaps, &rules, &Retention::default(), START + DAY);
    assert_eq!(kept(&decision), vec![2, 3, 4, 12]);
}

#[test]
fn a_held_snapshot_is_kept_until_its_time() {
    let mut snaps = every(3, DAY);
    snaps[0].held_until_ms = START + 10 * DAY;
    let rules = Rules {
        keep_last: Some(1),
        ..unlocked()
    };
    let held = decide(&snaps, &rules, &Retention::default(), START + 5 * DAY);
    assert_eq!(held[&1], vec![KeptBy::Held]);
    let after = decide(&snaps, &rules, &Retention::default(), START + 11 * DAY);
    assert_eq!(kept(&after), vec![3]);
}
