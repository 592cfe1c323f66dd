//! JSON Pointers (RFC 6901): where a mapped canonical field is read from.

use serde_json::Value;

/// A parsed JSON Pointer (RFC 6901): the unescaped reference tokens.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pointer(Vec<String>);

impl Pointer {
    pub(crate) fn parse(s: &str) -> Result<Pointer, String> {
        if s.is_empty() {
            return Err("the empty JSON Pointer selects the whole message, not a field".into());
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(format!(
                "`{s}` is not a JSON Pointer: it must start with `/`"
            ));
        };
        rest.split('/')
            .map(|token| {
                let mut out = String::with_capacity(token.len());
                let mut chars = token.chars();
                while let Some(c) = chars.next() {
                    if c != '~' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(format!(
                                "`{s}` is not a JSON Pointer: `~` must be followed by 0 or 1"
                            ));
                        }
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Pointer)
    }

    pub(crate) fn resolve<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        let mut v = doc;
        for token in &self.0 {
            v = match v {
                Value::Object(m) => m.get(token.as_str())?,
                Value::Array(a) => a.get(array_index(token)?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(t: &str) -> Option<usize> {
    let digits = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits || (t.len() > 1 && t.starts_with('0')) {
        return None;
    }
    t.parse().ok()
}
