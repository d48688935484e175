//! TLS for SSL listeners: the rustls server configuration built from a
//! listener's PEM or PKCS#12 material (`config::SslConfig`). Every error names the
//! property and the file it came from: a listener that cannot have its TLS
//! never falls back to plaintext.
//!
//! Files replaced in place are picked up without a restart: before each
//! handshake the listener compares the files' modification times and sizes
//! with those it loaded from, and loads them again if they differ.
//! Connections already open keep the material they shook hands with; new
//! material that does not load is logged and the old one stays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context};
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, Keystore, Pem, PrincipalRule, Secret, SslConfig, TlsVersion};

const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// The TLS server configuration of listener `listener`.
pub(crate) fn server_config(listener: &str, ssl: &SslConfig) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(ssl))
        .context("ssl.enabled.protocols")?;
    let keystore_name = match &ssl.keystore {
        Keystore::File(pem) | Keystore::Inline { key: pem, .. } => pem_name(pem),
    };
    let (chain, key) = keystore(ssl)?;
    let builder = match ssl.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let Some(truststore) = &ssl.truststore else {
                bail!("listener {listener}: ssl.client.auth needs a truststore");
            };
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(truststore)?), provider);
            let verifier = if ssl.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .with_context(|| format!("{}: no usable trust anchor", pem_name(truststore)))?,
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

/// ring, not aws-lc-rs: no cmake or C++ toolchain to build. (rustls
/// deprecates it for lacking post-quantum key exchange.)
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors of a truststore.
fn roots(truststore: &Pem) -> anyhow::Result<RootCertStore> {
    let (text, name) = read(truststore)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates(&text, &name)? {
        roots
            .add(certificate)
            .with_context(|| format!("{name}: a certificate is not a valid trust anchor"))?;
    }
    Ok(roots)
}

