//! Rates that depend on the weekday and time of day.
//!
//! A [`Schedule`] is a default rate and windows such as
//! `"Mon-Fri 08:00-18:00" = "2MiB/s"`. Days are `Mon`…`Sun`, ranges (`Mon-Fri`,
//! also wrapping: `Fri-Mon`), lists (`Sat,Sun`) or `*`; a window whose end is
//! before its start runs past midnight into the next day (`22:00-06:00`).
//! Where windows overlap, the lowest rate wins: a limit is never lifted by
//! accident. The text form, for command lines and the catalog, is a plain
//! rate (`2MiB/s`) or entries separated by `;`:
//! `Mon-Fri 08:00-18:00=1MiB/s; default=unlimited`.
//!
//! The caller passes the local weekday and time in: no clock here.

use crate::units::{format_rate, parse_rate};

/// Minutes in a day.
const DAY: u32 = 24 * 60;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u32,
    end: u32,
    rate: Option<u64>,
    text: String,
}

/// A default rate with time windows; `None` rates are unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    default: Option<u64>,
    windows: Vec<Window>,
}

impl Schedule {
    /// The same rate at all times.
    pub fn constant(rate: Option<u64>) -> Self {
        Schedule {
            default: rate,
            windows: Vec::new(),
        }
    }

    /// Builds a schedule from `(key, rate)` entries; the key `default` sets
    /// the rate outside all windows (unlimited if absent).
    ///
    /// # Errors
    /// A message naming the entry that does not parse.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut schedule = Schedule::default();
        for (key, value) in entries {
            let rate = parse_rate(value).map_err(|e| format!("schedule entry {key:?}: {e}"))?;
            if key.trim() == "default" {
                schedule.default = rate;
            } else {
                let (days, start, end) =
                    parse_window(key).map_err(|e| format!("schedule entry {key:?}: {e}"))?;
                schedule.windows.push(Window {
                    days,
                    start,
                    end,
                    rate,
                    text: key.trim().to_string(),
                });
            }
        }
        Ok(schedule)
    }

    /// Parses the text form (see the module docs).
    ///
    /// # Errors
    /// A message naming the entry that does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.contains('=') {
            return Ok(Schedule::constant(parse_rate(text)?));
        }
        let mut entries = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, value) = entry.split_once('=').ok_or_else(|| {
                format!("schedule entry {entry:?}: expected WINDOW=RATE or default=RATE")
            })?;
            entries.push((key.trim(), value.trim()));
        }
        Schedule::from_entries(entries)
    }

    /// The rate on `weekday` (0 = Monday) at `minute` past local midnight.
    pub fn rate_at(&self, weekday: u32, minute: u32) -> Option<u64> {
        let day = (weekday % 7) as usize;
        let previous = (day + 6) % 7;
        let mut matched = false;
        let mut lowest: Option<u64> = None;
        for w in &self.windows {
            let covers = if w.start < w.end {
                w.days[day] && minute >= w.start && minute < w.end
            } else {
                (w.days[day] && minute >= w.start) || (w.days[previous] && minute < w.end)
            };
            if covers {
                lowest = match (matched, lowest, w.rate) {
                    (false, _, rate) => rate,
                    (true, None, rate) | (true, rate, None) => rate,
                    (true, Some(a), Some(b)) => Some(a.min(b)),
                };
                matched = true;
            }
        }
        if matched {
            lowest
        } else {
            self.default
        }
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        if self.windows.is_empty() {
            return format_rate(self.default).replace(' ', "");
        }
        let mut parts: Vec<String> = self
            .windows
            .iter()
            .map(|w| format!("{}={}", w.text, format_rate(w.rate).replace(' ', "")))
            .collect();
        parts.push(format!(
            "default={}",
            format_rate(self.default).replace(' ', "")
        ));
        parts.join("; ")
    }
}

fn parse_day(text: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| format!("unknown day {text:?} (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text.trim() == "*" {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (mut d, to) = (parse_day(from)?, parse_day(to)?);
                loop {
                    days[d] = true;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[parse_day(part)?] = true,
        }
    }
    Ok(days)
}

fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("invalid time {text:?} (expected HH:MM)");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) || text.trim().len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_window(text: &str) -> Result<([bool; 7], u32, u32), String> {
    let text = text.trim();
    let (days, times) = match text.rsplit_once(' ') {
        Some((days, times)) => (parse_days(days)?, times),
        None => ([true; 7], text),
    };
    let (start, end) = times
        .split_once('-')
        .ok_or_else(|| format!("invalid time range {times:?} (expected HH:MM-HH:MM)"))?;
    let (start, end) = (parse_time(start)?, parse_time(end)?);
    if start == end || start == DAY {
        return Err(format!("empty time range {times:?}"));
    }
    Ok((days, start, end % (DAY + 1)))
}

