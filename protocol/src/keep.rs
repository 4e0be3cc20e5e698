//! What the relay keeps of a backup set, and why: its own retention rules
//! (the floor), the endpoint's hints (which can keep more, never less),
//! archival, protection.
//!
//! A snapshot is kept when any of these keeps it:
//!
//! - it is **protected** by the relay's admin;
//! - it is the set's **newest**: the last one committed (commit order, not
//!   a clock that can step back or forward);
//! - it is **locked**: younger than the lock period (`[retention] lock`,
//!   [`DEFAULT_LOCK`] unless the relay's operator says otherwise), or dated
//!   after "now" (a clock stepped back); nothing a client sends makes
//!   retention forget it;
//! - it is **held**: the relay holds it until a time of its own choosing
//!   (the snapshot before a suspicious backup);
//! - the relay has **no rule** for the set (then everything is kept: an
//!   endpoint alone can never forget anything);
//! - the relay's **rules**, which count only snapshots that differ from the
//!   one before them (ten identical backups count as one): `keep-last`, the newest of each of the last
//!   `keep-hourly` hours (likewise days, weeks, months, years), everything
//!   within `keep-within`; then at least `min-count` (the newest ones) and
//!   at most `max-count` of them (the oldest go first);
//! - **archival** (UrBackup's): the newest snapshot of each `archive-every`
//!   period, for `archive-for`, whatever `max-count` says;
//! - the endpoint's **hints** ([`Retention`]), only where the relay has
//!   rules: they add to what the rules keep.
//!
//! Pure: the caller passes the snapshots' times and "now" in, so tests
//! need no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::retention::{newest_per_bucket, Bucket, Retention};

/// Why a snapshot is kept (several may hold at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeptBy {
    /// Protected by the relay's admin.
    Protected,
    /// The set's newest snapshot.
    Newest,
    /// Younger than the lock period.
    Locked,
    /// Held by the relay (the snapshot before a suspicious backup).
    Held,
    /// The relay has no retention rule for the set.
    NoRules,
    /// `keep-last`.
    Last,
    /// `keep-hourly`.
    Hourly,
    /// `keep-daily`.
    Daily,
    /// `keep-weekly`.
    Weekly,
    /// `keep-monthly`.
    Monthly,
    /// `keep-yearly`.
    Yearly,
    /// `keep-within`.
    Within,
    /// `min-count`.
    MinCount,
    /// `archive-every` / `archive-for`.
    Archived,
    /// The endpoint's hints.
    Hint,
}

impl KeptBy {
    /// The name shown in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            KeptBy::Protected => "protected",
            KeptBy::Newest => "newest",
            KeptBy::Locked => "locked",
            KeptBy::Held => "held",
            KeptBy::NoRules => "no-rules",
            KeptBy::Last => "last",
            KeptBy::Hourly => "hourly",
            KeptBy::Daily => "daily",
            KeptBy::Weekly => "weekly",
            KeptBy::Monthly => "monthly",
            KeptBy::Yearly => "yearly",
            KeptBy::Within => "within",
            KeptBy::MinCount => "min-count",
            KeptBy::Archived => "archived",
            KeptBy::Hint => "hint",
        }
    }
}

/// A span of time as retention rules say it: `36h`, `14d`, `2w`,
/// `6 months`, `1 year` (written so in TOML and JSON too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Period {
    /// Hours, days or weeks: a fixed number of milliseconds.
    Millis(u64),
    /// Calendar months.
    Months(u32),
}

impl Period {
    /// Parses `N unit` (the space is optional): `h`/`hour(s)`, `d`/`day(s)`,
    /// `w`/`week(s)`, `month(s)`, `y`/`year(s)`.
    ///
    /// # Errors
    /// A message naming the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let bad = || {
            format!("invalid period {text:?}: use a number and hours, days, weeks, months or years (e.g. \"14d\", \"6 months\")")
        };
        let n: u32 = number.parse().map_err(|_| bad())?;
        let hours = |per: u64| Ok(Period::Millis(u64::from(n) * per * 3_600_000));
        match unit.trim() {
            "h" | "hour" | "hours" => hours(1),
            "d" | "day" | "days" => hours(24),
            "w" | "week" | "weeks" => hours(24 * 7),
            "month" | "months" => Ok(Period::Months(n)),
            "y" | "year" | "years" => Ok(Period::Months(n.saturating_mul(12))),
            _ => Err(bad()),
        }
    }

    /// Its length, as a span back from now (a month counts as the average
    /// Gregorian month, 30.44 days).
    pub fn as_millis(self) -> u64 {
        match self {
            Period::Millis(ms) => ms,
            // A Gregorian month on average: 365.2425 / 12 days.
            Period::Months(n) => u64::from(n) * 2_629_746_000,
        }
    }

    /// The buckets of this length snapshots are grouped in.
    fn bucket(self) -> Bucket {
        match self {
            Period::Millis(ms) => Bucket::Span(ms),
            Period::Months(n) => Bucket::Months(n),
        }
    }
}

