//! The built-in ACL authorizer (Kafka's StandardAuthorizer semantics):
//! who may do what to which resource, decided from the ACLs in the
//! cluster metadata (so a change made on any broker applies on every one
//! as soon as its metadata has it).
//!
//! A request is allowed when the authorizer is off, the principal is in
//! `super.users`, or an ALLOW ACL matches and no DENY ACL does (DENY wins).
//! An ACL matches a resource by type and by name: LITERAL equal or `*`,
//! PREFIXED a prefix of it; a principal when it is the same or `User:*`; a
//! host when it is `*` or the client's address. READ, WRITE, DELETE and
//! ALTER allow DESCRIBE, ALTER_CONFIGS allows DESCRIBE_CONFIGS, ALL allows
//! everything. With no ACL on a resource, `allow.everyone.if.no.acl.found`
//! decides.
//!
//! Every denial is logged (principal, operation, resource, host, API), at
//! most [`DENIALS_LOGGED_PER_SECOND`] a second; listings that silently
//! leave out what a principal may not see do not log.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use coordinator::{AclBinding, MetadataStore};
use parking_lot::Mutex;

use crate::config::AuthorizerConfig;

/// The resource name of the cluster.
pub(crate) const CLUSTER_NAME: &str = "kafka-cluster";
const DENIALS_LOGGED_PER_SECOND: u32 = 10;

/// Kafka's resource types (wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceType {
    Any = 1,
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

impl ResourceType {
    pub(crate) fn from_code(code: i8) -> Option<ResourceType> {
        use ResourceType::*;
        [
            Any,
            Topic,
            Group,
            Cluster,
            TransactionalId,
            DelegationToken,
            User,
        ]
        .into_iter()
        .find(|t| *t as i8 == code)
    }

    fn name(self) -> &'static str {
        match self {
            ResourceType::Any => "Any",
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
            ResourceType::Cluster => "Cluster",
            ResourceType::TransactionalId => "TransactionalId",
            ResourceType::DelegationToken => "DelegationToken",
            ResourceType::User => "User",
        }
    }
}

/// Kafka's ACL operations (wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

impl Operation {
    pub(crate) fn from_code(code: i8) -> Option<Operation> {
        use Operation::*;
        [
            Any,
            All,
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            CreateTokens,
            DescribeTokens,
        ]
        .into_iter()
        .find(|o| *o as i8 == code)
    }

    /// What an ACL on this operation also allows.
    fn implies(self, wanted: Operation) -> bool {
        self == wanted
            || self == Operation::All
            || (wanted == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (wanted == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// The operations that can be granted on a resource type (the
    /// authorized-operations fields list them).
    fn on(resource: ResourceType) -> &'static [Operation] {
        use Operation::*;
        match resource {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Delete, Describe],
            ResourceType::Cluster => &[
                Create,
                Alter,
                Describe,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
            ],
            ResourceType::TransactionalId => &[Write, Describe],
            _ => &[],
        }
    }
}

/// Kafka's pattern types (wire codes).
pub(crate) mod pattern {
    pub(crate) const ANY: i8 = 1;
    pub(crate) const MATCH: i8 = 2;
    pub(crate) const LITERAL: i8 = 3;
    pub(crate) const PREFIXED: i8 = 4;
}

/// Kafka's permission types (wire codes).
pub(crate) mod permission {
    pub(crate) const ANY: i8 = 1;
    pub(crate) const DENY: i8 = 2;
    pub(crate) const ALLOW: i8 = 3;
}

/// The wildcard resource name and principal.
const WILDCARD: &str = "*";
const WILDCARD_PRINCIPAL: &str = "User:*";

/// Who asks: the connection's principal and address, and the API (for
/// the log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
    pub api: &'a str,
}

/// The authorizer of a broker.
pub(crate) struct Authorizer {
    config: AuthorizerConfig,
    store: Arc<dyn MetadataStore>,
    /// (start of the current second, denials logged in it, suppressed)
    logged: Mutex<(Instant, u32, u64)>,
}

