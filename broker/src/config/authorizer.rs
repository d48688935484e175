//! Authorization: `authorizer.class.name` (Kafka's StandardAuthorizer or
//! AclAuthorizer turn on the built-in ACL authorizer; empty: off),
//! `super.users`, `allow.everyone.if.no.acl.found`.

use std::collections::BTreeSet;

use anyhow::bail;

use super::properties::Properties;

pub(super) const DEFAULTS: &[(&str, &str)] = &[
    ("authorizer.class.name", ""),
    ("super.users", ""),
    ("allow.everyone.if.no.acl.found", "false"),
];

/// The class names that mean "the built-in authorizer" (KRaft's and
/// ZooKeeper mode's).
const AUTHORIZERS: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// Whether ACLs are enforced (an authorizer is configured).
    pub enabled: bool,
    /// `super.users`: principals allowed everything (`User:a;User:b`).
    pub super_users: BTreeSet<String>,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL names is open.
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    pub(super) fn from_properties(properties: &Properties) -> anyhow::Result<AuthorizerConfig> {
        let class = properties.text("authorizer.class.name").trim();
        let enabled = match class {
            "" => false,
            class if AUTHORIZERS.contains(&class) => true,
            class => bail!(
                "authorizer.class.name={class}: the built-in authorizer is {} (or {})",
                AUTHORIZERS[0],
                AUTHORIZERS[1]
            ),
        };
        let mut super_users = BTreeSet::new();
        for principal in properties
            .text("super.users")
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if !principal.contains(':') {
                bail!("super.users: {principal} is not a principal (User:<name>)");
            }
            super_users.insert(principal.to_string());
        }
        Ok(AuthorizerConfig {
            enabled,
            super_users,
            allow_everyone_if_no_acl_found: properties.bool("allow.everyone.if.no.acl.found")?,
        })
    }
}
