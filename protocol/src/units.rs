//! Human units both command lines accept and print: durations (`10m`),
//! sizes (`10MiB`), rates (`2MiB/s`) and RFC 3339 times. Pure functions, so
//! both binaries agree on the syntax.

use std::time::Duration;

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` or `1d`.
///
/// # Errors
/// A message naming the input when it is not a number followed by a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("invalid duration {text:?}: add a unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number then a unit"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {unit:?} (ms, s, m, h, d)"
            ))
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// Parses a size such as `10MiB`, `500KB`, `1GiB` or `4096` (bytes).
///
/// # Errors
/// A message naming the input when it is not a number with a known unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number such as 10MiB"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {text:?}"));
    }
    Ok(bytes as u64)
}

/// Parses a rate such as `2MiB/s` or `500KB/s`; `0` and `unlimited` mean no
/// limit (`None`).
///
/// # Errors
/// A message naming the input.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t == "0" || t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let Some(size) = t.strip_suffix("/s") else {
        return Err(format!(
            "invalid rate {text:?}: expected a size per second such as 2MiB/s, or unlimited"
        ));
    };
    match parse_size(size).map_err(|e| format!("invalid rate {text:?}: {e}"))? {
        0 => Ok(None),
        bytes => Ok(Some(bytes)),
    }
}

/// Formats a rate for people: `2.0 MiB/s`, or `unlimited`.
pub fn format_rate(rate: Option<u64>) -> String {
    match rate {
        None => "unlimited".into(),
        Some(r) if r >= 1 << 20 => format!("{:.1} MiB/s", r as f64 / (1u64 << 20) as f64),
        Some(r) if r >= 1 << 10 => format!("{:.1} KiB/s", r as f64 / 1024.0),
        Some(r) => format!("{r} B/s"),
    }
}

/// Bytes from the network (a file name, a host name, a relay's software
/// string) as text safe to print: invalid UTF-8 replaced, and control
/// characters escaped (`\u{1b}`), so no peer can drive the terminal.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Formats a byte count for people: `512 B`, `1.5 MiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Storage against a quota, for people: `3.2 MiB of 8.0 MiB (40 %)`, or
/// `3.2 MiB` without one (the relay's `clients` and the endpoint's
/// `status` say it alike).
pub fn format_usage(stored: u64, quota: Option<u64>) -> String {
    match quota {
        Some(quota) => format!(
            "{} of {} ({} %)",
            format_size(stored),
            format_size(quota),
            stored.saturating_mul(100) / quota.max(1)
        ),
        None => format_size(stored),
    }
}

/// Whether `stored` bytes are past `warn_percent` of `quota`: the one test
/// behind the relay's log line, its alerts and status page, and `ferry
/// status` (no quota: never).
pub fn past_warning(stored: u64, quota: Option<u64>, warn_percent: u8) -> bool {
    quota.is_some_and(|q| u128::from(stored) * 100 > u128::from(q) * u128::from(warn_percent))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC, to the second.
pub fn format_rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A point in time as a user writes it, to milliseconds since the Unix
/// epoch: `2026-12-03`, `2026-12-03T14:05:00Z` (RFC 3339 in UTC), or an
/// age before `now_ms` (`7d`, `12h`: see [`parse_duration`]).
///
/// # Errors
/// Anything else, and dates that do not exist.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(age) = parse_duration(text) {
        return Ok(now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    }
    let wrong = || {
        format!("expected a date (2026-12-03), a UTC time (2026-12-03T14:05:00Z) or an age (7d), not {text:?}")
    };
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').ok_or_else(wrong)?)),
        None => (text, None),
    };
    let numbers = |part: &str, sep: char, count: usize| -> Option<Vec<i64>> {
        let fields: Vec<i64> = part
            .split(sep)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (fields.len() == count).then_some(fields)
    };
    let ymd = numbers(date, '-', 3).ok_or_else(wrong)?;
    let hms = match time {
        Some(time) => numbers(time, ':', 3).ok_or_else(wrong)?,
        None => vec![0, 0, 0],
    };
    let (y, m, d) = (ymd[0], ymd[1], ymd[2]);
    let days = days_from_civil(y, m, d).ok_or_else(wrong)?;
    if !(0..24).contains(&hms[0]) || !(0..60).contains(&hms[1]) || !(0..=60).contains(&hms[2]) {
        return Err(wrong());
    }
    Ok((days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]) * 1000)
}

/// A proleptic Gregorian date to days since 1970-01-01, if it exists
/// (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(0..=9999).contains(&y) {
        return None;
    }
    let y_adj = if m <= 2 { y - 1 } else { y };
    let era = y_adj.div_euclid(400);
    let yoe = y_adj - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // 2026-02-30 would fold into March: only dates that come back exist.
    (civil_from_days(days) == (y, m as u32, d as u32)).then_some(days)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds as its largest unit and the next, when not zero: `3d 4h`,
/// `5m 2s`, `1h`.
pub fn format_age(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let first = UNITS
        .iter()
        .position(|(size, _)| seconds >= *size)
        .unwrap_or(UNITS.len() - 1);
    let (size, name) = UNITS[first];
    let mut text = format!("{}{name}", seconds / size);
    if let Some((next, next_name)) = UNITS.get(first + 1) {
        let rest = seconds % size / next;
        if rest > 0 {
            text.push_str(&format!(" {rest}{next_name}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_the_two_largest_units() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(3_600 * 26 + 61), "1d 2h");
        assert_eq!(format_age(3_601), "1h");
        assert_eq!(format_age(125), "2m 5s");
    }

    #[test]
    fn control_characters_are_shown_not_sent_to_the_terminal() {
        assert_eq!(printable(b"plain name.txt"), "plain name.txt");
        assert_eq!(printable(b"red\x1b[31m\n"), "red\\u{1b}[31m\\n");
        assert_eq!(printable(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "10", "m", "10x", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("500KB").unwrap(), 500_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_rate("2MiB/s").unwrap(), Some(2 << 20));
        assert_eq!(parse_rate("500KB/s").unwrap(), Some(500_000));
        assert_eq!(parse_rate("unlimited").unwrap(), None);
        assert_eq!(parse_rate("0").unwrap(), None);
        for bad in ["2MiB", "fast/s", "-1MiB/s", "2XB/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(format_rate(Some(2 << 20)), "2.0 MiB/s");
    }

    #[test]
    fn user_times_parse_as_dates_utc_times_or_ages() {
        let ms = parse_time("2026-12-03T14:05:09Z", 0).unwrap();
        assert_eq!(format_rfc3339(ms), "2026-12-03T14:05:09Z");
        assert_eq!(
            format_rfc3339(parse_time("2024-02-29", 0).unwrap()),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(
            parse_time("1d", 100_000_000).unwrap(),
            100_000_000 - 86_400_000
        );
        for wrong in [
            "2026-02-30",
            "2026-13-01",
            "yesterday",
            "2026-12-03T25:00:00Z",
            "2026-12-03T10:00:00",
        ] {
            assert!(parse_time(wrong, 0).is_err(), "{wrong}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_000_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_quota_warns_only_past_its_share() {
        assert!(
            !past_warning(90, Some(100), 90),
            "at the share: not past it"
        );
        assert!(past_warning(91, Some(100), 90));
        assert!(!past_warning(u64::MAX, None, 90), "no quota, no warning");
        assert!(past_warning(u64::MAX, Some(u64::MAX - 1), 100));
    }
}
