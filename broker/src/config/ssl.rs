//! TLS on listeners (`ssl.*`), each property also settable for one
//! listener as `listener.name.<listener, lower case>.ssl.*` (KIP-103), and
//! PEM material as Kafka's KIP-651 has it: a keystore file holding the
//! private key and the certificate chain, or both inline; a truststore file
//! or inline certificates. The files are read when the broker starts (see
//! `crate::tls`); here they are only named.

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("ssl.keystore.type", "JKS"),
    ("ssl.keystore.location", ""),
    ("ssl.keystore.key", ""),
    ("ssl.keystore.certificate.chain", ""),
    ("ssl.key.password", ""),
    ("ssl.truststore.type", "JKS"),
    ("ssl.truststore.location", ""),
    ("ssl.truststore.certificates", ""),
    ("ssl.client.auth", "none"),
    ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
];

/// Whether a property holds a secret: never shown by DescribeConfigs nor
/// logged (Kafka's PASSWORD type).
pub fn is_sensitive(key: &str) -> bool {
    key.ends_with(".password")
        || key.ends_with("ssl.keystore.key")
        || key.ends_with("sasl.jaas.config")
}

/// A secret from the configuration: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: String) -> Secret {
        Secret(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([hidden])")
    }
}

/// Where PEM material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file (`*.location`), read at start, named in errors by `property`.
    File { property: String, path: PathBuf },
    /// The PEM text itself (`ssl.keystore.key`, `*.certificate.chain`,
    /// `ssl.truststore.certificates`).
    Inline { property: String, text: Secret },
}

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// TLS versions of `ssl.enabled.protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// One listener's TLS settings.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// The private key and its certificate chain: one file, or two inline
    /// values (key, chain).
    pub keystore: Keystore,
    /// `ssl.key.password`: decrypts an encrypted PKCS#8 key.
    pub key_password: Option<Secret>,
    /// The certificates client certificates are checked against.
    pub truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    pub enabled_protocols: Vec<TlsVersion>,
}

#[derive(Debug, Clone)]
pub enum Keystore {
    File(Pem),
    Inline { key: Pem, chain: Pem },
}

impl SslConfig {
    /// The TLS settings of `listener` (its `listener.name.<l>.` values over
    /// the plain ones).
    pub(super) fn from_properties(
        properties: &Properties,
        listener: &str,
    ) -> anyhow::Result<SslConfig> {
        let get = |key: &str| properties.for_listener(listener, key);
        let named = |key: &str| properties.listener_key_name(listener, key);
        for (kind, location) in [
            ("ssl.keystore.type", "ssl.keystore.location"),
            ("ssl.truststore.type", "ssl.truststore.location"),
        ] {
            let (_, type_text) = get(kind);
            let given = !get(location).1.is_empty()
                || (kind == "ssl.keystore.type" && !get("ssl.keystore.key").1.is_empty())
                || (kind == "ssl.truststore.type"
                    && !get("ssl.truststore.certificates").1.is_empty());
            if given && !type_text.eq_ignore_ascii_case("PEM") {
                bail!(
                    "{}={type_text}: only PEM keystores and truststores are supported (KIP-651); set {}=PEM",
                    named(kind),
                    named(kind)
                );
            }
        }
        let file = |key: &str| {
            let (property, path) = get(key);
            (!path.is_empty()).then(|| Pem::File {
                property,
                path: PathBuf::from(path),
            })
        };
        let inline = |key: &str| {
            let (property, text) = get(key);
            (!text.is_empty()).then(|| Pem::Inline {
                property,
                text: Secret(text.to_string()),
            })
        };
        let keystore = match (
            file("ssl.keystore.location"),
            inline("ssl.keystore.key"),
            inline("ssl.keystore.certificate.chain"),
        ) {
            (Some(file), None, None) => Keystore::File(file),
            (None, Some(key), Some(chain)) => Keystore::Inline { key, chain },
            (None, None, None) => bail!(
                "listener {listener} uses SSL but has no keystore: set {} (a PEM file with the private key and the certificate chain), or {} and {}",
                named("ssl.keystore.location"),
                named("ssl.keystore.key"),
                named("ssl.keystore.certificate.chain")
            ),
            _ => bail!(
                "listener {listener}: give either {} or both {} and {}",
                named("ssl.keystore.location"),
                named("ssl.keystore.key"),
                named("ssl.keystore.certificate.chain")
            ),
        };
        let truststore = match (
            file("ssl.truststore.location"),
            inline("ssl.truststore.certificates"),
        ) {
            (Some(_), Some(_)) => bail!(
                "listener {listener}: give {} or {}, not both",
                named("ssl.truststore.location"),
                named("ssl.truststore.certificates")
            ),
            (file, inline) => file.or(inline),
        };
        let client_auth = match get("ssl.client.auth").1 {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            other => bail!(
                "{}={other:?}: none, requested or required",
                named("ssl.client.auth")
            ),
        };
        if client_auth != ClientAuth::None && truststore.is_none() {
            bail!(
                "{} needs a truststore to check client certificates against: set {} or {}",
                named("ssl.client.auth"),
                named("ssl.truststore.location"),
                named("ssl.truststore.certificates")
            );
        }
        let mut enabled_protocols = Vec::new();
        for protocol in get("ssl.enabled.protocols").1.split(',').map(str::trim) {
            match protocol {
                "" => {}
                "TLSv1.2" => enabled_protocols.push(TlsVersion::V1_2),
                "TLSv1.3" => enabled_protocols.push(TlsVersion::V1_3),
                other => bail!(
                    "{}: {other} is not supported (TLSv1.2 and TLSv1.3 are)",
                    named("ssl.enabled.protocols")
                ),
            }
        }
        if enabled_protocols.is_empty() {
            bail!("{} is empty", named("ssl.enabled.protocols"));
        }
        let key_password = Some(get("ssl.key.password").1)
            .filter(|password| !password.is_empty())
            .map(|password| Secret(password.to_string()));
        Ok(SslConfig {
            keystore,
            key_password,
            truststore,
            client_auth,
            enabled_protocols,
        })
    }
}
