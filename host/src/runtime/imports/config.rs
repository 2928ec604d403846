//! The `config` import and the operator's secrets.
//!
//! Config values are readable by the connector; secrets are not: the
//! connector names a secret on an HTTP request and the host attaches it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use wasmtime::component::HasData;

use crate::runtime::bindings::tether::connector::config;

/// Non-secret config the connector may read.
#[derive(Debug, Clone, Default)]
pub struct ConnectorConfig {
    values: BTreeMap<String, String>,
}

impl ConnectorConfig {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        ConnectorConfig { values: values.into_iter().collect() }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// What the `config` import serves: the config values, and the secrets'
/// names, which it never answers for.
pub struct ConfigCtx {
    pub config: ConnectorConfig,
    pub secrets: Arc<Secrets>,
}

impl ConfigCtx {
    pub fn new(config: ConnectorConfig, secrets: Arc<Secrets>) -> Self {
        ConfigCtx { config, secrets }
    }
}

/// Links `config` with a projection onto a [`ConfigCtx`].
pub struct Config;

impl HasData for Config {
    type Data<'a> = &'a mut ConfigCtx;
}

impl config::Host for ConfigCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        // A secret is never a config value, even if a connector asks for it
        // by name.
        if self.secrets.contains(&key) {
            return Ok(None);
        }
        Ok(self.config.get(&key).map(str::to_string))
    }
}

/// A secret's value; never printed.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the operator keeps a secret: `NAME=env:VAR`, `NAME=file:PATH` or
/// `NAME=literal:VALUE`.
#[derive(Debug, Clone)]
pub struct SecretSource {
    pub name: String,
    pub from: SecretFrom,
}

#[derive(Clone)]
pub enum SecretFrom {
    Env(String),
    File(PathBuf),
    Literal(SecretValue),
}

impl fmt::Debug for SecretFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFrom::Env(var) => write!(f, "env:{var}"),
            SecretFrom::File(path) => write!(f, "file:{}", path.display()),
            SecretFrom::Literal(_) => f.write_str("literal:<redacted>"),
        }
    }
}

impl FromStr for SecretSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, source) = text.split_once('=').ok_or_else(|| "expected NAME=env:VAR, NAME=file:PATH or NAME=literal:VALUE".to_string())?;
        if name.is_empty() {
            return Err("the secret needs a name before '='".into());
        }
        let from = match source.split_once(':') {
            Some(("env", var)) if !var.is_empty() => SecretFrom::Env(var.to_string()),
            Some(("file", path)) if !path.is_empty() => SecretFrom::File(PathBuf::from(path)),
            Some(("literal", value)) => SecretFrom::Literal(SecretValue(value.to_string())),
            _ => return Err(format!("secret {name}: expected env:VAR, file:PATH or literal:VALUE after '='")),
        };
        Ok(SecretSource { name: name.to_string(), from })
    }
}

/// The most a secret file may hold: a token or a key, not a stream.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Reads the one value a secret file holds (without its final line end):
/// a plain file of at most `MAX_SECRET_FILE_BYTES`.
pub fn read_secret_file(path: &Path) -> std::io::Result<String> {
    Ok(crate::plain_file::read_text(path, MAX_SECRET_FILE_BYTES)?.trim_end_matches(['\n', '\r']).to_string())
}

/// The shortest secret the host accepts: every secret is redacted from
/// responses, logs and errors, which only works for values that cannot
/// occur by chance.
pub const MIN_SECRET_BYTES: usize = 8;

/// The operator's secrets, resolved.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: HashMap<String, SecretValue>,
}

