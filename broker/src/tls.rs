//! TLS for SSL listeners: the rustls server configuration built from a
//! listener's PEM material (`config::SslConfig`), read once when the
//! broker starts. Every error names the property and the file it came from:
//! a listener that cannot have its TLS never falls back to plaintext.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientAuth, Keystore, Pem, Secret, SslConfig, TlsVersion};

const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// The TLS server configuration of listener `listener`.
pub(crate) fn server_config(listener: &str, ssl: &SslConfig) -> anyhow::Result<Arc<ServerConfig>> {
    // ring, not aws-lc-rs: no cmake or C++ toolchain to build. (rustls
    // deprecates it for lacking post-quantum key exchange.)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = ssl
        .enabled_protocols
        .iter()
        .map(|version| match version {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("ssl.enabled.protocols")?;
    let (chain, key, keystore_name) = match &ssl.keystore {
        Keystore::File(pem) => {
            let (text, name) = read(pem)?;
            let chain = certificates(&text, &name)?;
            let key = private_key(&text, &name, ssl.key_password.as_ref())?;
            (chain, key, name)
        }
        Keystore::Inline { key, chain } => {
            let (key_text, key_name) = read(key)?;
            let (chain_text, chain_name) = read(chain)?;
            let chain = certificates(&chain_text, &chain_name)?;
            let key = private_key(&key_text, &key_name, ssl.key_password.as_ref())?;
            (chain, key, key_name)
        }
    };
    let builder = match ssl.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let Some(truststore) = &ssl.truststore else {
                bail!("listener {listener}: ssl.client.auth needs a truststore");
            };
            let (text, name) = read(truststore)?;
            let mut roots = RootCertStore::empty();
            for certificate in certificates(&text, &name)? {
                roots.add(certificate).with_context(|| {
                    format!("{name}: a certificate is not a valid trust anchor")
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if ssl.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .with_context(|| format!("{name}: no usable trust anchor"))?,
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        anyhow!("{keystore_name}: the private key does not fit the certificate chain: {error}")
    })?;
    // Kafka speaks its own protocol inside TLS; no ALPN.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// The PEM text and, for messages, `property (file)` or `property`.
fn read(pem: &Pem) -> anyhow::Result<(String, String)> {
    match pem {
        Pem::File { property, path } => {
            let name = format!("{property} ({})", path.display());
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read it"))?;
            Ok((text, name))
        }
        Pem::Inline { property, text } => Ok((text.expose().to_string(), property.clone())),
    }
}

fn certificates(text: &str, name: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow!("{name}: not PEM certificates: {error}"))?;
    if chain.is_empty() {
        bail!("{name}: no certificate (-----BEGIN CERTIFICATE-----) in it");
    }
    Ok(chain)
}

/// The private key of `text`: PKCS#8, PKCS#1 or SEC1, or encrypted PKCS#8
/// decrypted with `ssl.key.password`.
fn private_key(
    text: &str,
    name: &str,
    password: Option<&Secret>,
) -> anyhow::Result<PrivateKeyDer<'static>> {
    if let Some(encrypted) = pem_block(text, ENCRYPTED_KEY_LABEL) {
        let Some(password) = password else {
            bail!("{name}: the private key is encrypted; set ssl.key.password");
        };
        let (_, der) = pkcs8::der::pem::decode_vec(encrypted.as_bytes())
            .map_err(|error| anyhow!("{name}: the encrypted private key is not PEM: {error}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|error| anyhow!("{name}: the encrypted private key is not PKCS#8: {error}"))?;
        // The error says nothing of the password (it may be wrong).
        let decrypted = info.decrypt(password.expose().as_bytes()).map_err(|_| {
            anyhow!("{name}: the private key cannot be decrypted with ssl.key.password")
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            decrypted.as_bytes().to_vec(),
        )));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|error| {
        anyhow!("{name}: no private key (PKCS#8, PKCS#1 or SEC1 PEM) in it: {error}")
    })
}

/// The first PEM block labelled `label` in `text`, armour included.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}
