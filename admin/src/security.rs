//! `--command-config FILE`: Kafka's client properties for the admin tool's
//! connections — `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT,
//! SASL_SSL), `sasl.mechanism` and `sasl.jaas.config` (PLAIN or SCRAM
//! login module with `username` and `password`), `ssl.truststore.location`
//! or `ssl.truststore.certificates` (PEM), and for mTLS
//! `ssl.keystore.location` (PEM: an unencrypted key and its chain).
//! Errors name the property, never a secret's value.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use client::sasl::{Credentials, Mechanism};
use client::Security;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The connections' security from a properties file.
pub(crate) fn from_file(path: &Path) -> anyhow::Result<Security> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--command-config {}", path.display()))?;
    from_properties(&client::properties::parse(&text))
        .with_context(|| format!("--command-config {}", path.display()))
}

fn from_properties(properties: &BTreeMap<String, String>) -> anyhow::Result<Security> {
    let get = |key: &str| get(properties, key);
    let protocol = match get("security.protocol") {
        "" => "PLAINTEXT",
        protocol => protocol,
    };
    let (tls, sasl) = match protocol.to_ascii_uppercase().as_str() {
        "PLAINTEXT" => (false, false),
        "SSL" => (true, false),
        "SASL_PLAINTEXT" => (false, true),
        "SASL_SSL" => (true, true),
        other => bail!("security.protocol={other}: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    };
    let mut security = if tls {
        Security::tls(Arc::new(tls_config(properties)?))
    } else {
        Security::plaintext()
    };
    if sasl {
        let mechanism = match get("sasl.mechanism") {
            "" => bail!("sasl.mechanism is not set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
            name => Mechanism::from_name(name).ok_or_else(|| {
                anyhow!("sasl.mechanism={name}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
            })?,
        };
        let (_, options) =
            client::jaas::parse(get("sasl.jaas.config")).context("sasl.jaas.config")?;
        let option = |name: &str| {
            options
                .iter()
                .find(|(option, _)| option == name)
                .map(|(_, value)| value.clone())
                .with_context(|| format!("sasl.jaas.config has no {name}=\"...\""))
        };
        security = security.with_sasl(Credentials::new(
            mechanism,
            option("username")?,
            option("password")?,
        ));
    }
    Ok(security)
}

/// A property's value; "" when not given.
fn get<'a>(properties: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    properties.get(key).map_or("", String::as_str)
}

fn tls_config(properties: &BTreeMap<String, String>) -> anyhow::Result<rustls::ClientConfig> {
    let get = |key: &str| get(properties, key);
    for (key, wanted) in [("ssl.truststore.type", "PEM"), ("ssl.keystore.type", "PEM")] {
        let given = get(key);
        if !given.is_empty() && !given.eq_ignore_ascii_case(wanted) {
            bail!("{key}={given}: kbroker admin reads PEM files");
        }
    }
    let trusted = match (
        get("ssl.truststore.location"),
        get("ssl.truststore.certificates"),
    ) {
        ("", "") => bail!("ssl.truststore.location (a PEM file of CA certificates) is not set"),
        ("", inline) => certificates(inline, "ssl.truststore.certificates")?,
        (path, _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("ssl.truststore.location {path}"))?;
            certificates(&text, path)?
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in trusted {
        roots
            .add(certificate)
            .context("ssl.truststore: a certificate is not a valid trust anchor")?;
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots);
    match get("ssl.keystore.location") {
        "" => Ok(builder.with_no_client_auth()),
        path => {
            if !get("ssl.key.password").is_empty() {
                bail!("ssl.key.password: kbroker admin reads unencrypted keys only");
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("ssl.keystore.location {path}"))?;
            let chain = certificates(&text, path)?;
            let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|error| {
                anyhow!("ssl.keystore.location {path}: no private key: {error}")
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("ssl.keystore.location: the key does not fit the certificate")
        }
    }
}

fn certificates(text: &str, name: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{name}: not PEM certificates: {error}"))?;
    if chain.is_empty() {
        bail!("{name}: no certificate in it");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_make_the_connection_s_security() {
        let properties = client::properties::parse(
            "# a comment\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  \
             username=\"alice\" password=\"hunter2\";\n",
        );
        let security = from_properties(&properties).unwrap();
        assert_eq!(security.protocol(), "SASL_PLAINTEXT");
        let missing = BTreeMap::from([
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.mechanism".to_string(), "PLAIN".to_string()),
        ]);
        let error = format!("{:#}", from_properties(&missing).unwrap_err());
        assert!(error.contains("ssl.truststore.location"), "{error}");
        let bad = BTreeMap::from([
            (
                "security.protocol".to_string(),
                "SASL_PLAINTEXT".to_string(),
            ),
            ("sasl.mechanism".to_string(), "PLAIN".to_string()),
            (
                "sasl.jaas.config".to_string(),
                "x.Y required username=\"a\" password=\"hunter2".to_string(),
            ),
        ]);
        let error = format!("{:#}", from_properties(&bad).unwrap_err());
        assert!(!error.contains("hunter2"), "{error}");
    }
}
