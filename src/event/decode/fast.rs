//! The canonical fast path's scanner: reads the common shape of a canonical
//! message (one flat JSON object of strings without escapes, plain numbers
//! and literals) straight into a [`RawEvent`]. Outside strings the grammar
//! admits ASCII bytes only, so the UTF-8 check is made on string contents
//! alone, while they are scanned: a string of ASCII bytes (the usual case,
//! seen in the word-wide scan) is valid as it is; another is checked by
//! `std::str::from_utf8`.
//!
//! It fills exactly what [`super::fill_from_json`] (serde_json) fills, and
//! gives up on anything else: an escape, a control character, a nested
//! array or object, a negative number, an exponent, more than
//! [`MAX_DIGITS`] digits, invalid UTF-8, or any syntax error. A message it
//! gives up on is read again by serde_json, which then decides (and words
//! the error of a message that is not JSON). So what it accepts is a subset
//! of what serde_json accepts, read to the same values: strings borrowed
//! from the message, integers as `UInt`, decimals as serde_json computes
//! them without its `float_roundtrip` feature (the digits as an integer,
//! divided by a power of ten), a field given twice keeping its last value.

use std::borrow::Cow;

use super::super::raw::{Field, Raw, RawEvent};

/// Longest number (digits, point excluded) read here: the digits as an
/// integer stay below 10^18, far from `u64` overflow (serde_json's switch to
/// another algorithm).
const MAX_DIGITS: usize = 18;

/// Powers of ten as serde_json's table writes them (`1e0` ..): exact up to 1e22.
const POW10: [f64; MAX_DIGITS + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18,
];

/// Fills `raw` from `bytes` if the message has the simple shape; `None`
/// (with `raw` in any state) if serde_json must read it.
#[inline(never)]
pub(super) fn fill<'a>(raw: &mut RawEvent<'a>, bytes: &'a [u8]) -> Option<()> {
    let mut s = Scan { b: bytes, i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            s.sep(b':')?;
            match key {
                Some(f) => *raw.slot(f) = s.value()?,
                None => s.skip_value()?,
            }
            if s.tight(b',') {
                continue;
            }
            s.ws();
            match s.peek()? {
                b',' => {
                    s.i += 1;
                    s.ws();
                }
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == bytes.len()).then_some(())
}

/// The bytes of `word` (eight message bytes, little-endian) that end a
/// plain string: `"`, `\\` or a control character (< 0x20), as the high bit
/// of each such byte. Bytes above the lowest one flagged may be flagged
/// wrongly (a borrow carries into them), so only the lowest counts.
#[inline(always)]
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & HIGH
}

struct Scan<'a> {
    /// The message (not checked UTF-8: only string contents need be, see the module doc).
    b: &'a [u8],
    i: usize,
}

