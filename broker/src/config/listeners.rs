//! Listeners (`listeners`, `advertised.listeners`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};

use super::properties::Properties;
use super::sasl::{InterBrokerSasl, SaslConfig};
use super::ssl::SslConfig;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("listeners", "PLAINTEXT://:9092"),
    ("advertised.listeners", ""),
    ("inter.broker.listener.name", ""),
    // Kafka's default is PLAINTEXT; empty here means "not given", so that
    // the first listener serves when neither is set.
    ("security.inter.broker.protocol", ""),
    ("listener.security.protocol.map", ""),
];

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn parse(text: &str) -> Option<SecurityProtocol> {
        match text {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// A listener such as `PLAINTEXT://127.0.0.1:9092`. An empty host binds every interface.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Its name's protocol in `listener.security.protocol.map` (a listener
    /// named after a protocol needs no entry).
    pub security_protocol: SecurityProtocol,
    /// Its TLS settings, for SSL and SASL_SSL listeners.
    pub ssl: Option<SslConfig>,
    /// Its SASL settings, for SASL_PLAINTEXT and SASL_SSL listeners.
    pub sasl: Option<SaslConfig>,
}

impl Listener {
    /// `NAME://host:port`, with the protocol `NAME` maps to in `protocols`.
    fn parse(text: &str, protocols: &BTreeMap<String, String>) -> anyhow::Result<Listener> {
        let (name, address) = text
            .split_once("://")
            .with_context(|| format!("listener {text:?} lacks NAME://"))?;
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("listener {text:?} lacks :PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse()
            .with_context(|| format!("listener {text:?} has a bad port"))?;
        let protocol = protocols.get(name).map_or(name, String::as_str);
        let Some(security_protocol) = SecurityProtocol::parse(protocol) else {
            bail!("listener {name} has no security protocol: map it with listener.security.protocol.map (e.g. {name}:PLAINTEXT)");
        };
        Ok(Listener {
            name: name.to_string(),
            host: host.to_string(),
            port,
            security_protocol,
            ssl: None,
            sasl: None,
        })
    }

    /// The address to bind: an empty host means every interface.
    pub fn bind_address(&self) -> String {
        bind_address(&self.host, self.port)
    }
}

/// `host:port` to bind (`[host]:port` for IPv6); an empty host means every
/// interface.
pub(super) fn bind_address(host: &str, port: u16) -> String {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The listeners section, checked.
pub(super) struct Listeners {
    pub(super) listeners: Vec<Listener>,
    pub(super) advertised: Vec<Listener>,
    pub(super) inter_broker: String,
    pub(super) inter_broker_sasl: Option<InterBrokerSasl>,
}

impl Listeners {
    pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<Listeners> {
        let protocols = parse_protocol_map(properties.text("listener.security.protocol.map"))?;
        let parse = |key: &str| {
            properties
                .list(key)
                .into_iter()
                .map(|text| Listener::parse(text, &protocols))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let mut listeners = parse("listeners")?;
        if listeners.is_empty() {
            bail!("listeners is empty")
        }
        let mut names = BTreeSet::new();
        for listener in &listeners {
            if !names.insert(listener.name.as_str()) {
                bail!("listeners names {} twice", listener.name);
            }
        }
        for listener in &mut listeners {
            if matches!(
                listener.security_protocol,
                SecurityProtocol::Ssl | SecurityProtocol::SaslSsl
            ) {
                listener.ssl = Some(SslConfig::from_properties(properties, &listener.name)?);
            }
            if matches!(
                listener.security_protocol,
                SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
            ) {
                listener.sasl = Some(SaslConfig::from_properties(properties, &listener.name)?);
            }
        }
        let advertised_given = parse("advertised.listeners")?;
        if let Some(unknown) = advertised_given
            .iter()
            .find(|a| !listeners.iter().any(|l| l.name == a.name))
        {
            bail!(
                "advertised.listeners names {}, which is not in listeners",
                unknown.name
            );
        }
        let advertised = listeners
            .iter()
            .map(|listener| {
                match advertised_given.iter().find(|a| a.name == listener.name) {
                    Some(advertised) => advertised.clone(),
                    // Kafka advertises the canonical host name; a quick start on one
                    // machine is better served by localhost.
                    None if listener.host.is_empty() || listener.host == "0.0.0.0" => Listener {
                        host: "localhost".into(),
                        ..listener.clone()
                    },
                    None => listener.clone(),
                }
            })
            .collect();
        let inter_broker = match properties.text("inter.broker.listener.name") {
            // `security.inter.broker.protocol`: the listener of that name,
            // as Kafka reads it (names and protocols coincide then).
            "" => match properties.text("security.inter.broker.protocol") {
                "" => listeners[0].name.clone(),
                protocol => listeners
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(protocol))
                    .map(|l| l.name.clone())
                    .with_context(|| {
                        format!("security.inter.broker.protocol={protocol}: no listener named {protocol}")
                    })?,
            },
            name if listeners.iter().any(|l| l.name == name) => name.to_string(),
            name => bail!("inter.broker.listener.name={name} is not in listeners"),
        };
        let inter_broker_sasl = match listeners
            .iter()
            .find(|l| l.name == inter_broker)
            .and_then(|l| l.sasl.as_ref())
        {
            Some(sasl) => Some(InterBrokerSasl::from_properties(
                properties,
                &inter_broker,
                sasl,
            )?),
            None => None,
        };
        Ok(Listeners {
            listeners,
            advertised,
            inter_broker,
            inter_broker_sasl,
        })
    }
}

/// `NAME:PROTOCOL,...`
fn parse_protocol_map(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, protocol) = entry.split_once(':').with_context(|| {
                format!("listener.security.protocol.map entry {entry:?} is not NAME:PROTOCOL")
            })?;
            Ok((
                name.trim().to_string(),
                protocol.trim().to_ascii_uppercase(),
            ))
        })
        .collect()
}