impl Secrets {
    pub fn resolve(sources: &[SecretSource]) -> Result<Self> {
        let mut values = HashMap::new();
        for source in sources {
            let value = match &source.from {
                SecretFrom::Env(var) => std::env::var(var).with_context(|| format!("secret {}: environment variable {var} is not set", source.name))?,
                SecretFrom::File(path) => read_secret_file(path).with_context(|| format!("secret {}: cannot read {}", source.name, path.display()))?,
                SecretFrom::Literal(value) => value.0.clone(),
            };
            if value.len() < MIN_SECRET_BYTES {
                // A secret is redacted from everything the connector reads;
                // redacting a two-letter value would mangle every response
                // that happens to contain those letters, so it is refused.
                bail!(
                    "secret {} is {} bytes long; secrets must be at least {MIN_SECRET_BYTES} bytes so that the host can redact them from what the connector reads",
                    source.name,
                    value.len()
                );
            }
            // Sent in headers, where a line break fails every request with
            // an error that names neither the secret nor the break.
            if let Some(at) = value.bytes().position(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                bail!("secret {} holds a control character at byte {at} (a line break?): a secret is one line of text", source.name);
            }
            values.insert(source.name.clone(), SecretValue(value));
        }
        Ok(Secrets { values })
    }

    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.values.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Feeds every secret, name and value, into `hasher`, in name order.
    pub fn digest_into(&self, hasher: &mut sha2::Sha256) {
        use sha2::Digest;
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        for name in names {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(self.values[name].0.as_bytes());
            hasher.update([0]);
        }
    }

    /// The length of the longest secret value.
    pub fn longest(&self) -> usize {
        self.values.values().map(|value| value.0.len()).max().unwrap_or(0)
    }

    /// `redact` for bytes (response bodies and header values). A secret is
    /// found written plainly and also escaped as JSON or a URL may write it
    /// (`\/`, `\u0041`, `%41`): an upstream echoing the token in JSON
    /// (Asana's tokens hold `/`, which some encoders write `\/`) would
    /// otherwise hand it to the connector once it parsed the body.
    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for value in self.values.values() {
            let secret = value.0.as_bytes();
            // Without a backslash or a percent sign nothing is escaped: the
            // plain search alone, as fast as memmem goes.
            let escapes = memchr::memchr2(b'\\', b'%', &out).is_some();
            let next = |out: &[u8], from: usize| next_match(out, from, secret, escapes);
            let mut found = next(&out, 0);
            if found.is_none() {
                continue;
            }
            let mut replaced = Vec::with_capacity(out.len());
            let mut copied = 0;
            while let Some((at, len)) = found {
                replaced.extend_from_slice(&out[copied..at]);
                replaced.extend_from_slice(b"<redacted>");
                copied = at + len;
                found = next(&out, copied);
            }
            replaced.extend_from_slice(&out[copied..]);
            out = replaced;
        }
        out
    }

    /// Replaces every secret value in `text`, so that nothing the connector
    /// echoes (logs, error messages) can carry one out.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in self.values.values() {
            if out.contains(&value.0) {
                out = out.replace(&value.0, "<redacted>");
            }
        }
        out
    }
}

/// Where the first match of `secret` at or after `from` starts, and its
/// length: plain, or (if the body holds `escapes`) escaped. A match that is
/// not plain has a `\` or `%` after at most `secret.len() - 1` plain bytes,
/// so only the starts that close before each of those are tried one by
/// one: a JSON body has few (a `next_page` URI's `%2C`), while the secret's
/// first byte may be on every line.
fn next_match(out: &[u8], from: usize, secret: &[u8], escapes: bool) -> Option<(usize, usize)> {
    let rest = out.get(from..)?;
    let plain = memchr::memmem::find(rest, secret).map(|at| from + at);
    if !escapes || secret.is_empty() {
        return plain.map(|at| (at, secret.len()));
    }
    // A match at or after the plain one would not be the first.
    let before = plain.unwrap_or(out.len());
    let mut untried = from;
    for escape in memchr::memchr2_iter(b'\\', b'%', rest).map(|at| from + at) {
        let start = escape.saturating_sub(secret.len() - 1).max(untried);
        if start >= before {
            break;
        }
        let end = escape.min(before - 1);
        for at in start..=end {
            if let Some(len) = escaped_match(&out[at..], secret) {
                return Some((at, len));
            }
        }
        untried = end + 1;
    }
    plain.map(|at| (at, secret.len()))
}