fn versions(ssl: &SslConfig) -> Vec<&'static rustls::SupportedProtocolVersion> {
    ssl.enabled_protocols
        .iter()
        .map(|version| match version {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

/// The keystore's certificate chain and private key.
fn keystore(
    ssl: &SslConfig,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match &ssl.keystore {
        Keystore::File(pem) => {
            let (text, name) = read(pem)?;
            let chain = certificates(&text, &name)?;
            let key = private_key(&text, &name, ssl.key_password.as_ref())?;
            Ok((chain, key))
        }
        Keystore::Inline { key, chain } => {
            let (key_text, key_name) = read(key)?;
            let (chain_text, chain_name) = read(chain)?;
            let chain = certificates(&chain_text, &chain_name)?;
            let key = private_key(&key_text, &key_name, ssl.key_password.as_ref())?;
            Ok((chain, key))
        }
    }
}

/// `property (file)` or `property`, for messages.
fn pem_name(pem: &Pem) -> String {
    match pem {
        Pem::File { property, path } | Pem::Pkcs12 { property, path, .. } => {
            format!("{property} ({})", path.display())
        }
        Pem::Inline { property, .. } => property.clone(),
    }
}

/// The PEM text and, for messages, `property (file)` or `property`. A
/// PKCS#12 store comes out as PEM too: its private key (PKCS#8) and the
/// key's certificate chain, leaf first; or, with no key in it, every
/// certificate (a truststore).
fn read(pem: &Pem) -> anyhow::Result<(String, String)> {
    let name = pem_name(pem);
    match pem {
        Pem::File { path, .. } => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read it"))?;
            Ok((text, name))
        }
        Pem::Inline { text, .. } => Ok((text.expose().to_string(), name)),
        Pem::Pkcs12 {
            property,
            path,
            password,
        } => {
            let der = std::fs::read(path).with_context(|| format!("{name}: cannot read it"))?;
            let password_property = property.replace(".location", ".password");
            Ok((
                pkcs12_as_pem(&der, password, &name, &password_property)?,
                name,
            ))
        }
    }
}

fn pkcs12_as_pem(
    der: &[u8],
    password: &Secret,
    name: &str,
    password_property: &str,
) -> anyhow::Result<String> {
    use p12_keystore::{KeyStore, KeyStoreEntry, Pkcs12ImportPolicy};
    // The error says nothing of the password (it may be wrong).
    let open = |policy| {
        KeyStore::from_pkcs12(der, password.expose(), policy).map_err(|_| {
            anyhow!("{name}: not a PKCS#12 store that its password opens (a wrong {password_property}, a damaged file, or not PKCS#12)")
        })
    };
    let mut text = String::new();
    if let Some((_, chain)) = open(Pkcs12ImportPolicy::Strict)?.private_key_chain() {
        text.push_str(&armor("PRIVATE KEY", chain.key().as_der()));
        for certificate in chain.certs() {
            text.push_str(&armor("CERTIFICATE", certificate.as_der()));
        }
        return Ok(text);
    }
    // A truststore: every certificate, whether or not it carries Java's
    // trusted-certificate attribute (openssl does not write it).
    for (_, entry) in open(Pkcs12ImportPolicy::Raw)?.entries() {
        if let KeyStoreEntry::Certificate(certificate) = entry {
            text.push_str(&armor("CERTIFICATE", certificate.as_der()));
        }
    }
    Ok(text)
}

/// DER as a PEM block.
fn armor(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
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

/// How this broker reaches the others: over TLS when its inter-broker
/// listener is SSL, trusting that listener's truststore and presenting its
/// keystore's certificate (a listener that requires client certificates
/// gets one).
pub(crate) fn inter_broker_security(
    config: &crate::config::BrokerConfig,
) -> anyhow::Result<client::Security> {
    let security = inter_broker_tls(config)?;
    Ok(match &config.inter_broker_sasl {
        None => security,
        Some(sasl) => security.with_sasl(client::sasl::Credentials::new(
            match sasl.mechanism {
                crate::config::Mechanism::Plain => client::sasl::Mechanism::Plain,
                crate::config::Mechanism::ScramSha256 => client::sasl::Mechanism::ScramSha256,
                crate::config::Mechanism::ScramSha512 => client::sasl::Mechanism::ScramSha512,
            },
            sasl.username.clone(),
            sasl.password.expose().to_string(),
        )),
    })
}

/// The TLS side of the inter-broker connections: none on PLAINTEXT and
/// SASL_PLAINTEXT.
fn inter_broker_tls(config: &crate::config::BrokerConfig) -> anyhow::Result<client::Security> {
    let Some(ssl) = config
        .listeners
        .iter()
        .find(|listener| listener.name == config.inter_broker_listener)
        .and_then(|listener| listener.ssl.as_ref())
    else {
        return Ok(client::Security::plaintext());
    };
    let name = &config.inter_broker_listener;
    let Some(truststore) = &ssl.truststore else {
        bail!("the inter-broker listener {name} is SSL: brokers check each other's certificates against its ssl.truststore.location (or .certificates), which is not set");
    };
    let roots = roots(truststore)?;
    let (chain, key) = keystore(ssl)?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(ssl))
        .context("ssl.enabled.protocols")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|error| {
            anyhow!("listener {name}: the keystore's key does not fit its certificate: {error}")
        })?;
    Ok(client::Security::tls(Arc::new(client)))
}

/// A listener's TLS configuration, reloaded when its files change, and
/// rebuilt when its `listener.name.<l>.ssl.*` dynamic broker configs
/// change (KIP-226, through AlterConfigs).
pub(crate) struct ReloadingAcceptor {
    listener: String,
    dynamic: Option<Dynamic>,
    current: Mutex<Loaded>,
}

/// Where a listener's dynamic SSL configs come from.
pub(crate) struct Dynamic {
    pub config: crate::config::BrokerConfig,
    pub store: Arc<dyn coordinator::MetadataStore>,
}

struct Loaded {
    acceptor: TlsAcceptor,
    ssl: crate::config::SslConfig,
    /// The files as they were when loaded.
    stamps: Vec<Stamp>,
    /// The dynamic configs (cluster-wide, this broker's) it was built with.
    overrides: (BTreeMap<String, String>, BTreeMap<String, String>),
}

/// A file and its modification time and size (`None`: unreadable).
type Stamp = (PathBuf, Option<(SystemTime, u64)>);

impl ReloadingAcceptor {
    /// Loads the listener's material; an error stops the broker.
    pub(crate) fn new(
        listener: &str,
        ssl: &crate::config::SslConfig,
        dynamic: Option<Dynamic>,
    ) -> anyhow::Result<ReloadingAcceptor> {
        let acceptor = ReloadingAcceptor {
            listener: listener.to_string(),
            current: Mutex::new(Loaded {
                acceptor: TlsAcceptor::from(server_config(listener, ssl)?),
                stamps: stamps(ssl),
                ssl: ssl.clone(),
                overrides: Default::default(),
            }),
            dynamic,
        };
        // Dynamic configs already set apply from the first handshake.
        acceptor.apply_dynamic(&mut acceptor.current.lock());
        Ok(acceptor)
    }

