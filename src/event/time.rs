//! RFC 3339 timestamps to and from epoch milliseconds.
//!
//! Parsing sits on the decode hot path, so it works on bytes and never
//! allocates. Calendar arithmetic is Howard Hinnant's `days_from_civil`,
//! exact over the proleptic Gregorian calendar.

use std::fmt::Write as _;

use super::Millis;

/// `9999-12-31T23:59:59.999Z`: the last instant a four-digit-year RFC 3339 string can name.
pub const MAX_RFC3339_MS: Millis = 253_402_300_799_999;

const MS_PER_DAY: i64 = 86_400_000;

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)` into epoch milliseconds.
///
/// `t` and `z` may be lowercase. The fraction may have any number of digits and
/// is truncated to milliseconds. Impossible dates and times (month 13, Feb 30,
/// hour 24, offset +24:00) are `None`; so is a leap second (`:60`), which
/// RFC 3339 allows but epoch time cannot represent. A space instead of `T` is
/// not accepted. Years before 1970 give negative values.
#[inline]
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    parse_utc_fast(b).or_else(|| parse_full(b))
}

/// Bytes of an 8-byte little-endian word that must be ASCII digits (`0xff`) in the
/// fixed shape, and the separators expected in the others (`t` for `T` as the
/// `T` byte is read with its 0x20 bit set, accepting both cases).
const W0_DIGITS: u64 = u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0]);
const W0_SEPS: u64 = u64::from_le_bytes([0, 0, 0, 0, b'-', 0, 0, b'-']);
const W1_DIGITS: u64 = u64::from_le_bytes([0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff]);
const W1_SEPS: u64 = u64::from_le_bytes([0, 0, b't', 0, 0, b':', 0, 0]);
const W1_LOWER: u64 = u64::from_le_bytes([0, 0, 0x20, 0, 0, 0, 0, 0]);

/// `0xff` where a byte of `w` is not zero.
const fn nonzero_bytes(w: u64) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < 8 {
        if (w >> (8 * i)) & 0xff != 0 {
            m |= 0xff << (8 * i);
        }
        i += 1;
    }
    m
}

/// Whether the bytes of `w` under `digits` are ASCII digits and the bytes
/// under `sep_mask` (`seps`'s non-zero bytes), with `lower` or-ed in first,
/// equal `seps`.
/// A separator byte that matches cannot carry into its neighbour in the
/// digit test (the largest, `t` ^ `0`, is 0x44), nor can a digit byte that
/// passes it (at most 0x0f + 6).
#[inline(always)]
fn shape_ok(w: u64, digits: u64, seps: u64, sep_mask: u64, lower: u64) -> bool {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    let x = w ^ ZEROS;
    let digit_bad = (x | x.wrapping_add(SIXES)) & digits & HIGH_NIBBLES;
    digit_bad == 0 && (w | lower) & sep_mask == seps
}

/// The exact common shape `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.fffZ`
/// (`t`, `z` in either case), read with fixed offsets, word-wide digit checks
/// and no loops. `None` means "not decided here": the caller falls back to
/// [`parse_full`], so this only ever accepts, and only what `parse_full`
/// accepts, to the same value (checked in the tests against generated strings).
#[inline(always)]
fn parse_utc_fast(b: &[u8]) -> Option<Millis> {
    let h: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    let millis = match b.len() {
        20 if h[19] | 0x20 == b'z' => 0,
        24 if h[19] == b'.' && b[23] | 0x20 == b'z' => {
            let (f0, f1, f2) = (
                b[20].wrapping_sub(b'0'),
                b[21].wrapping_sub(b'0'),
                b[22].wrapping_sub(b'0'),
            );
            if f0 > 9 || f1 > 9 || f2 > 9 {
                return None;
            }
            u32::from(f0) * 100 + u32::from(f1) * 10 + u32::from(f2)
        }
        _ => return None,
    };
    let w0 = u64::from_le_bytes(*h.first_chunk::<8>()?);
    let w1 = u64::from_le_bytes(*h[8..].first_chunk::<8>()?);
    // `:SS` and the byte before it (a digit), as one more word.
    let w2 = u64::from(u32::from_le_bytes(*h[15..].first_chunk::<4>()?));
    const W2_DIGITS: u64 = u64::from_le_bytes([0xff, 0, 0xff, 0xff, 0, 0, 0, 0]);
    const W2_SEPS: u64 = u64::from_le_bytes([0, b':', 0, 0, 0, 0, 0, 0]);
    let w0_ok = shape_ok(w0, W0_DIGITS, W0_SEPS, const { nonzero_bytes(W0_SEPS) }, 0);
    let w1_ok = shape_ok(
        w1,
        W1_DIGITS,
        W1_SEPS,
        const { nonzero_bytes(W1_SEPS) },
        W1_LOWER,
    );
    let w2_ok = shape_ok(w2, W2_DIGITS, W2_SEPS, const { nonzero_bytes(W2_SEPS) }, 0);
    if !(w0_ok & w1_ok & w2_ok) {
        return None;
    }
    let d = |i: usize| u32::from(h[i] - b'0');
    let year = d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3);
    let month = d(5) * 10 + d(6);
    let day = d(8) * 10 + d(9);
    let hour = d(11) * 10 + d(12);
    let minute = d(14) * 10 + d(15);
    let second = d(17) * 10 + d(18);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    const DAYS: [u8; 13] = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let month_days = u32::from(*DAYS.get(month as usize)?) + u32::from(month == 2 && leap);
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // days_from_civil with the year counted from March and shifted by one
    // 400-year era (146 097 days) so that everything stays unsigned.
    let march = month <= 2;
    let y = year + 400 - u32::from(march);
    let mp = if march { month + 9 } else { month - 3 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let days = i64::from(365 * y + y / 4 - y / 100 + y / 400 + doy) - (719_468 + 146_097);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(secs * 1000 + i64::from(millis))
}

/// The whole grammar of [`parse_rfc3339`], byte by byte.
fn parse_full(b: &[u8]) -> Option<Millis> {
    if b.len() < 20 {
        return None;
    }
    let year = i64::from(digits(b, 0, 4)?);
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }

    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }

    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            if b.len() < i + 6 || b[i + 3] != b':' {
                return None;
            }
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let m = i64::from(oh * 60 + om);
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

/// Formats epoch milliseconds as `2026-01-05T10:00:00Z`, or `2026-01-05T10:00:00.123Z`
/// when the milliseconds are not zero. Always UTC. Valid RFC 3339 for
/// `0..=MAX_RFC3339_MS` (and back to year 0); never panics outside it.
pub fn format_rfc3339(ms: Millis) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = in_day / 1000;
    let frac = in_day % 1000;
    let mut out = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
    out.push('Z');
    out
}

/// `n` ASCII digits at `b[at..at + n]` as a number; the caller checked the length.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1..=12).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05T10:00:00Z, checked with `date -u -d 2026-01-05T10:00:00Z +%s`.
    const JAN5_10H: Millis = 1_767_607_200_000;

    #[test]
    fn parses_utc_with_z() {
        assert_eq!(parse_rfc3339("2026-01-05T10:00:00Z"), Some(JAN5_10H));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn accepts_lowercase_t_and_z() {
        assert_eq!(parse_rfc3339("2026-01-05t10:00:00z"), Some(JAN5_10H));
    }

    #[test]
    fn truncates_fractional_seconds_of_any_length_to_ms() {
        assert_eq!(
            parse_rfc3339("2026-01-05T10:00:00.1Z"),
            Some(JAN5_10H + 100)
        );
        assert_eq!(
            parse_rfc3339("2026-01-05T10:00:00.12Z"),
            Some(JAN5_10H + 120)
        );
        assert_eq!(
            parse_rfc3339("2026-01-05T10:00:00.123Z"),
            Some(JAN5_10H + 123)
        );
        assert_eq!(
            parse_rfc3339("2026-01-05T10:00:00.123999999Z"),
            Some(JAN5_10H + 123)
        );
        let long = format!("2026-01-05T10:00:00.{}Z", "9".repeat(200));
        assert_eq!(parse_rfc3339(&long), Some(JAN5_10H + 999));
    }

    #[test]
    fn applies_offsets() {
        assert_eq!(parse_rfc3339("2026-01-05T11:00:00+01:00"), Some(JAN5_10H));
        assert_eq!(parse_rfc3339("2026-01-05T04:30:00-05:30"), Some(JAN5_10H));
        assert_eq!(parse_rfc3339("2026-01-05T10:00:00-00:00"), Some(JAN5_10H));
        assert_eq!(
            parse_rfc3339("2026-01-05T10:00:00.5+00:00"),
            Some(JAN5_10H + 500)
        );
        // Crossing midnight and a year boundary.
        assert_eq!(
            parse_rfc3339("2025-12-31T23:30:00-01:00"),
            parse_rfc3339("2026-01-01T00:30:00Z")
        );
    }

    #[test]
    fn rejects_impossible_dates_and_times() {
        for s in [
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-05T24:00:00Z",
            "2026-01-05T10:60:00Z",
            "2026-01-05T10:00:60Z",
            "2026-01-05T10:00:00+24:00",
            "2026-01-05T10:00:00+01:60",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn rejects_malformed_strings() {
        for s in [
            "",
            "2026-01-05",
            "2026-01-05T10:00:00",
            "2026-01-05 10:00:00Z",
            "2026-01-05T10:00Z",
            "2026-1-05T10:00:00Z",
            "2026-01-05T10:00:00.Z",
            "2026-01-05T10:00:00,5Z",
            "2026-01-05T10:00:00Zx",
            "2026-01-05T10:00:00+0100",
            "2026-01-05T10:00:00+01",
            "+2026-01-05T10:00:00Z",
            "2026-01-05T10:00:00ZZ",
            "20a6-01-05T10:00:00Z",
            "2026-01-05T10:00:00.12a4Z",
            "１２３４-01-05T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
    }

    #[test]
    fn knows_leap_years() {
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2025-02-29T00:00:00Z").is_none());
        assert!(parse_rfc3339("1900-02-29T00:00:00Z").is_none());
        assert!(parse_rfc3339("2100-02-29T00:00:00Z").is_none());
        // 2024 has 366 days.
        let a = parse_rfc3339("2024-01-01T00:00:00Z").unwrap();
        let b = parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        assert_eq!(b - a, 366 * MS_PER_DAY);
        assert_eq!(format_rfc3339(b - MS_PER_DAY), "2024-12-31T00:00:00Z");
    }

    /// The fixed-shape fast path only ever accepts what the full parser
    /// accepts, to the same millis, and [`parse_rfc3339`] (fast path, then the
    /// full parser) decides every string as the full parser alone does.
    #[test]
    fn fast_path_agrees_with_the_full_parser() {
        let mut state = 12_345u64;
        let mut next = |n: u64| crate::r#gen::rng::splitmix64(&mut state) % n;
        let mut fast_hits = 0;
        let mut check = |s: &str| {
            let full = parse_full(s.as_bytes());
            if let Some(ms) = parse_utc_fast(s.as_bytes()) {
                assert_eq!(full, Some(ms), "{s}");
                fast_hits += 1;
            }
            assert_eq!(parse_rfc3339(s), full, "{s}");
        };
        // Hand-picked edges: leap days, century rules, the epoch and before,
        // year 0 and 9999, every month end, both cases of `t` and `z`.
        for s in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "0000-02-29T00:00:00Z",
            "0000-03-01T00:00:00.001Z",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31t23:59:59.999z",
            "2024-02-29T12:00:00Z",
            "2000-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "2100-02-29T12:00:00Z",
            "2400-02-29T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2026-01-05t10:00:00z",
            "2026-01-05T10:00:00z",
            "2026-01-05t10:00:00Z",
            "2026-01-05 10:00:00Z",
            "2026-01-05T10:00:00.000Z",
            "2026-01-05T10:00:00.12Z",
            "2026-01-05T10:00:00.1234Z",
            "2026-01-05T10:00:00.123+00:00",
            "2026-01-05T10:00:00+01:00",
            "2026-01-05T10:00:00.12aZ",
            "2026-01-05T10:00:00.123z",
            "2026-01-05T10:00:00\rZ",
            "2026\r01-05T10:00:00Z",
        ] {
            check(s);
        }
        for month in 0..=13u32 {
            for day in 0..=32u32 {
                for year in [
                    0, 1, 4, 100, 399, 400, 1969, 1970, 2000, 2024, 2100, 9996, 9999,
                ] {
                    check(&format!("{year:04}-{month:02}-{day:02}T00:00:00Z"));
                    check(&format!("{year:04}-{month:02}-{day:02}T23:59:59.999Z"));
                }
            }
        }
        // Generated: random fields slightly beyond their ranges, fractions of
        // 0 to 9 digits, every terminator, and one-byte changes of each.
        let seps = [b'-', b'-', b'T', b':', b':'];
        for _ in 0..200_000 {
            let year = match next(4) {
                0 => next(10_000),
                1 => 1968 + next(4),
                2 => 9996 + next(4),
                _ => 1970 + next(100),
            };
            let (month, day) = (next(14), next(33));
            let (hour, minute, second) = (next(26), next(62), next(62));
            let frac_len = next(10) as usize;
            let frac: String = (0..frac_len)
                .map(|_| char::from(b'0' + next(10) as u8))
                .collect();
            let dot = if frac_len == 0 { "" } else { "." };
            let t = if next(8) == 0 { 't' } else { 'T' };
            let end = match next(10) {
                0 => "z",
                1 => "+01:30",
                2 => "-00:00",
                3 => "",
                _ => "Z",
            };
            let s = format!(
                "{year:04}-{month:02}-{day:02}{t}{hour:02}:{minute:02}:{second:02}{dot}{frac}{end}"
            );
            check(&s);
            let mut b = s.into_bytes();
            let at = next(b.len() as u64) as usize;
            let was = b[at];
            b[at] = match next(6) {
                0 => seps[next(5) as usize],
                1 => b'0' + next(10) as u8,
                2 => b'Z',
                3 => was ^ 0x20,
                4 => b'/',
                _ => b':',
            };
            if let Ok(s) = std::str::from_utf8(&b) {
                check(s);
            }
        }
        // 31 280 with this seed: the fast path is taken, not just agreed with.
        assert!(fast_hits > 25_000, "{fast_hits}");
    }

    #[test]
    fn formats_without_fraction_when_ms_is_zero() {
        assert_eq!(format_rfc3339(JAN5_10H), "2026-01-05T10:00:00Z");
        assert_eq!(format_rfc3339(JAN5_10H + 123), "2026-01-05T10:00:00.123Z");
        assert_eq!(format_rfc3339(JAN5_10H + 5), "2026-01-05T10:00:00.005Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(MAX_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn formats_extreme_values_without_panicking() {
        let _ = format_rfc3339(i64::MIN);
        let _ = format_rfc3339(i64::MAX);
    }

    #[test]
    fn parse_and_format_round_trip() {
        // A day-by-day walk over several leap cycles, at varying times of day.
        let start = parse_rfc3339("1999-12-25T00:00:00Z").unwrap();
        for i in 0..(366 * 9) {
            let ms = start + i * MS_PER_DAY + (i * 7_919_123) % MS_PER_DAY;
            let s = format_rfc3339(ms);
            assert_eq!(parse_rfc3339(&s), Some(ms), "{s}");
        }
        for s in [
            "0000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.999Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            assert_eq!(format_rfc3339(parse_rfc3339(s).unwrap()), s);
        }
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.999Z"),
            Some(MAX_RFC3339_MS)
        );
    }
}
