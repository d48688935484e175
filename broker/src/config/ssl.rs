//! TLS on listeners (`ssl.*`), each property also settable for one
//! listener as `listener.name.<listener, lower case>.ssl.*` (KIP-103), and
//! PEM material as Kafka's KIP-651 has it: a keystore file holding the
//! private key and the certificate chain, or both inline; a truststore file
//! or inline certificates. PKCS#12 stores (`ssl.keystore.type=PKCS12`, with
//! `ssl.keystore.password`; truststores likewise) are read too. The files
//! are read when the broker starts (see `crate::tls`); here they are only
//! named.

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
    ("ssl.keystore.password", ""),
    ("ssl.truststore.type", "JKS"),
    ("ssl.truststore.location", ""),
    ("ssl.truststore.password", ""),
    ("ssl.truststore.certificates", ""),
    ("ssl.client.auth", "none"),
    ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
    ("ssl.principal.mapping.rules", "DEFAULT"),
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

/// Where key or certificate material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file (`*.location`), read at start, named in errors by
    /// `property`.
    File { property: String, path: PathBuf },
    /// The PEM text itself (`ssl.keystore.key`, `*.certificate.chain`,
    /// `ssl.truststore.certificates`).
    Inline { property: String, text: Secret },
    /// A PKCS#12 file (`*.type=PKCS12`), opened with the store's password
    /// (`ssl.keystore.password`, `ssl.truststore.password`).
    Pkcs12 {
        property: String,
        path: PathBuf,
        password: Secret,
    },
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
    /// `ssl.principal.mapping.rules`: a client certificate's subject
    /// (RFC 2253) to the principal's name.
    pub principal_rules: Vec<PrincipalRule>,
}

/// One rule of `ssl.principal.mapping.rules`, as Kafka's
/// `SslPrincipalMapper` has them.
#[derive(Debug, Clone)]
pub enum PrincipalRule {
    /// The whole distinguished name.
    Default,
    /// `RULE:pattern/replacement/[LU]`: applies when the pattern matches the
    /// whole name.
    Rule {
        pattern: regex::Regex,
        replacement: String,
        case: Option<Case>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

impl PrincipalRule {
    /// Parses Kafka's rules: `DEFAULT` and `RULE:p/r/[LU]` separated by
    /// commas, where a pattern and a replacement may hold commas (and
    /// `\/` for a slash).
    pub fn parse_all(text: &str) -> Result<Vec<PrincipalRule>, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(PrincipalRule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) =
                    until_slash(after).ok_or("a RULE without its '/' after the pattern")?;
                let (replacement, after) =
                    until_slash(after).ok_or("a RULE without its '/' after the replacement")?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Some(Case::Lower), &after[1..]),
                    Some('U') => (Some(Case::Upper), &after[1..]),
                    _ => (None, after),
                };
                let pattern = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|error| format!("the pattern {pattern:?}: {error}"))?;
                rules.push(PrincipalRule::Rule {
                    pattern,
                    // Java's `$1` is `${1}` here (`$1a` would name group "1a").
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "{rest:?} is neither DEFAULT nor RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("{rest:?} follows a rule without a comma")),
            }
        }
        Ok(rules)
    }

    /// The principal name of `distinguished_name`, by the first rule that
    /// applies; `None` if none does.
    pub fn map(rules: &[PrincipalRule], distinguished_name: &str) -> Option<String> {
        rules.iter().find_map(|rule| match rule {
            PrincipalRule::Default => Some(distinguished_name.to_string()),
            PrincipalRule::Rule {
                pattern,
                replacement,
                case,
            } => {
                if !pattern.is_match(distinguished_name) {
                    return None;
                }
                let name = pattern
                    .replace(distinguished_name, replacement.as_str())
                    .into_owned();
                Some(match case {
                    Some(Case::Lower) => name.to_lowercase(),
                    Some(Case::Upper) => name.to_uppercase(),
                    None => name,
                })
            }
        })
    }
}

