//! Hand-rolled writers for the few value shapes an event line needs
//! (integers, fixed-point money, RFC 3339 timestamps): no allocation and no
//! `fmt` machinery on the per-line path.

const DAY_MS: i64 = 86_400_000;

/// Appends JSON text to a byte buffer. Everything written is ASCII, and the
/// strings written are the generator's own (ids, channel names), so none
/// needs escaping.
pub(crate) struct LineBuf {
    pub(crate) bytes: Vec<u8>,
    /// Where the line being written starts in `bytes`.
    mark: usize,
    /// The `YYYY-MM-DDT` of `cached_day`: one line in a few hundred thousand changes day.
    cached_day: i64,
    cached_date: [u8; 11],
}

impl LineBuf {
    pub(crate) fn new() -> LineBuf {
        LineBuf {
            bytes: Vec::with_capacity(256),
            mark: 0,
            cached_day: i64::MIN,
            cached_date: [0; 11],
        }
    }

    /// Starts a new line after what the buffer holds.
    pub(crate) fn start(&mut self) {
        self.mark = self.bytes.len();
    }

    /// The line written since `start`.
    pub(crate) fn written(&self) -> &[u8] {
        &self.bytes[self.mark..]
    }

    /// Drops the line written since `start`.
    pub(crate) fn discard(&mut self) {
        self.bytes.truncate(self.mark);
    }

    pub(crate) fn raw(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn u64(&mut self, mut n: u64) {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes.extend_from_slice(&tmp[i..]);
    }

    pub(crate) fn hex(&mut self, mut n: u64) {
        let mut tmp = [0u8; 16];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[(n & 15) as usize];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        self.bytes.extend_from_slice(&tmp[i..]);
    }

    /// `units / 10^decimals` written with exactly `decimals` digits after the point.
    pub(crate) fn fixed(&mut self, units: u64, decimals: u32) {
        let scale = 10u64.pow(decimals);
        self.u64(units / scale);
        if decimals > 0 {
            self.bytes.push(b'.');
            let frac = units % scale;
            let mut div = scale / 10;
            while div > 0 {
                self.bytes.push(b'0' + ((frac / div) % 10) as u8);
                div /= 10;
            }
        }
    }

    /// `,"name":"value"`
    pub(crate) fn str_field(&mut self, name: &str, value: &str) {
        self.raw(",\"");
        self.raw(name);
        self.raw("\":\"");
        self.raw(value);
        self.bytes.push(b'"');
    }

    /// `,"name":"<prefix><n>"`: user and ticket ids.
    pub(crate) fn id_field(&mut self, name: &str, prefix: char, n: u64) {
        self.raw(",\"");
        self.raw(name);
        self.raw("\":\"");
        self.bytes.push(prefix as u8);
        self.u64(n);
        self.bytes.push(b'"');
    }

    /// `,"name":n`
    pub(crate) fn int_field(&mut self, name: &str, n: u64) {
        self.raw(",\"");
        self.raw(name);
        self.raw("\":");
        self.u64(n);
    }

    /// `,"name":d.dd`: US dollars from cents.
    pub(crate) fn cents_field(&mut self, name: &str, cents: u64) {
        self.raw(",\"");
        self.raw(name);
        self.raw("\":");
        self.fixed(cents, 2);
    }

    /// RFC 3339, UTC, millisecond precision: `2026-01-01T00:00:00.000Z`.
    pub(crate) fn ts(&mut self, ms: i64) {
        let day = ms.div_euclid(DAY_MS);
        if day != self.cached_day {
            self.cached_day = day;
            self.cached_date = date_prefix(day);
        }
        self.bytes.extend_from_slice(&self.cached_date);
        let in_day = ms.rem_euclid(DAY_MS);
        let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, milli) = (rest / 1000, rest % 1000);
        let two = |b: &mut Vec<u8>, v: i64| {
            b.push(b'0' + (v / 10) as u8);
            b.push(b'0' + (v % 10) as u8);
        };
        two(&mut self.bytes, h);
        self.bytes.push(b':');
        two(&mut self.bytes, m);
        self.bytes.push(b':');
        two(&mut self.bytes, s);
        self.bytes.push(b'.');
        self.bytes.push(b'0' + (milli / 100) as u8);
        two(&mut self.bytes, milli % 100);
        self.bytes.push(b'Z');
    }
}

/// `YYYY-MM-DDT` for a day number since 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`). Years outside 0..=9999 are clamped
/// to keep the shape; the generator never gets near them.
fn date_prefix(days: i64) -> [u8; 11] {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = (yoe + era * 400 + i64::from(m <= 2)).clamp(0, 9999);
    let digit = |v: i64| b'0' + v as u8;
    [
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        b'-',
        digit(m / 10),
        digit(m % 10),
        b'-',
        digit(d / 10),
        digit(d % 10),
        b'T',
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> String {
        let mut b = LineBuf::new();
        b.ts(ms);
        String::from_utf8(b.bytes).unwrap()
    }

    #[test]
    fn timestamps_match_chrono_rfc3339_millis() {
        for ms in [
            0,
            1_767_225_600_000,
            1_767_225_600_001,
            951_782_400_000 - 1,
            951_868_799_999,
            4_102_444_799_999,
            1_709_251_199_123,
        ] {
            let expect = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(ts(ms), expect);
        }
    }

    #[test]
    fn fixed_point_writes_all_decimals() {
        let mut b = LineBuf::new();
        b.fixed(5, 2);
        b.raw(" ");
        b.fixed(123_456, 4);
        b.raw(" ");
        b.fixed(100, 2);
        assert_eq!(String::from_utf8(b.bytes).unwrap(), "0.05 12.3456 1.00");
    }
}