    /// Rebuilds the material if this listener's dynamic SSL configs
    /// changed; material that does not load is logged, and the last good
    /// one stays.
    fn apply_dynamic(&self, current: &mut Loaded) {
        let Some(dynamic) = &self.dynamic else {
            return;
        };
        let metadata = dynamic.store.snapshot();
        let mine = |resource: &str| -> BTreeMap<String, String> {
            metadata
                .broker_configs
                .get(resource)
                .into_iter()
                .flatten()
                .filter(|(key, _)| {
                    crate::config::dynamic_listener_ssl(key)
                        .is_some_and(|l| l.eq_ignore_ascii_case(&self.listener))
                })
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
        let overrides = (mine(""), mine(&dynamic.config.node_id.to_string()));
        if overrides == current.overrides {
            return;
        }
        current.overrides = overrides;
        let rebuilt = dynamic
            .config
            .ssl_with_dynamic(
                &self.listener,
                Some(&current.overrides.0),
                Some(&current.overrides.1),
            )
            .and_then(|ssl| Ok((server_config(&self.listener, &ssl)?, ssl)));
        match rebuilt {
            Ok((config, ssl)) => {
                tracing::info!(listener = %self.listener, "TLS settings changed by dynamic config: new connections use them");
                current.acceptor = TlsAcceptor::from(config);
                current.stamps = stamps(&ssl);
                current.ssl = ssl;
            }
            Err(error) => {
                tracing::warn!(listener = %self.listener, error = %format!("{error:#}"), "TLS settings changed by dynamic config do not load: keeping the previous ones");
            }
        }
    }

    /// The principal of a client that completed its handshake: its
    /// certificate's subject (RFC 2253) through `ssl.principal.mapping.rules`,
    /// or `User:ANONYMOUS` without a certificate. An error (no rule applies,
    /// an unreadable subject) closes the connection.
    pub(crate) fn principal(
        &self,
        connection: &rustls::ServerConnection,
    ) -> Result<String, String> {
        let Some(certificate) = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
        else {
            return Ok(crate::principal::ANONYMOUS.to_string());
        };
        let subject = subject_name(certificate)?;
        let rules = self.current.lock().ssl.principal_rules.clone();
        match PrincipalRule::map(&rules, &subject) {
            Some(name) => Ok(crate::principal::user(&name)),
            None => Err(format!(
                "no ssl.principal.mapping.rules rule applies to {subject:?}"
            )),
        }
    }

    /// The acceptor for the next handshake, with the files as they are now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let mut current = self.current.lock();
        self.apply_dynamic(&mut current);
        let now = stamps(&current.ssl);
        if now != current.stamps {
            // Tried once per change: a bad file is not read again until it
            // changes again.
            current.stamps = now;
            match server_config(&self.listener, &current.ssl) {
                Ok(config) => {
                    tracing::info!(listener = %self.listener, "TLS material changed on disk: new connections use it");
                    current.acceptor = TlsAcceptor::from(config);
                }
                Err(error) => {
                    tracing::warn!(listener = %self.listener, error = %format!("{error:#}"), "TLS material changed on disk but does not load: keeping the previous one");
                }
            }
        }
        current.acceptor.clone()
    }
}

/// The modification time and size of each file the listener reads.
fn stamps(ssl: &crate::config::SslConfig) -> Vec<Stamp> {
    let mut files: Vec<&Pem> = Vec::new();
    match &ssl.keystore {
        Keystore::File(pem) => files.push(pem),
        Keystore::Inline { key, chain } => files.extend([key, chain]),
    }
    files.extend(&ssl.truststore);
    files
        .into_iter()
        .filter_map(|pem| match pem {
            Pem::File { path, .. } | Pem::Pkcs12 { path, .. } => Some(path.clone()),
            Pem::Inline { .. } => None,
        })
        .map(|path| {
            let stamp = std::fs::metadata(&path)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len())));
            (path, stamp)
        })
        .collect()
}

/// A certificate's subject as RFC 2253 writes it (`CN=alice,O=example`).
fn subject_name(certificate: &CertificateDer<'_>) -> Result<String, String> {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(certificate.as_ref())
        .map(|certificate| certificate.tbs_certificate.subject.to_string())
        .map_err(|error| format!("the client certificate does not parse: {error}"))
}