impl TryFrom<String> for Period {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Period::parse(&text)
    }
}

impl From<Period> for String {
    fn from(period: Period) -> String {
        period.to_string()
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HOUR: u64 = 3_600_000;
        match *self {
            Period::Months(n) if n % 12 == 0 && n > 0 => write!(f, "{}y", n / 12),
            Period::Months(1) => f.write_str("1 month"),
            Period::Months(n) => write!(f, "{n} months"),
            Period::Millis(ms) if ms % (168 * HOUR) == 0 && ms > 0 => {
                write!(f, "{}w", ms / (168 * HOUR))
            }
            Period::Millis(ms) if ms % (24 * HOUR) == 0 && ms > 0 => {
                write!(f, "{}d", ms / (24 * HOUR))
            }
            Period::Millis(ms) => write!(f, "{}h", ms / HOUR),
        }
    }
}

/// The lock when nobody set one: two weeks. A stolen laptop is noticed and
/// revoked within days, a holiday lasts up to two weeks, and ransomware
/// that encrypts a home directory is found when its owner is back; a lock
/// costs only the chunks that changed in that time, since snapshots share
/// everything else.
pub const DEFAULT_LOCK: Period = Period::Millis(14 * 24 * 3_600_000);

/// The relay's retention rules for a set (all unset: keep everything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Rules {
    /// Keep this many newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of this many hours.
    pub keep_hourly: Option<u32>,
    /// Likewise days.
    pub keep_daily: Option<u32>,
    /// Likewise ISO weeks.
    pub keep_weekly: Option<u32>,
    /// Likewise months.
    pub keep_monthly: Option<u32>,
    /// Likewise years.
    pub keep_yearly: Option<u32>,
    /// Keep everything this recent.
    pub keep_within: Option<Period>,
    /// Keep at least this many (the newest), whatever the rules above say.
    pub min_count: Option<u32>,
    /// Of what the rules above keep, at most this many (the oldest go).
    pub max_count: Option<u32>,
    /// Archive the newest snapshot of each such period...
    pub archive_every: Option<Period>,
    /// ...for this long.
    pub archive_for: Option<Period>,
    /// Nothing younger than this is forgotten, whatever the rules above
    /// say (unset: [`DEFAULT_LOCK`]; `0h` turns the lock off).
    pub lock: Option<Period>,
}

impl Rules {
    /// Whether any rule that forgets is set (none: everything is kept; the
    /// lock alone forgets nothing).
    pub fn is_set(&self) -> bool {
        Rules {
            lock: None,
            ..*self
        } != Rules::default()
    }

    /// The rules that apply where `own` are stored for a set (or its
    /// client) and `defaults` are the relay's: `own`'s keep rules if it has
    /// any, else the defaults'; `own`'s lock, else the defaults', else
    /// [`DEFAULT_LOCK`].
    pub fn effective(own: Option<&Rules>, defaults: &Rules) -> Rules {
        let lock = own.and_then(|r| r.lock).or(defaults.lock);
        Rules {
            lock: Some(lock.unwrap_or(DEFAULT_LOCK)),
            ..*own.filter(|r| r.is_set()).unwrap_or(defaults)
        }
    }
}

/// One snapshot of a set, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id.
    pub id: u64,
    /// When it finished, in ms since the epoch.
    pub time_ms: i64,
    /// Protected by the admin.
    pub protected: bool,
    /// Its tree is the same as the snapshot's before it in the set (count
    /// rules do not count it).
    pub unchanged: bool,
    /// Held by the relay until this time (ms since the epoch; 0: not held).
    pub held_until_ms: i64,
}

/// For every snapshot of a set, why it is kept (empty: it is forgotten).
pub type Decision = BTreeMap<u64, Vec<KeptBy>>;

