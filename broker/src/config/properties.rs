//! The one reader of broker properties: every known key with Kafka's
//! default (each section's table), the given values over them, and typed
//! getters whose errors name the key.

use std::collections::BTreeMap;
use std::fmt::Display;

use anyhow::{bail, Context};

/// Keys accepted as synonyms of known ones.
const ALIASES: &[(&str, &str)] = &[("broker.id", "node.id")];

/// Properties Kafka knows that we accept and ignore (so common server.properties files load).
const IGNORED: &[&str] = &[
    "process.roles",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
    "num.network.threads",
    "num.io.threads",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "num.recovery.threads.per.data.dir",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
];

/// Known properties with their values: Kafka's defaults, with what was
/// given over them.
pub(super) struct Properties {
    values: BTreeMap<String, String>,
    /// The known properties that were given (Kafka's STATIC_BROKER_CONFIG),
    /// by canonical name.
    pub(super) explicit: BTreeMap<String, String>,
}

/// Kafka's per-listener prefix (KIP-103): `listener.name.<listener>.<key>`.
const LISTENER_PREFIX: &str = "listener.name.";

/// Keys that may also be set for one listener.
fn per_listener(key: &str) -> bool {
    key.starts_with("ssl.") || key == "sasl.enabled.mechanisms"
}

/// Keys that exist only for one listener (a mechanism's JAAS config).
fn only_per_listener(key: &str) -> bool {
    key.ends_with(".sasl.jaas.config") && !key.contains("listener.name.")
}

impl Properties {
    /// `given` over the defaults of `known`; unknown keys are logged and
    /// dropped.
    pub(super) fn new<'a>(
        known: impl IntoIterator<Item = &'a (&'static str, &'static str)>,
        given: BTreeMap<String, String>,
    ) -> Properties {
        let mut values: BTreeMap<String, String> = known
            .into_iter()
            .map(|(key, value)| ((*key).to_string(), (*value).to_string()))
            .collect();
        let mut explicit = BTreeMap::new();
        let mut listener_values = BTreeMap::new();
        for (key, value) in given {
            let key = ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map_or(key, |(_, name)| (*name).to_string());
            if let Some(slot) = values.get_mut(&key) {
                explicit.insert(key.clone(), value.clone());
                *slot = value;
            } else if let Some(listener_key) = key
                .strip_prefix(LISTENER_PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .map(|(_, listener_key)| listener_key)
                .filter(|listener_key| {
                    (per_listener(listener_key) && values.contains_key(*listener_key))
                        || only_per_listener(listener_key)
                })
            {
                tracing::debug!(%key, known = listener_key, "per-listener configuration");
                explicit.insert(key.clone(), value.clone());
                listener_values.insert(key, value);
            } else if IGNORED.contains(&key.as_str()) {
                tracing::debug!(%key, "configuration accepted and ignored");
            } else {
                tracing::warn!(%key, "the configuration was supplied but isn't a known config");
            }
        }
        values.extend(listener_values);
        Properties { values, explicit }
    }

    /// `key` for `listener`: its `listener.name.<listener>.<key>` value if
    /// given, else the plain one; with the name of the property it came from.
    pub(super) fn for_listener(&self, listener: &str, key: &str) -> (String, &str) {
        let name = self.listener_key_name(listener, key);
        debug_assert!(
            self.values.contains_key(&name) || only_per_listener(key),
            "{key} is in no section's table"
        );
        let value = self.values.get(&name).map_or("", String::as_str);
        (name, value)
    }

    /// The property that sets `key` for `listener` (for messages).
    pub(super) fn listener_key_name(&self, listener: &str, key: &str) -> String {
        let specific = format!("{LISTENER_PREFIX}{}.{key}", listener.to_ascii_lowercase());
        if self.values.contains_key(&specific) {
            specific
        } else {
            key.to_string()
        }
    }

    /// The value as given (or the default); `""` for an unset optional one.
    pub(super) fn text(&self, key: &str) -> &str {
        debug_assert!(
            self.values.contains_key(key),
            "{key} is in no section's table"
        );
        self.values.get(key).map_or("", String::as_str)
    }

    /// A comma-separated list, items trimmed, empty ones dropped.
    pub(super) fn list(&self, key: &str) -> Vec<&str> {
        self.text(key)
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .collect()
    }

    /// An integer that fits `T`.
    pub(super) fn int<T: TryFrom<i64>>(&self, key: &str) -> anyhow::Result<T> {
        let value = self.i64(key)?;
        T::try_from(value)
            .ok()
            .with_context(|| format!("{key}={value} is out of range"))
    }

    /// An integer, or `None` where the property is unset (empty).
    pub(super) fn optional_int(&self, key: &str) -> anyhow::Result<Option<i64>> {
        if self.text(key).is_empty() {
            Ok(None)
        } else {
            self.i64(key).map(Some)
        }
    }

    /// A positive integer that fits `T`.
    pub(super) fn positive<T: TryFrom<i64>>(&self, key: &str) -> anyhow::Result<T> {
        let value = self.i64(key)?;
        if value <= 0 {
            bail!("{key} must be positive, got {value}");
        }
        T::try_from(value)
            .ok()
            .with_context(|| format!("{key}={value} is out of range"))
    }

    /// An integer in `range`.
    pub(super) fn int_in<T>(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> anyhow::Result<T>
    where
        T: TryFrom<i64> + PartialOrd + Display,
    {
        let value: T = self.int(key)?;
        if !range.contains(&value) {
            bail!(
                "{key} must be {} to {}, got {value}",
                range.start(),
                range.end()
            );
        }
        Ok(value)
    }

    pub(super) fn bool(&self, key: &str) -> anyhow::Result<bool> {
        let text = self.text(key);
        match text.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => bail!("{key}={text:?} is not true or false"),
        }
    }

    fn i64(&self, key: &str) -> anyhow::Result<i64> {
        let text = self.text(key);
        text.parse::<i64>()
            .with_context(|| format!("{key}={text:?} is not a number"))
    }
}