/// The high bit of each byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// `bytes` as a `str`: when `high` (the or of its bytes, or of words
/// holding them and ASCII bytes only) has no high bit set, every byte is
/// ASCII, so valid UTF-8; otherwise checked in full.
#[inline(always)]
fn utf8(bytes: &[u8], high: u64) -> Option<&str> {
    if high & HIGH == 0 {
        debug_assert!(bytes.is_ascii());
        // SAFETY: no byte of `bytes` has its high bit set (the caller or-ed
        // every one of them into `high`): ASCII, which is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Steps over `c` if it is the next byte and a byte above the space
    /// follows it (so no whitespace: the compact form, in one test); else
    /// nothing moves.
    #[inline(always)]
    fn tight(&mut self, c: u8) -> bool {
        let yes = self.peek() == Some(c) && self.b.get(self.i + 1).is_some_and(|&n| n > b' ');
        if yes {
            self.i += 1;
        }
        yes
    }

    /// `c` with optional whitespace around it.
    #[inline(always)]
    fn sep(&mut self, c: u8) -> Option<()> {
        if self.tight(c) {
            return Some(());
        }
        self.ws();
        self.eat(c)?;
        self.ws();
        Some(())
    }

    /// JSON whitespace (serde_json's four bytes).
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters, borrowed.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        // The or of the string's bytes (see [`utf8`]).
        let mut high = 0u64;
        // Eight bytes at a time up to the first `"`, `\` or control
        // character ([`stops`]), then byte by byte near the end of the
        // message; either way `i` ends at the first such byte.
        loop {
            let Some(word) = self.b.get(self.i..self.i + 8) else {
                while let Some(&c) = self.b.get(self.i) {
                    if matches!(c, b'"' | b'\\' | 0..=0x1f) {
                        break;
                    }
                    high |= u64::from(c);
                    self.i += 1;
                }
                break;
            };
            let w = u64::from_le_bytes(word.try_into().ok()?);
            let m = stops(w);
            if m != 0 {
                let bytes = m.trailing_zeros() / 8;
                // Only the bytes before the stop belong to the string.
                high |= w & ((1u64 << (bytes * 8)) - 1);
                self.i += bytes as usize;
                break;
            }
            high |= w;
            self.i += 8;
        }
        // The closing quote (at an escape or a control character, serde_json decides).
        if self.peek()? != b'"' {
            return None;
        }
        let s = utf8(self.b.get(start..self.i)?, high)?;
        self.i += 1;
        Some(s)
    }

    /// An object key: the canonical field it names, or `None` for another
    /// key. A canonical name followed by its closing quote is recognised in
    /// place (what [`Self::string`] then [`Field::parse`] would conclude);
    /// any other key is read as a string.
    #[inline(always)]
    fn key(&mut self) -> Option<Option<Field>> {
        let rest = self.b.get(self.i + 1..).unwrap_or_default();
        let named = |name: &[u8], f: Field| rest.starts_with(name).then_some((f, name.len()));
        let known = match rest.first() {
            Some(b'e') => named(b"event_id\"", Field::EventId),
            Some(b't') => named(b"type\"", Field::Type)
                .or_else(|| named(b"ts\"", Field::Ts))
                .or_else(|| named(b"ticket_id\"", Field::TicketId)),
            Some(b'u') => named(b"user_id\"", Field::UserId),
            Some(b'n') => {
                named(b"notional_usd\"", Field::NotionalUsd).or_else(|| named(b"nps\"", Field::Nps))
            }
            Some(b'f') => named(b"fee_usd\"", Field::FeeUsd),
            Some(b'a') => named(b"amount_usd\"", Field::AmountUsd)
                .or_else(|| named(b"action\"", Field::Action)),
            Some(b'c') => named(b"channel\"", Field::Channel)
                .or_else(|| named(b"campaign\"", Field::Campaign))
                .or_else(|| named(b"country\"", Field::Country))
                .or_else(|| named(b"csat\"", Field::Csat))
                .or_else(|| named(b"ces\"", Field::Ces)),
            Some(b'r') => named(b"referrer_id\"", Field::ReferrerId)
                .or_else(|| named(b"reward_usd\"", Field::RewardUsd)),
            Some(b'p') => named(b"priority\"", Field::Priority),
            _ => None,
        };
        match known {
            // The opening quote must be there too (`rest` starts after it).
            Some((f, len)) if self.peek() == Some(b'"') => {
                self.i += 1 + len;
                Some(Some(f))
            }
            _ => Some(Field::parse(self.string()?)),
        }
    }

    /// A canonical field's value, as `NullableRaw` reads it.
    #[inline(always)]
    fn value(&mut self) -> Option<Option<Raw<'a>>> {
        Some(match self.peek()? {
            b'"' => Some(Raw::Str(Cow::Borrowed(self.string()?))),
            b'0'..=b'9' => Some(self.number()?),
            b'n' => {
                self.literal(b"null")?;
                None
            }
            b't' => {
                self.literal(b"true")?;
                Some(Raw::Other("a boolean"))
            }
            b'f' => {
                self.literal(b"false")?;
                Some(Raw::Other("a boolean"))
            }
            _ => return None,
        })
    }

    /// An ignored field's value: checked as serde_json checks it, not kept.
    fn skip_value(&mut self) -> Option<()> {
        self.value().map(drop)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A non-negative number without exponent: `0` or `[1-9][0-9]*`, then
    /// optionally `.` and at least one digit.
    #[inline(always)]
    fn number(&mut self) -> Option<Raw<'a>> {
        let mut sig: u64 = 0;
        let mut digits = 0;
        let first = self.peek()?;
        self.i += 1;
        sig += u64::from(first - b'0');
        digits += 1;
        if first != b'0' {
            while let Some(c @ b'0'..=b'9') = self.peek() {
                sig = sig * 10 + u64::from(c - b'0');
                digits += 1;
                self.i += 1;
                if digits > MAX_DIGITS {
                    return None;
                }
            }
        }
        let raw = match self.peek() {
            Some(b'.') => {
                self.i += 1;
                let mut frac = 0;
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    sig = sig * 10 + u64::from(c - b'0');
                    frac += 1;
                    self.i += 1;
                    if digits + frac > MAX_DIGITS {
                        return None;
                    }
                }
                if frac == 0 {
                    return None;
                }
                Raw::Float(sig as f64 / POW10[frac])
            }
            // A second leading zero, an exponent: serde_json decides.
            Some(b'0'..=b'9' | b'e' | b'E') => return None,
            _ => Raw::UInt(sig),
        };
        Some(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fill_from_json;
    use super::*;
    use crate::r#gen::{GenConfig, Generator};

    /// What serde_json fills, or `None` where it refuses the bytes.
    fn by_serde(bytes: &[u8]) -> Option<String> {
        let mut raw = RawEvent::default();
        fill_from_json(&mut raw, bytes).ok()?;
        Some(format!("{raw:?}"))
    }

    /// The scanner either gives up or fills what serde_json fills.
    fn agrees(bytes: &[u8]) -> bool {
        let mut raw = RawEvent::default();
        match fill(&mut raw, bytes) {
            None => false,
            Some(()) => {
                // Nothing owned: `decode_canonical` skips the drop of what the scanner filled.
                for f in Field::ALL {
                    assert!(!matches!(raw.slot(f), Some(Raw::Str(Cow::Owned(_)))), "{f}");
                }
                let mine = format!("{raw:?}");
                assert_eq!(
                    Some(mine),
                    by_serde(bytes),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                true
            }
        }
    }

    #[test]
    fn reads_generated_lines_as_serde_json_does() {
        let cfg = GenConfig {
            seed: 3,
            events: 20_000,
            ..GenConfig::default()
        };
        let mut read = 0;
        for line in Generator::new(&cfg) {
            let b = line.payload.as_bytes();
            read += usize::from(agrees(b));
            // Every prefix and every one-byte change of some lines: each is
            // read alike or left to serde_json.
            if line.payload.len() % 97 == 0 {
                for cut in 0..b.len() {
                    agrees(&b[..cut]);
                    for with in [
                        b'"', b'\\', b',', b'}', b'0', b'-', b'.', b'e', b' ', 0x01, 0xff,
                    ] {
                        let mut m = b.to_vec();
                        m[cut] = with;
                        agrees(&m);
                    }
                }
            }
        }
        // The fast path is the common case (the generator's invalid lines aside).
        assert!(read >= 19_900, "{read}");
    }

    #[test]
    fn keys_read_in_place_are_what_string_then_parse_read() {
        let mut names: Vec<String> = Field::ALL.iter().map(|f| f.as_str().to_owned()).collect();
        // Prefixes, extensions and near misses of the names.
        for f in Field::ALL {
            let n = f.as_str();
            names.push(n[..n.len() - 1].to_owned());
            names.push(format!("{n}x"));
            names.push(format!("{n}_"));
            names.push(n.to_uppercase());
        }
        for n in names {
            let text = format!("\"{n}\":1");
            let mut s = Scan {
                b: text.as_bytes(),
                i: 0,
            };
            assert_eq!(s.key(), Some(Field::parse(&n)), "{n}");
            assert_eq!(s.peek(), Some(b':'), "{n}");
        }
        // Cut short: no key.
        for text in ["", "\"", "\"ts", "\"event_id"] {
            let mut s = Scan {
                b: text.as_bytes(),
                i: 0,
            };
            assert_eq!(s.key(), None, "{text}");
        }
    }

    #[test]
    fn stops_finds_the_first_quote_backslash_or_control_byte() {
        let ends = |b: u8| matches!(b, b'"' | b'\\' | 0..=0x1f);
        // Every byte value at every position, behind every other byte value
        // (UTF-8 continuation bytes and the bytes next to 0x20 included).
        for filler in 0..=255u8 {
            for b in 0..=255u8 {
                for pos in 0..8 {
                    let mut w = [filler; 8];
                    w[pos] = b;
                    let want = w.iter().position(|&c| ends(c));
                    let m = stops(u64::from_le_bytes(w));
                    let got = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
                    assert_eq!(got, want, "{w:?}");
                }
            }
        }
    }

    #[test]
    fn reads_plain_values_and_gives_up_on_the_rest() {
        for ok in [
            r#"{}"#,
            " \t\r\n{ \"type\" : \"trade\" , \"fee_usd\" : 0.3622 } \n",
            // Whitespace after a tight `:` or `,`, or only before it.
            "{\"type\":\n\"trade\",\t\"fee_usd\" :0.5 ,\"x\":\r1,\"ts\":1}",
            r#"{"fee_usd":0,"amount_usd":0.0,"csat":5,"ces":null,"nps":true,"x":false}"#,
            r#"{"type":"a","type":"b","notional_usd":123456789012345678}"#,
            r#"{"user_id":"ü-ß","fee_usd":1.00000000000000001,"zz":"日本"}"#,
            r#"{"fee_usd":99999999999999999.9}"#,
        ] {
            assert!(agrees(ok.as_bytes()), "{ok}");
        }
        for other in [
            r#"{"a":"\n"}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{}}"#,
            r#"{"a":-1}"#,
            r#"{"a":1e3}"#,
            r#"{"a":1234567890123456789}"#,
            r#"{"a":1.000000000000000001}"#,
            r#"{"a":1.}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":1}x"#,
            r#"{"a":nul}"#,
            "\x0c{}",
            r#"{"a\"b":1}"#,
            r#"[1]"#,
        ] {
            assert!(!agrees(other.as_bytes()), "{other}");
        }
        assert!(!agrees(b"{\"a\":\"\xff\"}"));
        // UTF-8 is checked in strings only, in the word-wide part and in
        // the byte-by-byte tail alike; outside strings no byte above 0x7f passes.
        for ok in [
            "{\"user_id\":\"abcdefgh\u{e9}\",\"zz\":\"\u{e9}abcdefghijklmnop\"}",
            "{\"zz\":\"abcdefg\u{1f600}\",\"type\":\"\u{e9}\"}",
        ] {
            assert!(agrees(ok.as_bytes()), "{ok}");
        }
        for bad in [
            &b"{\"user_id\":\"abcdefgh\xff\"}"[..],
            b"{\"user_id\":\"abcdefghijklmno\xc3\"}",
            b"{\"zz\":\"\xc3\xa9\xc3\"}",
            b"{\"zz\":\"\xed\xa0\x80abcdefgh\"}",
            b"{\"zz\":\"x\"\xc3\xa9}",
            b"{\xc3\xa9\"zz\":1}",
            b"{\"zz\":1\xc2\xa0}",
        ] {
            assert!(!agrees(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
