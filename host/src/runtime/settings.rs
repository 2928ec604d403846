//! The operator's config and secrets for a connector, checked against the
//! keys the connector declares, the same way for `tether sync` and the
//! other commands as for `tether serve`: a misspelt key, or a value filed
//! as a secret when it is config (or the other way round), would otherwise
//! be ignored without a word, and the connector would run with its
//! defaults (Asana's real API, say, instead of the one the operator named).

use std::collections::HashSet;

use anyhow::{bail, Result};

use crate::runtime::bindings::guest::ConfigField;
use crate::runtime::imports::config::SecretSource;
use crate::terminal::escape as esc;

/// How the caller's operator gives a key (given escaped): as config or as
/// a secret, e.g. `--secret token=env:VAR` or `[instances.x.secrets]`.
pub trait HowToGive {
    fn config(&self, key: &str) -> String;
    fn secret(&self, key: &str) -> String;
}

/// Checks `config` and `secrets` against `declared`:
/// - a secret is not given as config, nor config as a secret;
/// - no key is given twice;
/// - every required key is given.
///
/// Returns the keys given that the connector does not declare, for the
/// caller to refuse (a command run now) or to warn of (a service whose
/// config outlives one module version, where a key the next version
/// takes may be there early). A connector that declares no keys says
/// nothing of what it reads: then nothing is unknown.
pub fn check(declared: &[ConfigField], config: &[(String, String)], secrets: &[SecretSource], how: &dyn HowToGive) -> Result<Vec<String>> {
    for field in declared {
        let as_config = config.iter().any(|(key, _)| key == &field.key);
        let as_secret = secrets.iter().any(|s| s.name == field.key);
        if field.secret && as_config {
            bail!("{} is a secret: give it as {}, not as config", esc(&field.key), how.secret(&esc(&field.key)));
        }
        if !field.secret && as_secret {
            bail!("{} is config, not a secret: give it as {}", esc(&field.key), how.config(&esc(&field.key)));
        }
    }
    let mut seen = HashSet::new();
    for key in config.iter().map(|(key, _)| key).chain(secrets.iter().map(|s| &s.name)) {
        if !seen.insert(key.as_str()) {
            bail!("{} is given twice: give each config key and secret once", esc(key));
        }
    }
    for field in declared {
        let given = config.iter().any(|(key, _)| key == &field.key) || secrets.iter().any(|s| s.name == field.key);
        if field.required && !given {
            let give = if field.secret { how.secret(&esc(&field.key)) } else { how.config(&esc(&field.key)) };
            bail!("the connector needs {}: {} (give it as {give})", esc(&field.key), esc(&field.description));
        }
    }
    Ok(unknown_keys(declared, seen))
}

/// The keys of `given` that `declared` does not name, escaped and sorted;
/// none when the connector declares no keys (see [`check`]).
pub fn unknown_keys<'k>(declared: &[ConfigField], given: impl IntoIterator<Item = &'k str>) -> Vec<String> {
    if declared.is_empty() {
        return vec![];
    }
    let mut unknown: Vec<String> = given.into_iter().filter(|key| !declared.iter().any(|f| f.key == *key)).map(|key| esc(key).into_owned()).collect();
    unknown.sort();
    unknown
}

/// What to say of keys [`check`] found unknown.
pub fn unknown_keys_message(declared: &[ConfigField], unknown: &[String]) -> String {
    let known: Vec<String> = declared.iter().map(|f| esc(&f.key).into_owned()).collect();
    format!("the connector has no setting {} (it takes: {})", unknown.join(", "), known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::imports::config::SecretFrom;

    struct Flags;
    impl HowToGive for Flags {
        fn config(&self, key: &str) -> String {
            format!("--config {key}=…")
        }
        fn secret(&self, key: &str) -> String {
            format!("--secret {key}=env:VAR")
        }
    }

    fn field(key: &str, secret: bool, required: bool) -> ConfigField {
        ConfigField { key: key.into(), description: format!("the {key}"), secret, required, default_value: None }
    }

    fn secret(name: &str) -> SecretSource {
        SecretSource { name: name.into(), from: SecretFrom::Env("X".into()) }
    }

    fn config(key: &str) -> (String, String) {
        (key.into(), "v".into())
    }

    fn error(declared: &[ConfigField], config: &[(String, String)], secrets: &[SecretSource]) -> String {
        check(declared, config, secrets, &Flags).expect_err("refused").to_string()
    }

    fn unknown(declared: &[ConfigField], config: &[(String, String)], secrets: &[SecretSource]) -> Vec<String> {
        check(declared, config, secrets, &Flags).expect("no error")
    }

    #[test]
    fn settings_that_fit_the_declaration_pass() {
        let declared = [field("url", false, false), field("token", true, true)];
        assert!(unknown(&declared, &[config("url")], &[secret("token")]).is_empty());
        assert!(unknown(&declared, &[], &[secret("token")]).is_empty());
    }

    #[test]
    fn misfiled_missing_unknown_and_repeated_keys_are_refused() {
        let declared = [field("url", false, false), field("token", true, true)];
        assert!(error(&declared, &[config("token")], &[]).contains("token is a secret"));
        assert!(error(&declared, &[], &[secret("token"), secret("url")]).contains("url is config, not a secret: give it as --config url="));
        assert!(error(&declared, &[], &[]).contains("the connector needs token"));
        assert_eq!(unknown(&declared, &[config("urll")], &[secret("token")]), ["urll"]);
        assert_eq!(unknown(&declared, &[], &[secret("token"), secret("tokn")]), ["tokn"]);
        assert_eq!(unknown_keys_message(&declared, &["urll".into()]), "the connector has no setting urll (it takes: url, token)");
        assert!(error(&declared, &[config("url"), config("url")], &[secret("token")]).contains("url is given twice"));
        // Given both ways, the misfiling is what is said.
        assert!(error(&declared, &[config("token")], &[secret("token")]).contains("token is a secret"));
    }

    #[test]
    fn a_connector_that_declares_nothing_takes_any_key_once() {
        assert!(unknown(&[], &[config("mode")], &[secret("anything")]).is_empty());
        assert!(error(&[], &[config("mode"), config("mode")], &[]).contains("given twice"));
    }

    #[test]
    fn a_key_is_escaped_in_the_message() {
        let declared = [field("k\u{1b}[2J", false, true)];
        let message = error(&declared, &[], &[]);
        assert!(!message.contains('\u{1b}'), "{message}");
        assert!(message.contains("k\\x1b[2J"), "{message}");
    }
}