/// A rate as written in the file: a plain rate or schedule text
/// (`"2MiB/s"`, `"unlimited"`), or a table of windows and a `default`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RateSpec {
    /// `"2MiB/s"` or `"Mon-Fri 08:00-18:00=1MiB/s; default=4MiB/s"`.
    Text(String),
    /// `{ default = "4MiB/s", "Mon-Fri 08:00-18:00" = "1MiB/s" }`.
    Table(std::collections::BTreeMap<String, String>),
}

impl Default for RateSpec {
    fn default() -> Self {
        RateSpec::Text("unlimited".into())
    }
}

impl RateSpec {
    /// The schedule this spec describes.
    ///
    /// # Errors
    /// A message naming the bad entry.
    pub fn schedule(&self) -> Result<Schedule, String> {
        match self {
            RateSpec::Text(text) => Schedule::parse(text),
            RateSpec::Table(table) => {
                Schedule::from_entries(table.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MON: u32 = 0;
    const FRI: u32 = 4;
    const SAT: u32 = 5;
    const SUN: u32 = 6;

    fn at(h: u32, m: u32) -> u32 {
        h * 60 + m
    }

    #[test]
    fn weekday_ranges_and_default() {
        let s = Schedule::parse("Mon-Fri 08:00-18:00=2MiB/s; default=8MiB/s").unwrap();
        assert_eq!(s.rate_at(MON, at(8, 0)), Some(2 * MIB));
        assert_eq!(s.rate_at(FRI, at(17, 59)), Some(2 * MIB));
        assert_eq!(s.rate_at(FRI, at(18, 0)), Some(8 * MIB));
        assert_eq!(s.rate_at(SAT, at(12, 0)), Some(8 * MIB));
        assert_eq!(s.rate_at(MON, at(7, 59)), Some(8 * MIB));
    }

    #[test]
    fn midnight_wrap_and_wrapping_day_ranges() {
        let s = Schedule::parse("Fri 22:00-06:00=1MiB/s").unwrap();
        assert_eq!(s.rate_at(FRI, at(23, 0)), Some(MIB));
        assert_eq!(s.rate_at(SAT, at(5, 59)), Some(MIB));
        assert_eq!(s.rate_at(SAT, at(6, 0)), None);
        assert_eq!(
            s.rate_at(FRI, at(5, 0)),
            None,
            "Thursday night is not in the window"
        );
        let weekend = Schedule::parse("Sat-Sun 00:00-24:00=512KiB/s").unwrap();
        assert_eq!(weekend.rate_at(SUN, at(23, 59)), Some(512 * 1024));
        assert_eq!(weekend.rate_at(MON, at(0, 0)), None);
        let wrap = Schedule::parse("Fri-Mon 09:00-10:00=1MiB/s").unwrap();
        assert_eq!(wrap.rate_at(SUN, at(9, 30)), Some(MIB));
        assert_eq!(wrap.rate_at(MON, at(9, 30)), Some(MIB));
        assert_eq!(wrap.rate_at(2, at(9, 30)), None);
    }

    #[test]
    fn overlapping_windows_take_the_lowest_rate() {
        let s = Schedule::parse("Mon-Fri 08:00-18:00=4MiB/s; Mon 12:00-13:00=1MiB/s; * 12:30-14:00=unlimited; default=unlimited")
            .unwrap();
        assert_eq!(s.rate_at(MON, at(12, 45)), Some(MIB));
        assert_eq!(s.rate_at(MON, at(13, 30)), Some(4 * MIB));
        assert_eq!(s.rate_at(SUN, at(13, 0)), None);
        assert_eq!(
            Schedule::parse("2MiB/s").unwrap().rate_at(SAT, 0),
            Some(2 * MIB)
        );
    }

    #[test]
    fn malformed_entries_are_named() {
        for (text, named) in [
            ("Mon-Fry 08:00-18:00=1MiB/s", "Mon-Fry 08:00-18:00"),
            ("Mon 8:00-18:00=1MiB/s", "Mon 8:00-18:00"),
            ("Mon 08:00-25:00=1MiB/s", "Mon 08:00-25:00"),
            ("Mon 08:00-08:00=1MiB/s", "Mon 08:00-08:00"),
            ("Mon 08:00-18:00=fast", "Mon 08:00-18:00"),
            ("Mon 08:00=1MiB/s", "Mon 08:00"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.contains(named), "{text}: {err}");
        }
        assert!(Schedule::parse("nonsense").is_err());
        assert!(Schedule::parse("Mon 08:00-18:00").is_err());
    }

    #[test]
    fn text_form_round_trips() {
        let s = Schedule::parse("Mon-Fri 08:00-18:00=2MiB/s; default=8MiB/s").unwrap();
        assert_eq!(Schedule::parse(&s.to_text()).unwrap(), s);
        assert_eq!(Schedule::constant(None).to_text(), "unlimited");
    }
}