impl Authorizer {
    pub(crate) fn new(config: AuthorizerConfig, store: Arc<dyn MetadataStore>) -> Authorizer {
        Authorizer {
            config,
            store,
            logged: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Whether `who` may do `operation` on the resource; a denial is logged.
    pub(crate) fn authorize(
        &self,
        who: &Who<'_>,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        let allowed = self.allowed(who, operation, resource, name);
        if !allowed {
            self.log_denial(who, operation, resource, name);
        }
        allowed
    }

    /// As [`Self::authorize`], without logging (for listings that leave
    /// out what the principal may not see, as Kafka does).
    pub(crate) fn allowed(
        &self,
        who: &Who<'_>,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        // Off, or a super user: no ACL to read (the produce and fetch
        // paths pay nothing without an authorizer).
        if self.passes_everything(who) {
            return true;
        }
        decide(
            &self.config,
            &self.store.snapshot().acls,
            who,
            operation,
            resource,
            name,
        )
    }

    /// No authorizer, or a super user.
    fn passes_everything(&self, who: &Who<'_>) -> bool {
        !self.config.enabled || self.config.super_users.contains(who.principal)
    }

    /// Whether `who` may do `operation` on some resource of the type
    /// (Kafka's authorizeByResourceType: an ALLOW ACL for it, on a name no
    /// DENY covers wholly), as InitProducerId asks of idempotent producers.
    pub(crate) fn allowed_on_some(
        &self,
        who: &Who<'_>,
        operation: Operation,
        resource: ResourceType,
    ) -> bool {
        if self.passes_everything(who) {
            return true;
        }
        let metadata = self.store.snapshot();
        let host = who.host.to_string();
        let applies = |acl: &&AclBinding| {
            acl.resource_type == resource as i8
                && (acl.principal == who.principal || acl.principal == WILDCARD_PRINCIPAL)
                && (acl.host == WILDCARD || acl.host == host)
        };
        let denied_everywhere = metadata.acls.iter().filter(applies).any(|acl| {
            acl.permission_type == permission::DENY
                && acl.pattern_type == pattern::LITERAL
                && acl.resource_name == WILDCARD
                && Operation::from_code(acl.operation)
                    .is_some_and(|denied| denied == operation || denied == Operation::All)
        });
        !denied_everywhere
            && metadata.acls.iter().filter(applies).any(|acl| {
                acl.permission_type == permission::ALLOW
                    && Operation::from_code(acl.operation)
                        .is_some_and(|granted| granted.implies(operation))
                    && !decide_denied(
                        &metadata.acls,
                        who,
                        operation,
                        resource,
                        &acl.resource_name,
                        acl.pattern_type,
                    )
            })
    }

    /// Kafka's authorized-operations bit field: a bit (1 << code) for each
    /// operation `who` may do on the resource.
    pub(crate) fn authorized_operations(
        &self,
        who: &Who<'_>,
        resource: ResourceType,
        name: &str,
    ) -> i32 {
        Operation::on(resource)
            .iter()
            .filter(|operation| self.allowed(who, **operation, resource, name))
            .fold(0, |bits, operation| bits | (1 << (*operation as i32)))
    }

    fn log_denial(&self, who: &Who<'_>, operation: Operation, resource: ResourceType, name: &str) {
        let mut logged = self.logged.lock();
        if logged.0.elapsed().as_secs() >= 1 {
            if logged.2 > 0 {
                tracing::info!(
                    suppressed = logged.2,
                    "more authorization denials in the last second were not logged"
                );
            }
            *logged = (Instant::now(), 0, 0);
        }
        if logged.1 >= DENIALS_LOGGED_PER_SECOND {
            logged.2 += 1;
            return;
        }
        logged.1 += 1;
        tracing::info!(
            principal = who.principal,
            operation = ?operation,
            resource = format!("{}:{name}", resource.name()),
            host = %who.host,
            api = who.api,
            "authorization denied"
        );
    }
}

/// The decision, from the ACLs there are.
fn decide(
    config: &AuthorizerConfig,
    acls: &BTreeSet<AclBinding>,
    who: &Who<'_>,
    operation: Operation,
    resource: ResourceType,
    name: &str,
) -> bool {
    if !config.enabled || config.super_users.contains(who.principal) {
        return true;
    }
    let host = who.host.to_string();
    let mut any_acl = false;
    let mut allow = false;
    for acl in acls
        .iter()
        .filter(|acl| resource_matches(acl, resource, name))
    {
        any_acl = true;
        let applies = (acl.principal == who.principal || acl.principal == WILDCARD_PRINCIPAL)
            && (acl.host == WILDCARD || acl.host == host);
        if !applies {
            continue;
        }
        let Some(granted) = Operation::from_code(acl.operation) else {
            continue;
        };
        match acl.permission_type {
            permission::DENY if granted == operation || granted == Operation::All => {
                return false;
            }
            permission::ALLOW if granted.implies(operation) => allow = true,
            _ => {}
        }
    }
    allow || (!any_acl && config.allow_everyone_if_no_acl_found)
}

/// Whether a DENY covers the resource an ALLOW names (for a PREFIXED
/// ALLOW, a DENY on the same or a shorter prefix, or on the wildcard).
fn decide_denied(
    acls: &BTreeSet<AclBinding>,
    who: &Who<'_>,
    operation: Operation,
    resource: ResourceType,
    name: &str,
    pattern_type: i8,
) -> bool {
    let host = who.host.to_string();
    acls.iter().any(|acl| {
        acl.resource_type == resource as i8
            && acl.permission_type == permission::DENY
            && (acl.principal == who.principal || acl.principal == WILDCARD_PRINCIPAL)
            && (acl.host == WILDCARD || acl.host == host)
            && Operation::from_code(acl.operation)
                .is_some_and(|denied| denied == operation || denied == Operation::All)
            && match (acl.pattern_type, pattern_type) {
                (pattern::LITERAL, _) if acl.resource_name == WILDCARD => true,
                (pattern::LITERAL, pattern::LITERAL) => acl.resource_name == name,
                (pattern::PREFIXED, _) => name.starts_with(acl.resource_name.as_str()),
                _ => false,
            }
    })
}

/// Whether `acl` is on the resource `name` of type `resource`.
fn resource_matches(acl: &AclBinding, resource: ResourceType, name: &str) -> bool {
    acl.resource_type == resource as i8
        && match acl.pattern_type {
            pattern::LITERAL => acl.resource_name == name || acl.resource_name == WILDCARD,
            pattern::PREFIXED => name.starts_with(acl.resource_name.as_str()),
            _ => false,
        }
}

/// A filter of DescribeAcls and DeleteAcls, in wire codes (Kafka's
/// AclBindingFilter).
#[derive(Debug, Clone)]
pub(crate) struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclFilter {
    /// Why the filter can match nothing sensible (Kafka's
    /// INVALID_REQUEST), if it cannot.
    pub(crate) fn invalid(&self) -> Option<&'static str> {
        if ResourceType::from_code(self.resource_type).is_none() {
            return Some("unknown resource type");
        }
        if !(pattern::ANY..=pattern::PREFIXED).contains(&self.pattern_type) {
            return Some("unknown pattern type");
        }
        if Operation::from_code(self.operation).is_none() {
            return Some("unknown operation");
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission_type) {
            return Some("unknown permission type");
        }
        None
    }

    pub(crate) fn matches(&self, acl: &AclBinding) -> bool {
        let type_matches = self.resource_type == ResourceType::Any as i8
            || self.resource_type == acl.resource_type;
        let name = self.resource_name.as_deref();
        let pattern_matches = match self.pattern_type {
            pattern::ANY => name.is_none_or(|name| name == acl.resource_name),
            pattern::MATCH => name.is_none_or(|name| match acl.pattern_type {
                pattern::LITERAL => acl.resource_name == name || acl.resource_name == WILDCARD,
                pattern::PREFIXED => name.starts_with(acl.resource_name.as_str()),
                _ => false,
            }),
            exact => exact == acl.pattern_type && name.is_none_or(|name| name == acl.resource_name),
        };
        type_matches
            && pattern_matches
            && self.principal.as_deref().is_none_or(|p| p == acl.principal)
            && self.host.as_deref().is_none_or(|h| h == acl.host)
            && (self.operation == Operation::Any as i8 || self.operation == acl.operation)
            && (self.permission_type == permission::ANY
                || self.permission_type == acl.permission_type)
    }
}

/// Why an ACL cannot be created (Kafka's INVALID_REQUEST), if it cannot.
pub(crate) fn invalid_acl(acl: &AclBinding) -> Option<String> {
    let resource = ResourceType::from_code(acl.resource_type);
    match resource {
        None | Some(ResourceType::Any) => return Some("Invalid resource type".into()),
        Some(ResourceType::Cluster) if acl.resource_name != CLUSTER_NAME => {
            return Some(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ))
        }
        _ => {}
    }
    if acl.pattern_type != pattern::LITERAL && acl.pattern_type != pattern::PREFIXED {
        return Some("Invalid pattern type".into());
    }
    if acl.resource_name.is_empty() {
        return Some("Resource name must not be empty".into());
    }
    match Operation::from_code(acl.operation) {
        None | Some(Operation::Any) => return Some("Invalid operation".into()),
        _ => {}
    }
    if acl.permission_type != permission::DENY && acl.permission_type != permission::ALLOW {
        return Some("Invalid permission type".into());
    }
    match acl.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Some(format!(
                "Could not parse principal from `{}`",
                acl.principal
            ))
        }
    }
    if acl.host.is_empty() {
        return Some("Host must not be empty".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource: ResourceType,
        name: &str,
        pattern: i8,
        principal: &str,
        operation: Operation,
        permission: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type: resource as i8,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: operation as i8,
            permission_type: permission,
        }
    }

    fn config() -> AuthorizerConfig {
        AuthorizerConfig {
            enabled: true,
            super_users: ["User:admin".to_string()].into(),
            allow_everyone_if_no_acl_found: false,
        }
    }

    fn who(principal: &str) -> Who<'_> {
        Who {
            principal,
            host: "127.0.0.1".parse().unwrap(),
            api: "Test",
        }
    }

    #[test]
    fn deny_wins_prefixes_and_wildcards_match_and_super_users_pass() {
        use ResourceType::Topic;
        let acls: BTreeSet<AclBinding> = [
            acl(
                Topic,
                "orders",
                pattern::LITERAL,
                "User:alice",
                Operation::Write,
                permission::ALLOW,
            ),
            acl(
                Topic,
                "pay",
                pattern::PREFIXED,
                "User:alice",
                Operation::Read,
                permission::ALLOW,
            ),
            acl(
                Topic,
                "payroll",
                pattern::LITERAL,
                "User:alice",
                Operation::Read,
                permission::DENY,
            ),
            acl(
                Topic,
                "*",
                pattern::LITERAL,
                "User:*",
                Operation::Describe,
                permission::ALLOW,
            ),
            acl(
                Topic,
                "secret",
                pattern::LITERAL,
                "User:*",
                Operation::All,
                permission::DENY,
            ),
        ]
        .into();
        let config = config();
        let can = |principal, operation, name| {
            decide(&config, &acls, &who(principal), operation, Topic, name)
        };
        assert!(can("User:alice", Operation::Write, "orders"));
        assert!(
            can("User:alice", Operation::Describe, "orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(!can("User:alice", Operation::Read, "orders"));
        assert!(!can("User:bob", Operation::Write, "orders"));
        assert!(
            can("User:alice", Operation::Read, "payments"),
            "a PREFIXED ACL"
        );
        assert!(
            !can("User:alice", Operation::Read, "payroll"),
            "DENY beats ALLOW"
        );
        assert!(
            can("User:alice", Operation::Describe, "payroll"),
            "DENY READ leaves DESCRIBE"
        );
        assert!(
            can("User:bob", Operation::Describe, "anything"),
            "the * topic and User:*"
        );
        assert!(!can("User:bob", Operation::Describe, "secret"), "DENY ALL");
        assert!(
            can("User:admin", Operation::Delete, "secret"),
            "super users pass"
        );
        // A resource no ACL names: closed unless allow.everyone.if.no.acl.found.
        let none = BTreeSet::new();
        assert!(!decide(
            &config,
            &none,
            &who("User:bob"),
            Operation::Read,
            Topic,
            "t"
        ));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..config.clone()
        };
        assert!(decide(
            &open,
            &none,
            &who("User:bob"),
            Operation::Read,
            Topic,
            "t"
        ));
        assert!(!decide(
            &open,
            &acls,
            &who("User:bob"),
            Operation::Read,
            Topic,
            "orders"
        ));
        // A host of its own.
        let from_host: BTreeSet<AclBinding> = [AclBinding {
            host: "10.0.0.1".into(),
            ..acl(
                Topic,
                "t",
                pattern::LITERAL,
                "User:bob",
                Operation::Read,
                permission::ALLOW,
            )
        }]
        .into();
        assert!(!decide(
            &config,
            &from_host,
            &who("User:bob"),
            Operation::Read,
            Topic,
            "t"
        ));
        // Off: everything is allowed.
        let off = AuthorizerConfig::default();
        assert!(decide(
            &off,
            &none,
            &who("User:bob"),
            Operation::Delete,
            Topic,
            "t"
        ));
    }

    #[test]
    fn operations_imply_describe_as_kafka_s_do() {
        assert!(Operation::Read.implies(Operation::Describe));
        assert!(Operation::Alter.implies(Operation::Describe));
        assert!(Operation::AlterConfigs.implies(Operation::DescribeConfigs));
        assert!(Operation::All.implies(Operation::Write));
        assert!(!Operation::Describe.implies(Operation::Read));
        assert!(!Operation::Write.implies(Operation::Read));
        assert!(!Operation::Create.implies(Operation::Describe));
    }

    #[test]
    fn filters_match_as_kafka_s_acl_binding_filters_do() {
        let literal = acl(
            ResourceType::Topic,
            "orders",
            pattern::LITERAL,
            "User:alice",
            Operation::Read,
            permission::ALLOW,
        );
        let prefixed = AclBinding {
            pattern_type: pattern::PREFIXED,
            resource_name: "ord".into(),
            ..literal.clone()
        };
        let filter = |pattern_type, name: Option<&str>| AclFilter {
            resource_type: ResourceType::Topic as i8,
            resource_name: name.map(String::from),
            pattern_type,
            principal: None,
            host: None,
            operation: Operation::Any as i8,
            permission_type: permission::ANY,
        };
        assert!(filter(pattern::ANY, None).matches(&literal));
        assert!(filter(pattern::ANY, Some("orders")).matches(&literal));
        assert!(!filter(pattern::ANY, Some("orders")).matches(&prefixed));
        assert!(filter(pattern::MATCH, Some("orders")).matches(&prefixed));
        assert!(filter(pattern::MATCH, Some("orders")).matches(&literal));
        assert!(!filter(pattern::MATCH, Some("other")).matches(&prefixed));
        assert!(filter(pattern::PREFIXED, Some("ord")).matches(&prefixed));
        assert!(!filter(pattern::PREFIXED, Some("ord")).matches(&literal));
        assert!(filter(pattern::LITERAL, None).matches(&literal));
        assert!(invalid_acl(&literal).is_none());
        assert!(invalid_acl(&AclBinding {
            principal: "alice".into(),
            ..literal.clone()
        })
        .is_some());
        assert!(invalid_acl(&AclBinding {
            resource_type: ResourceType::Cluster as i8,
            ..literal
        })
        .is_some());
    }
}