/// The text up to the next unescaped `/` (a `\/` is a slash), and what
/// follows that slash.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &text[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn java_replacement(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut group = String::new();
            while let Some(digit) = chars.peek().copied().filter(char::is_ascii_digit) {
                group.push(digit);
                chars.next();
            }
            out.push_str(&format!("${{{group}}}"));
        } else {
            out.push(c);
        }
    }
    out
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
        // Per store: PEM (KIP-651), or PKCS12 and the password that opens
        // it; JKS is refused by name.
        let pkcs12_password = |kind: &str,
                               location: &str,
                               inline_key: &str,
                               password_key: &str|
         -> anyhow::Result<Option<Secret>> {
            let (_, type_text) = get(kind);
            let inline_given = !get(inline_key).1.is_empty();
            if (get(location).1.is_empty() && !inline_given)
                || type_text.eq_ignore_ascii_case("PEM")
            {
                return Ok(None);
            }
            if !type_text.eq_ignore_ascii_case("PKCS12") {
                bail!(
                    "{}={type_text}: PEM (KIP-651) and PKCS12 keystores and truststores are supported, JKS is not; set {}=PEM or PKCS12 (keytool -importkeystore -deststoretype PKCS12 converts a JKS store)",
                    named(kind),
                    named(kind)
                );
            }
            if inline_given {
                bail!(
                    "{} is PEM text; with {}=PKCS12 give {}",
                    named(inline_key),
                    named(kind),
                    named(location)
                );
            }
            let (property, password) = get(password_key);
            if password.is_empty() {
                bail!("{property} is not set: a PKCS12 store is opened with its password");
            }
            Ok(Some(Secret(password.to_string())))
        };
        let keystore_password = pkcs12_password(
            "ssl.keystore.type",
            "ssl.keystore.location",
            "ssl.keystore.key",
            "ssl.keystore.password",
        )?;
        let truststore_password = pkcs12_password(
            "ssl.truststore.type",
            "ssl.truststore.location",
            "ssl.truststore.certificates",
            "ssl.truststore.password",
        )?;
        let file = |key: &str, pkcs12: &Option<Secret>| {
            let (property, path) = get(key);
            let path = PathBuf::from(path);
            (!path.as_os_str().is_empty()).then(|| match pkcs12 {
                Some(password) => Pem::Pkcs12 {
                    property,
                    path,
                    password: password.clone(),
                },
                None => Pem::File { property, path },
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
            file("ssl.keystore.location", &keystore_password),
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
            file("ssl.truststore.location", &truststore_password),
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
        let (rules_key, rules) = get("ssl.principal.mapping.rules");
        let principal_rules = PrincipalRule::parse_all(rules)
            .map_err(|error| anyhow::anyhow!("{rules_key}: {error}"))?;
        Ok(SslConfig {
            keystore,
            key_password,
            truststore,
            client_auth,
            enabled_protocols,
            principal_rules,
        })
    }
}

/// The SSL settings Kafka lets an operator change at run time for one
/// listener (KIP-226), as `listener.name.<listener>.<key>`; those of them
/// this broker reads (JSSE names are not).
const DYNAMIC_SSL: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "ssl.key.password",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
];

/// Security settings Kafka accepts at run time that have no effect here
/// (no Kerberos, no OAUTHBEARER login): accepted and described, as Kafka
/// accepts them.
const DYNAMIC_WITHOUT_EFFECT: &[&str] = &[
    "sasl.kerberos.service.name",
    "sasl.kerberos.kinit.cmd",
    "sasl.kerberos.ticket.renew.window.factor",
    "sasl.kerberos.ticket.renew.jitter",
    "sasl.kerberos.min.time.before.relogin",
    "sasl.kerberos.principal.to.local.rules",
    "sasl.login.refresh.window.factor",
    "sasl.login.refresh.window.jitter",
    "sasl.login.refresh.min.period.seconds",
    "sasl.login.refresh.buffer.seconds",
];

/// The listener whose SSL setting `key` (`listener.name.<l>.ssl.*`)
/// changes at run time, if it is one.
pub fn dynamic_listener_ssl(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("listener.name.")?;
    let (listener, setting) = rest.split_once('.')?;
    DYNAMIC_SSL.contains(&setting).then_some(listener)
}

/// Whether `key` is a security setting that may change at run time.
pub fn is_dynamic_security_config(key: &str) -> bool {
    dynamic_listener_ssl(key).is_some() || DYNAMIC_WITHOUT_EFFECT.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(rules: &str, dn: &str) -> Option<String> {
        PrincipalRule::map(&PrincipalRule::parse_all(rules).unwrap(), dn)
    }

    #[test]
    fn principal_mapping_rules_read_and_apply_as_kafkas() {
        let dn = "CN=alice,OU=eng,O=kbroker tests\\, inc,C=GB";
        assert_eq!(mapped("DEFAULT", dn).as_deref(), Some(dn));
        // A pattern with commas, as the Kafka docs write it.
        assert_eq!(
            mapped("RULE:^CN=([^,]+).*$/$1/,DEFAULT", dn).as_deref(),
            Some("alice")
        );
        assert_eq!(
            mapped("RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/U, DEFAULT", dn).as_deref(),
            Some("ALICE@ENG")
        );
        // The first rule that matches the whole name wins; none: no principal.
        assert_eq!(
            mapped("RULE:^CN=bob,.*$/bob/, RULE:^CN=(a.*?),.*/$1x/L", dn).as_deref(),
            Some("alicex")
        );
        assert_eq!(mapped("RULE:^CN=bob$/bob/", dn), None);
        assert_eq!(
            mapped("RULE:^CN=([^,]+)/$1/", dn),
            None,
            "a pattern must match all of the name"
        );
        // An escaped slash.
        assert_eq!(
            mapped("RULE:^CN=([^,]+),.*$/users\\/$1/", dn).as_deref(),
            Some("users/alice")
        );
        for bad in ["RULE:x", "RULE:x/y", "NOPE", "DEFAULT DEFAULT", "RULE:(/x/"] {
            assert!(PrincipalRule::parse_all(bad).is_err(), "{bad:?}");
        }
    }
}
