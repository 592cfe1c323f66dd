//! Secrets in the config: which keys are secret, and the one constructor of
//! [`ConfigError`] that scrubs their values from every message.

use super::ConfigError;

/// What replaces a secret value in logs and messages.
pub const REDACTED: &str = "<redacted>";

/// Whether a setting's value may be a secret (passwords, keys, tokens, JAAS
/// configs, user names): such values never appear in logs, error messages or
/// on `/metrics`. Matches anywhere in the (dotted) key, case-insensitively.
pub fn is_secret_key(key: &str) -> bool {
    const HINTS: &[&str] = &[
        "password",
        "secret",
        "token",
        "jaas",
        "pem",
        "key",
        "credential",
        "username",
        "oauthbearer.config",
        "certificate",
    ];
    let key = key.to_ascii_lowercase();
    HINTS.iter().any(|h| key.contains(h))
}

/// The values of the secret-looking keys of a configuration: whatever
/// message is built from outside text (serde, librdkafka) is passed through
/// [`Secrets::scrub`] so that none of them can be quoted back.
#[derive(Clone, Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The values of secret-looking keys in `pairs`.
    pub fn in_pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Secrets {
        let mut out = Secrets::default();
        for (k, v) in pairs {
            if is_secret_key(k) {
                out.add(v.clone());
            }
        }
        out
    }

    /// Every scalar under a secret-looking key anywhere in `table` (the
    /// key's full dotted path is what is matched; arrays and tables under
    /// such a key give all their scalars).
    pub(super) fn in_table(table: &toml::Table) -> Secrets {
        fn walk(out: &mut Secrets, path: &str, v: &toml::Value, secret: bool) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        let secret = secret || is_secret_key(&p);
                        walk(out, &p, v, secret);
                    }
                }
                toml::Value::Array(a) => a.iter().for_each(|v| walk(out, path, v, secret)),
                toml::Value::String(s) if secret => out.add(s.clone()),
                other if secret => out.add(other.to_string()),
                _ => {}
            }
        }
        let mut out = Secrets::default();
        walk(&mut out, "", &toml::Value::Table(table.clone()), false);
        out
    }

    fn add(&mut self, v: String) {
        if !v.is_empty() && !self.0.contains(&v) {
            self.0.push(v);
        }
    }

    /// `text` with every occurrence of every secret replaced by `<redacted>`
    /// (longest first, so that a secret containing another goes whole).
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }
}

/// The one constructor of [`ConfigError`]: the message is scrubbed of every
/// secret value of the configuration.
pub(super) fn config_error(file: &str, key: &str, message: &str, secrets: &Secrets) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        key: key.to_string(),
        message: secrets.scrub(message),
    }
}

/// "an integer", "a string", ... for messages that must not quote a value.
pub(super) fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The value at a serde path in `table`, if there is one.
pub(super) fn lookup<'a>(
    table: &'a toml::Table,
    path: &serde_path_to_error::Path,
) -> Option<&'a toml::Value> {
    use serde_path_to_error::Segment;
    let mut segments = path.iter();
    let first = match segments.next()? {
        Segment::Map { key } => table.get(key)?,
        _ => return None,
    };
    segments.try_fold(first, |v, seg| match (v, seg) {
        (toml::Value::Table(t), Segment::Map { key }) => t.get(key),
        (toml::Value::Array(a), Segment::Seq { index }) => a.get(*index),
        _ => None,
    })
}
