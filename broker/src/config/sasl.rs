//! SASL on listeners (`sasl.enabled.mechanisms`, and for each enabled
//! mechanism `listener.name.<listener>.<mechanism>.sasl.jaas.config`, as
//! Kafka requires), `sasl.server.max.receive.size`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use super::properties::Properties;
use super::ssl::Secret;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("sasl.enabled.mechanisms", "GSSAPI"),
    ("sasl.server.max.receive.size", "524288"),
];

/// The JAAS login module of PLAIN, as Kafka names it.
const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
/// The JAAS login module of SCRAM-SHA-256 and SCRAM-SHA-512.
const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

/// A SASL mechanism this broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }

    fn login_module(self) -> &'static str {
        match self {
            Mechanism::Plain => PLAIN_LOGIN_MODULE,
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => SCRAM_LOGIN_MODULE,
        }
    }
}

/// One SASL listener's settings.
#[derive(Debug, Clone)]
pub struct SaslConfig {
    /// `sasl.enabled.mechanisms`, in the order given.
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN's users and passwords (`user_<name>="<password>"` in its JAAS
    /// config).
    pub plain_users: BTreeMap<String, Secret>,
    /// Frames a client sends before it is authenticated are at most this
    /// large (`sasl.server.max.receive.size`).
    pub max_receive_bytes: usize,
}

impl SaslConfig {
    pub(super) fn from_properties(
        properties: &Properties,
        listener: &str,
    ) -> anyhow::Result<SaslConfig> {
        let (mechanisms_key, enabled) =
            properties.for_listener(listener, "sasl.enabled.mechanisms");
        let mut mechanisms = Vec::new();
        for name in enabled
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let Some(mechanism) = Mechanism::from_name(name) else {
                bail!("{mechanisms_key}={enabled}: {name} is not supported on listener {listener} (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are)");
            };
            mechanisms.push(mechanism);
        }
        if mechanisms.is_empty() {
            bail!("{mechanisms_key} is empty: listener {listener} needs a SASL mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)");
        }
        let mut plain_users = BTreeMap::new();
        for mechanism in &mechanisms {
            // Kafka requires a JAAS config for every enabled mechanism.
            let suffix = format!("{}.sasl.jaas.config", mechanism.name().to_ascii_lowercase());
            let key = format!("listener.name.{}.{suffix}", listener.to_ascii_lowercase());
            let (_, text) = properties.for_listener(listener, &suffix);
            let module = mechanism.login_module();
            if text.is_empty() {
                let example = match mechanism {
                    Mechanism::Plain => {
                        format!("{module} required user_<name>=\"<password>\" ...;")
                    }
                    _ => format!("{module} required;"),
                };
                bail!("{key} is not set: {} is enabled on listener {listener}, and Kafka requires its JAAS config (`{example}`)", mechanism.name());
            }
            let (given, options) = parse_jaas(text).with_context(|| key.clone())?;
            if given != module {
                bail!(
                    "{key}: the login module for {} is {module}, not {given}",
                    mechanism.name()
                );
            }
            if *mechanism == Mechanism::Plain {
                for (option, value) in options {
                    if let Some(user) = option.strip_prefix("user_") {
                        plain_users.insert(user.to_string(), Secret::new(value));
                    }
                }
                if plain_users.is_empty() {
                    bail!("{key} names no user (user_<name>=\"<password>\")");
                }
            }
        }
        Ok(SaslConfig {
            mechanisms,
            plain_users,
            max_receive_bytes: properties.positive("sasl.server.max.receive.size")?,
        })
    }
}

/// A JAAS configuration of one login module, as Kafka reads
/// `sasl.jaas.config`: `<module class> <flag> [<option>=<value>]... ;`,
/// values quoted (with `\` escapes) or bare. Returns the module and its
/// options. Errors never quote a value (they may be passwords).
pub(super) fn parse_jaas(text: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut tokens = JaasTokens {
        chars: text.chars().peekable(),
    };
    let module = tokens.word().context("no login module class")?;
    let flag = tokens
        .word()
        .context("no control flag after the login module")?;
    if !matches!(
        flag.as_str(),
        "required" | "requisite" | "sufficient" | "optional"
    ) {
        bail!("the control flag must be required, requisite, sufficient or optional");
    }
    let mut options = Vec::new();
    loop {
        tokens.skip_space();
        match tokens.chars.peek() {
            Some(';') => {
                tokens.chars.next();
                break;
            }
            None => bail!("the login module's options do not end with ';'"),
            Some(_) => {}
        }
        let name = tokens.word().context("an option without a name")?;
        tokens.skip_space();
        if tokens.chars.next() != Some('=') {
            bail!("option {name} has no '='");
        }
        tokens.skip_space();
        let value = if tokens.chars.peek() == Some(&'"') {
            tokens.chars.next();
            tokens
                .quoted()
                .with_context(|| format!("the value of {name}"))?
        } else {
            tokens
                .word()
                .with_context(|| format!("option {name} has no value"))?
        };
        options.push((name, value));
    }
    tokens.skip_space();
    if tokens.chars.next().is_some() {
        bail!("only one login module may be configured");
    }
    Ok((module, options))
}

struct JaasTokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl JaasTokens<'_> {
    fn skip_space(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    /// A bare token: up to white space, `=` or `;`.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let mut word = String::new();
        while let Some(c) = self.chars.peek().copied() {
            if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                break;
            }
            word.push(c);
            self.chars.next();
        }
        (!word.is_empty()).then_some(word)
    }

    /// The rest of a quoted value, its closing quote consumed.
    fn quoted(&mut self) -> anyhow::Result<String> {
        let mut value = String::new();
        loop {
            match self.chars.next() {
                Some('"') => return Ok(value),
                Some('\\') => match self.chars.next() {
                    Some(escaped) => value.push(escaped),
                    None => bail!("ends inside an escape"),
                },
                Some(c) => value.push(c),
                None => bail!("has no closing quote"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_configs_parse_as_kafka_writes_them() {
        let (module, options) = parse_jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" \
             password=\"admin-secret\" user_admin=\"admin-secret\" user_alice=\"a \\\"quoted\\\" secret\";",
        )
        .unwrap();
        assert_eq!(module, PLAIN_LOGIN_MODULE);
        assert_eq!(
            options[3],
            ("user_alice".into(), "a \"quoted\" secret".into())
        );
        let (_, options) = parse_jaas("x.Y optional a=b ;").unwrap();
        assert_eq!(options, [("a".into(), "b".into())]);
        for bad in [
            "",
            "x.Y",
            "x.Y maybe;",
            "x.Y required a=\"b;",
            "x.Y required a=b",
            "x.Y required a;",
            "x.Y required; z.W required;",
        ] {
            assert!(parse_jaas(bad).is_err(), "{bad:?}");
        }
        let error = format!(
            "{:#}",
            parse_jaas("x.Y required password=\"hunter2").unwrap_err()
        );
        assert!(!error.contains("hunter2"), "{error}");
    }
}