/// Decides what to keep of one set's `snapshots` under the relay's `rules`
/// and the endpoint's `hints`, at `now_ms` (see the module documentation).
/// Snapshots are ranked by id, the order they were committed in.
pub fn decide(snapshots: &[Snapshot], rules: &Rules, hints: &Retention, now_ms: i64) -> Decision {
    let mut newest_first: Vec<Snapshot> = snapshots.to_vec();
    newest_first.sort_by_key(|s| std::cmp::Reverse(s.id));
    let times: Vec<(u64, i64)> = newest_first.iter().map(|s| (s.id, s.time_ms)).collect();
    let mut decision: Decision = newest_first.iter().map(|s| (s.id, Vec::new())).collect();
    let mut keep = |id: u64, why: KeptBy| {
        if let Some(reasons) = decision.get_mut(&id) {
            if !reasons.contains(&why) {
                reasons.push(why);
            }
        }
    };
    if let Some(newest) = newest_first.first() {
        keep(newest.id, KeptBy::Newest);
    }
    let lock = i64::try_from(rules.lock.unwrap_or(DEFAULT_LOCK).as_millis()).unwrap_or(i64::MAX);
    for s in &newest_first {
        if s.protected {
            keep(s.id, KeptBy::Protected);
        }
        if lock > 0 && s.time_ms > now_ms.saturating_sub(lock) {
            keep(s.id, KeptBy::Locked);
        }
        if s.held_until_ms > now_ms {
            keep(s.id, KeptBy::Held);
        }
    }
    if !rules.is_set() {
        for s in &newest_first {
            keep(s.id, KeptBy::NoRules);
        }
        return sorted(decision);
    }
    // Count rules count a run of identical snapshots once (its oldest).
    let counted: Vec<(u64, i64)> = newest_first
        .iter()
        .filter(|s| !s.unchanged)
        .map(|s| (s.id, s.time_ms))
        .collect();
    for (id, why) in ruled(&counted, &times, rules, now_ms) {
        keep(id, why);
    }
    if let (Some(every), Some(span)) = (rules.archive_every, rules.archive_for) {
        let since = now_ms.saturating_sub(i64::try_from(span.as_millis()).unwrap_or(i64::MAX));
        let recent: Vec<(u64, i64)> = counted
            .iter()
            .copied()
            .filter(|(_, t)| *t >= since)
            .collect();
        for id in newest_per_bucket(&recent, u32::MAX, every.bucket()) {
            keep(id, KeptBy::Archived);
        }
    }
    if hints.is_set() {
        for id in hints.keep(&times) {
            keep(id, KeptBy::Hint);
        }
    }
    sorted(decision)
}

/// What the keep rules, `min-count` and `max-count` keep, newest first: the
/// counting rules over `counted`, `keep-within` over all of `times`.
fn ruled(
    counted: &[(u64, i64)],
    times: &[(u64, i64)],
    rules: &Rules,
    now_ms: i64,
) -> Vec<(u64, KeptBy)> {
    let mut kept: Vec<(u64, KeptBy)> = Vec::new();
    let add = |id: u64, why: KeptBy, kept: &mut Vec<(u64, KeptBy)>| {
        if !kept.iter().any(|(k, _)| *k == id) {
            kept.push((id, why));
        }
    };
    if let Some(n) = rules.keep_last {
        for (id, _) in counted.iter().take(n as usize) {
            add(*id, KeptBy::Last, &mut kept);
        }
    }
    for (count, bucket, why) in [
        (rules.keep_hourly, Bucket::Hour, KeptBy::Hourly),
        (rules.keep_daily, Bucket::Day, KeptBy::Daily),
        (rules.keep_weekly, Bucket::Week, KeptBy::Weekly),
        (rules.keep_monthly, Bucket::Month, KeptBy::Monthly),
        (rules.keep_yearly, Bucket::Year, KeptBy::Yearly),
    ] {
        if let Some(count) = count {
            for id in newest_per_bucket(counted, count, bucket) {
                add(id, why, &mut kept);
            }
        }
    }
    if let Some(within) = rules.keep_within {
        let since = now_ms.saturating_sub(i64::try_from(within.as_millis()).unwrap_or(i64::MAX));
        for (id, _) in times.iter().filter(|(_, t)| *t >= since) {
            add(*id, KeptBy::Within, &mut kept);
        }
    }
    if let Some(min) = rules.min_count {
        for (id, _) in counted.iter().take(min as usize) {
            add(*id, KeptBy::MinCount, &mut kept);
        }
    }
    // Newest first, so the oldest are cut by `max-count`.
    let rank: BTreeMap<u64, usize> = times
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    kept.sort_by_key(|(id, _)| rank[id]);
    if let Some(max) = rules.max_count {
        let floor = rules.min_count.unwrap_or(0).max(max) as usize;
        kept.truncate(floor);
    }
    kept
}

/// Each snapshot's reasons in a stable order.
fn sorted(mut decision: Decision) -> Decision {
    decision.values_mut().for_each(|reasons| reasons.sort());
    decision
}

#[cfg(test)]
mod tests;