/// How many bytes at the start of `hay` spell `secret`, each of its bytes
/// written plainly or escaped (JSON's `\/`, `\"`, `\\` and `\uXXXX` for
/// an ASCII byte, or a URL's `%XX`); None if they do not.
fn escaped_match(hay: &[u8], secret: &[u8]) -> Option<usize> {
    let hex = |digits: &[u8]| std::str::from_utf8(digits).ok().and_then(|d| u32::from_str_radix(d, 16).ok());
    let mut at = 0;
    for &byte in secret {
        let rest = &hay[at..];
        at += match rest {
            [first, ..] if *first == byte => 1,
            [b'\\', b'u', a, b, c, d, ..] if byte.is_ascii() && hex(&[*a, *b, *c, *d]) == Some(u32::from(byte)) => 6,
            [b'\\', escaped, ..] if *escaped == byte && matches!(byte, b'/' | b'"' | b'\\') => 2,
            [b'%', a, b, ..] if hex(&[*a, *b]) == Some(u32::from(byte)) => 3,
            _ => return None,
        };
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(value: &str) -> Secrets {
        Secrets::resolve(&[format!("token=literal:{value}").parse().unwrap()]).unwrap()
    }

    /// A secret with a line break (a two-line token file, an env var
    /// ending in CR) is refused at once, naming it.
    #[test]
    fn a_secret_with_a_control_character_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for value in ["first-line\nsecond-line\n", "token-value\r1234\n", "an-escape-\x1b[31m-red"] {
            let file = dir.path().join("token");
            std::fs::write(&file, value).unwrap();
            let err = Secrets::resolve(&[format!("token=file:{}", file.display()).parse().unwrap()]).expect_err("refused").to_string();
            assert!(err.contains("secret token holds a control character"), "{value:?}: {err}");
        }
        assert!(Secrets::resolve(&["token=literal:with\ttab-inside".parse().unwrap()]).is_ok());
    }

    #[test]
    fn a_secret_is_redacted_plain_or_escaped_as_json_or_a_url_writes_it() {
        let s = secrets("2/1204567890/12098:abcSECRET");
        let redact = |body: &str| String::from_utf8(s.redact_bytes(body.as_bytes().to_vec())).unwrap();
        assert_eq!(redact(r#"{"a":"2/1204567890/12098:abcSECRET"}"#), r#"{"a":"<redacted>"}"#);
        assert_eq!(redact(r#"{"a":"2\/1204567890\/12098:abcSECRET","b":"\/"}"#), r#"{"a":"<redacted>","b":"\/"}"#);
        assert_eq!(redact(r#"{"a":"\u0032\u002F1204567890/12098\u003aabcSECRET"}"#), r#"{"a":"<redacted>"}"#);
        assert_eq!(redact("x=2%2F1204567890%2f12098%3AabcSECRET&y"), "x=<redacted>&y");
        assert_eq!(redact(r#"twice: 2/1204567890/12098:abcSECRET 2\/1204567890\/12098:abcSECRET"#), "twice: <redacted> <redacted>");
        // Near misses stay as they are.
        for body in [r#"{"a":"2\/1204567890\/12098:abcSECRE"}"#, "2%2G1204567890/12098:abcSECRET", r#"\"#, "%"] {
            assert_eq!(redact(body), body);
        }
    }

    /// The search tries only the starts near an escape; trying every start
    /// (as it once did) finds the same matches in bodies made of the
    /// secret's bytes, escapes of them, and both near misses.
    #[test]
    fn the_windowed_search_finds_what_trying_every_start_finds() {
        // Escapes late in the secret: a match's first escape may come long
        // after its start.
        let secret = b"abcabcd/";
        let every_start = |out: &[u8], from: usize| (from..out.len()).find_map(|at| escaped_match(&out[at..], secret).map(|len| (at, len)));
        let pieces: [&[u8]; 12] = [b"abcabcd", b"abc", b"a", b"b", b"c", b"d", b"/", b"\\/", b"%2F", b"\\u0061", b"%", b"x"];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut found = 0;
        for _ in 0..20_000 {
            let mut body = Vec::new();
            for _ in 0..(seed % 16) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let escapes = memchr::memchr2(b'\\', b'%', &body).is_some();
            for from in 0..=body.len() {
                let expected = every_start(&body, from);
                found += usize::from(expected.is_some_and(|(_, len)| len > secret.len()));
                assert_eq!(next_match(&body, from, secret, escapes), expected, "{:?} from {from}", String::from_utf8_lossy(&body));
            }
        }
        assert!(found > 100, "escaped matches to find: {found}");
    }
}
