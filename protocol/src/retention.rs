//! Which snapshots of a backup set to keep, from the set's retention hints
//! (restic's `forget` rules): the newest `keep_last`; the newest snapshot of
//! each of the `keep_daily` most recent days that have one, likewise weeks
//! and months (UTC). A snapshot kept by any rule is kept. With no rule set,
//! everything is kept. Pure: the caller passes the snapshots' times in.

use serde::{Deserialize, Serialize};

/// A set's retention hints, sent by the endpoint with each backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep this many newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of this many days.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of this many ISO weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of this many months.
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// Whether any rule is set (no rule: keep everything).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
    }

    /// Of `snapshots` (id, finish time in ms since the epoch), the ids to
    /// keep; the newest is the highest id (the last committed).
    pub fn keep(&self, snapshots: &[(u64, i64)]) -> Vec<u64> {
        let mut newest_first = snapshots.to_vec();
        newest_first.sort_by_key(|s| std::cmp::Reverse(s.0));
        if !self.is_set() {
            return newest_first.iter().map(|s| s.0).collect();
        }
        // The newest is always kept, whatever the hints (`keep-last = 0`).
        let mut keep: std::collections::BTreeSet<u64> =
            newest_first.first().map(|s| s.0).into_iter().collect();
        if let Some(n) = self.keep_last {
            keep.extend(newest_first.iter().take(n as usize).map(|s| s.0));
        }
        for (count, bucket) in [
            (self.keep_daily, Bucket::Day),
            (self.keep_weekly, Bucket::Week),
            (self.keep_monthly, Bucket::Month),
        ] {
            if let Some(count) = count {
                keep.extend(newest_per_bucket(&newest_first, count, bucket));
            }
        }
        newest_first
            .iter()
            .map(|s| s.0)
            .filter(|id| keep.contains(id))
            .collect()
    }
}

/// A calendar period snapshots are grouped by (UTC; weeks start on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// An hour.
    Hour,
    /// A day.
    Day,
    /// An ISO week.
    Week,
    /// A month.
    Month,
    /// A year.
    Year,
    /// `n` months: the month count since year 0, divided by `n`.
    Months(u32),
    /// A fixed span of this many milliseconds since the epoch.
    Span(u64),
}

impl Bucket {
    /// The bucket a time (ms since the epoch) falls in.
    pub fn of(self, ms: i64) -> i64 {
        let day = ms.div_euclid(86_400_000);
        let month = || {
            let (y, m, _) = crate::units::civil_from_days(day);
            y * 12 + i64::from(m) - 1
        };
        match self {
            Bucket::Hour => ms.div_euclid(3_600_000),
            Bucket::Day => day,
            // 1970-01-01 was a Thursday: shifted so weeks start on Monday.
            Bucket::Week => (day + 3).div_euclid(7),
            Bucket::Month => month(),
            Bucket::Year => month().div_euclid(12),
            Bucket::Months(n) => month().div_euclid(i64::from(n.max(1))),
            Bucket::Span(span) => ms.div_euclid(i64::try_from(span.max(1)).unwrap_or(i64::MAX)),
        }
    }
}

/// Of `newest_first` (id, time), the newest snapshot of each of the
/// `count` most recent buckets that have one.
pub fn newest_per_bucket(newest_first: &[(u64, i64)], count: u32, bucket: Bucket) -> Vec<u64> {
    let mut kept = Vec::new();
    let mut last_bucket = None;
    for (id, ms) in newest_first {
        if kept.len() >= count as usize {
            break;
        }
        let b = bucket.of(*ms);
        if last_bucket != Some(b) {
            kept.push(*id);
            last_bucket = Some(b);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn last_daily_weekly_monthly() {
        // Four snapshots a day for 40 days, starting 2026-01-01 (a Thursday).
        let start = 20_454 * DAY;
        let snaps: Vec<(u64, i64)> = (0..160)
            .map(|i| (i as u64 + 1, start + (i as i64) * DAY / 4))
            .collect();
        let keep = |r: Retention| r.keep(&snaps);
        assert_eq!(
            keep(Retention::default()).len(),
            160,
            "no rule keeps everything"
        );
        assert_eq!(
            keep(Retention {
                keep_last: Some(3),
                ..Default::default()
            }),
            vec![160, 159, 158]
        );
        assert_eq!(
            keep(Retention {
                keep_last: Some(0),
                ..Default::default()
            }),
            vec![160],
            "the newest is kept whatever the hints"
        );
        let daily = keep(Retention {
            keep_daily: Some(2),
            ..Default::default()
        });
        assert_eq!(
            daily,
            vec![160, 156],
            "the newest of each of the last 2 days"
        );
        let weekly = keep(Retention {
            keep_weekly: Some(2),
            ..Default::default()
        });
        assert_eq!(weekly.len(), 2);
        let monthly = keep(Retention {
            keep_monthly: Some(6),
            ..Default::default()
        });
        assert_eq!(
            monthly,
            vec![160, 124],
            "January's newest and February's newest"
        );
        let both = keep(Retention {
            keep_last: Some(1),
            keep_monthly: Some(2),
            ..Default::default()
        });
        assert_eq!(both, vec![160, 124]);
    }
}
