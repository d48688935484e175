//! SASL on listeners (`sasl.enabled.mechanisms`, and for each enabled
//! mechanism `listener.name.<listener>.<mechanism>.sasl.jaas.config`, as
//! Kafka requires), `sasl.server.max.receive.size`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use client::jaas::parse as parse_jaas;

use super::properties::Properties;
use super::ssl::Secret;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("sasl.enabled.mechanisms", "GSSAPI"),
    ("sasl.server.max.receive.size", "524288"),
    ("sasl.mechanism.inter.broker.protocol", "GSSAPI"),
    ("connections.max.reauth.ms", "0"),
    // Kafka's Kerberos and login-refresh settings: accepted (also at run
    // time) and described; nothing here uses them.
    ("sasl.kerberos.service.name", ""),
    ("sasl.kerberos.kinit.cmd", "/usr/bin/kinit"),
    ("sasl.kerberos.ticket.renew.window.factor", "0.8"),
    ("sasl.kerberos.ticket.renew.jitter", "0.05"),
    ("sasl.kerberos.min.time.before.relogin", "60000"),
    ("sasl.kerberos.principal.to.local.rules", "DEFAULT"),
    ("sasl.login.refresh.window.factor", "0.8"),
    ("sasl.login.refresh.window.jitter", "0.05"),
    ("sasl.login.refresh.min.period.seconds", "60"),
    ("sasl.login.refresh.buffer.seconds", "300"),
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
    /// The broker's own credentials per mechanism (`username` and
    /// `password` in the mechanism's JAAS config), used when this is the
    /// inter-broker listener.
    pub logins: Vec<(Mechanism, String, Secret)>,
    /// Frames a client sends before it is authenticated are at most this
    /// large (`sasl.server.max.receive.size`).
    pub max_receive_bytes: usize,
    /// KIP-368 `connections.max.reauth.ms`: a session lasts this long, then
    /// the client must authenticate again or the connection closes (0:
    /// forever).
    pub reauth_ms: u64,
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
        let mut logins = Vec::new();
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
            let option = |name: &str| {
                options
                    .iter()
                    .find(|(option, _)| option == name)
                    .map(|(_, value)| value.clone())
            };
            if let (Some(username), Some(password)) = (option("username"), option("password")) {
                logins.push((*mechanism, username, Secret::new(password)));
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
            logins,
            max_receive_bytes: properties.positive("sasl.server.max.receive.size")?,
            reauth_ms: {
                let (key, text) = properties.for_listener(listener, "connections.max.reauth.ms");
                text.parse()
                    .with_context(|| format!("{key}={text} is not a number of milliseconds"))?
            },
        })
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

/// How this broker authenticates to the others when the inter-broker
/// listener is a SASL one: `sasl.mechanism.inter.broker.protocol` and the
/// credentials of that mechanism's JAAS config on the listener.
#[derive(Debug, Clone)]
pub struct InterBrokerSasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

impl InterBrokerSasl {
    pub(super) fn from_properties(
        properties: &Properties,
        listener: &str,
        sasl: &SaslConfig,
    ) -> anyhow::Result<InterBrokerSasl> {
        let name = properties.text("sasl.mechanism.inter.broker.protocol");
        let Some(mechanism) = Mechanism::from_name(name) else {
            bail!("sasl.mechanism.inter.broker.protocol={name}: the inter-broker listener {listener} is a SASL one, and brokers authenticate to each other with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
        };
        if !sasl.mechanisms.contains(&mechanism) {
            bail!("sasl.mechanism.inter.broker.protocol={name} is not in the sasl.enabled.mechanisms of the inter-broker listener {listener}");
        }
        let Some((_, username, password)) = sasl.logins.iter().find(|(m, _, _)| *m == mechanism)
        else {
            bail!("listener.name.{}.{}.sasl.jaas.config has no username=\"...\" password=\"...\": the broker's own credentials between brokers", listener.to_ascii_lowercase(), name.to_ascii_lowercase());
        };
        Ok(InterBrokerSasl {
            mechanism,
            username: username.clone(),
            password: password.clone(),
        })
    }
}
