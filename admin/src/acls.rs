//! `acls list|create|delete` (as kafka-acls: `--allow-principal`,
//! `--deny-principal`, `--operation`, `--topic|--group|--transactional-id|
//! --cluster`, `--resource-pattern-type`) and `users list|set-scram|
//! delete-scram` (SCRAM credentials, as kafka-configs' `--entity-type
//! users`). The password of `set-scram` is salted and hashed here: only
//! SaltedPassword goes over the wire, as Kafka's tools send it.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::{error_name, table, Output};
use client::Client;

const ACLS_VERSION: i16 = 3;
const SCRAM_VERSION: i16 = 0;

const OPERATIONS: &[(&str, i8)] = &[
    ("Any", 1),
    ("All", 2),
    ("Read", 3),
    ("Write", 4),
    ("Create", 5),
    ("Delete", 6),
    ("Alter", 7),
    ("Describe", 8),
    ("ClusterAction", 9),
    ("DescribeConfigs", 10),
    ("AlterConfigs", 11),
    ("IdempotentWrite", 12),
];
const RESOURCE_TYPES: &[(&str, i8)] = &[
    ("Any", 1),
    ("Topic", 2),
    ("Group", 3),
    ("Cluster", 4),
    ("TransactionalId", 5),
];
const PATTERN_TYPES: &[(&str, i8)] = &[("Any", 1), ("Match", 2), ("Literal", 3), ("Prefixed", 4)];
const MECHANISMS: &[(&str, i8)] = &[("SCRAM-SHA-256", 1), ("SCRAM-SHA-512", 2)];

fn code_of(table: &[(&str, i8)], name: &str, what: &str) -> anyhow::Result<i8> {
    table
        .iter()
        .find(|(n, _)| {
            n.eq_ignore_ascii_case(name.replace(['-', '_'], "").as_str())
                || n.eq_ignore_ascii_case(name)
        })
        .map(|(_, code)| *code)
        .with_context(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            format!("{what} {name}: one of {}", names.join(", "))
        })
}

fn name_of(table: &[(&'static str, i8)], code: i8) -> String {
    table
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| code.to_string(), |(n, _)| (*n).to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// ACLs matching the resource options (all when none).
    List(#[command(flatten)] AclOptions),
    /// One ACL per principal × operation × host given.
    Create(#[command(flatten)] AclOptions),
    /// The ACLs matching the options.
    Delete(#[command(flatten)] AclOptions),
}

#[derive(Debug, Args)]
pub(crate) struct AclOptions {
    #[arg(long, group = "resource")]
    topic: Option<String>,
    #[arg(long, group = "resource")]
    group: Option<String>,
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    #[arg(long, group = "resource")]
    cluster: bool,
    /// literal, prefixed (create); also any, match (list, delete).
    #[arg(long)]
    resource_pattern_type: Option<String>,
    /// `User:<name>` (repeatable).
    #[arg(long)]
    allow_principal: Vec<String>,
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Hosts of the allow principals (`*` when none).
    #[arg(long)]
    allow_host: Vec<String>,
    #[arg(long)]
    deny_host: Vec<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All (repeatable).
    #[arg(long)]
    operation: Vec<String>,
}

impl AclOptions {
    /// (resource type, name): `None` with no resource option.
    fn resource(&self) -> Option<(i8, String)> {
        if let Some(topic) = &self.topic {
            Some((2, topic.clone()))
        } else if let Some(group) = &self.group {
            Some((3, group.clone()))
        } else if let Some(id) = &self.transactional_id {
            Some((5, id.clone()))
        } else {
            self.cluster.then(|| (4, "kafka-cluster".to_string()))
        }
    }

    /// (principal, host, permission) of every principal option.
    fn principals(&self) -> Vec<(String, String, i8)> {
        let hosts = |given: &[String]| -> Vec<String> {
            if given.is_empty() {
                vec!["*".to_string()]
            } else {
                given.to_vec()
            }
        };
        let mut out = Vec::new();
        for (principals, hosts, permission) in [
            (&self.allow_principal, hosts(&self.allow_host), 3),
            (&self.deny_principal, hosts(&self.deny_host), 2),
        ] {
            for principal in principals {
                for host in &hosts {
                    out.push((principal.clone(), host.clone(), permission));
                }
            }
        }
        out
    }

    fn operations(&self) -> anyhow::Result<Vec<i8>> {
        self.operation
            .iter()
            .map(|o| code_of(OPERATIONS, o, "--operation"))
            .collect()
    }

    fn pattern(&self, default: &str) -> anyhow::Result<i8> {
        code_of(
            PATTERN_TYPES,
            self.resource_pattern_type.as_deref().unwrap_or(default),
            "--resource-pattern-type",
        )
    }

    /// The filters of `list` and `delete`: one per principal × operation
    /// given (any principal, any operation when none).
    fn filters(&self, default_pattern: &str) -> anyhow::Result<Vec<DescribeAclsRequest>> {
        let (resource_type, name) = self.resource().map_or((1, None), |(t, n)| (t, Some(n)));
        let pattern = self.pattern(default_pattern)?;
        let operations = match self.operations()? {
            ops if ops.is_empty() => vec![1],
            ops => ops,
        };
        let principals: Vec<(Option<String>, Option<String>, i8)> = match self.principals() {
            p if p.is_empty() => vec![(None, None, 1)],
            p => p
                .into_iter()
                .map(|(principal, host, permission)| {
                    let host =
                        (host != "*" || !self.allow_host.is_empty() || !self.deny_host.is_empty())
                            .then_some(host);
                    (Some(principal), host, permission)
                })
                .collect(),
        };
        let mut filters = Vec::new();
        for (principal, host, permission) in &principals {
            for operation in &operations {
                filters.push(
                    DescribeAclsRequest::default()
                        .with_resource_type_filter(resource_type)
                        .with_resource_name_filter(name.clone().map(StrBytes::from_string))
                        .with_pattern_type_filter(pattern)
                        .with_principal_filter(principal.clone().map(StrBytes::from_string))
                        .with_host_filter(host.clone().map(StrBytes::from_string))
                        .with_operation(*operation)
                        .with_permission_type(*permission),
                );
            }
        }
        Ok(filters)
    }
}

type Row = (i8, String, i8, String, String, i8, i8);

fn acl_output(rows: &[Row], failed: bool) -> Output {
    let text_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(t, n, p, principal, host, op, permission)| {
            vec![
                name_of(RESOURCE_TYPES, *t),
                n.clone(),
                name_of(PATTERN_TYPES, *p),
                principal.clone(),
                host.clone(),
                name_of(OPERATIONS, *op),
                if *permission == 3 { "Allow" } else { "Deny" }.to_string(),
            ]
        })
        .collect();
    Output {
        text: table(
            &[
                "RESOURCE TYPE",
                "NAME",
                "PATTERN",
                "PRINCIPAL",
                "HOST",
                "OPERATION",
                "PERMISSION",
            ],
            &text_rows,
        ),
        json: json!(text_rows
            .iter()
            .map(
                |r| json!({"resource_type": r[0], "name": r[1], "pattern_type": r[2],
                "principal": r[3], "host": r[4], "operation": r[5], "permission": r[6]})
            )
            .collect::<Vec<_>>()),
        failed,
    }
}

pub(crate) async fn run(client: &mut Client, command: AclCommand) -> anyhow::Result<Output> {
    match command {
        AclCommand::List(options) => {
            let mut rows: Vec<Row> = Vec::new();
            for filter in options.filters("Any")? {
                let response = client.call(filter, ACLS_VERSION).await?;
                if response.error_code != 0 {
                    bail!(
                        "DescribeAcls failed: {} {}",
                        error_name(response.error_code),
                        response.error_message.as_deref().unwrap_or("")
                    );
                }
                for resource in response.resources {
                    for acl in resource.acls {
                        rows.push((
                            resource.resource_type,
                            resource.resource_name.to_string(),
                            resource.pattern_type,
                            acl.principal.to_string(),
                            acl.host.to_string(),
                            acl.operation,
                            acl.permission_type,
                        ));
                    }
                }
            }
            rows.sort();
            rows.dedup();
            Ok(acl_output(&rows, false))
        }
        AclCommand::Create(options) => {
            let Some((resource_type, name)) = options.resource() else {
                bail!("acls create needs --topic, --group, --transactional-id or --cluster");
            };
            let pattern = options.pattern("Literal")?;
            let operations = options.operations()?;
            let principals = options.principals();
            if operations.is_empty() || principals.is_empty() {
                bail!("acls create needs --operation and --allow-principal or --deny-principal");
            }
            let mut creations = Vec::new();
            let mut rows = Vec::new();
            for (principal, host, permission) in principals {
                for operation in &operations {
                    rows.push((
                        resource_type,
                        name.clone(),
                        pattern,
                        principal.clone(),
                        host.clone(),
                        *operation,
                        permission,
                    ));
                    creations.push(
                        AclCreation::default()
                            .with_resource_type(resource_type)
                            .with_resource_name(StrBytes::from_string(name.clone()))
                            .with_resource_pattern_type(pattern)
                            .with_principal(StrBytes::from_string(principal.clone()))
                            .with_host(StrBytes::from_string(host.clone()))
                            .with_operation(*operation)
                            .with_permission_type(permission),
                    );
                }
            }
            let response = client
                .call(
                    CreateAclsRequest::default().with_creations(creations),
                    ACLS_VERSION,
                )
                .await?;
            let errors: Vec<String> = response
                .results
                .iter()
                .filter(|r| r.error_code != 0)
                .map(|r| {
                    format!(
                        "{}: {}",
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    )
                })
                .collect();
            if !errors.is_empty() {
                bail!("CreateAcls failed: {}", errors.join("; "));
            }
            Ok(acl_output(&rows, false))
        }
        AclCommand::Delete(options) => {
            let filters = options
                .filters("Literal")?
                .into_iter()
                .map(|f| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(f.resource_type_filter)
                        .with_resource_name_filter(f.resource_name_filter)
                        .with_pattern_type_filter(f.pattern_type_filter)
                        .with_principal_filter(f.principal_filter)
                        .with_host_filter(f.host_filter)
                        .with_operation(f.operation)
                        .with_permission_type(f.permission_type)
                })
                .collect();
            let response = client
                .call(
                    DeleteAclsRequest::default().with_filters(filters),
                    ACLS_VERSION,
                )
                .await?;
            let mut rows: Vec<Row> = Vec::new();
            for result in response.filter_results {
                if result.error_code != 0 {
                    bail!(
                        "DeleteAcls failed: {} {}",
                        error_name(result.error_code),
                        result.error_message.as_deref().unwrap_or("")
                    );
                }
                rows.extend(result.matching_acls.into_iter().map(|a| {
                    (
                        a.resource_type,
                        a.resource_name.to_string(),
                        a.pattern_type,
                        a.principal.to_string(),
                        a.host.to_string(),
                        a.operation,
                        a.permission_type,
                    )
                }));
            }
            Ok(acl_output(&rows, false))
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Users with SCRAM credentials (all, or those named), mechanisms and iterations.
    List { users: Vec<String> },
    /// Creates or replaces a user's SCRAM credential.
    SetScram {
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value_t = 4096)]
        iterations: i32,
    },
    /// Deletes a user's SCRAM credential.
    DeleteScram {
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
    },
}

pub(crate) async fn users(client: &mut Client, command: UserCommand) -> anyhow::Result<Output> {
    match command {
        UserCommand::List { users } => {
            let names = (!users.is_empty()).then(|| {
                users
                    .iter()
                    .map(|u| UserName::default().with_name(StrBytes::from_string(u.clone())))
                    .collect()
            });
            let response = client
                .call(
                    DescribeUserScramCredentialsRequest::default().with_users(names),
                    SCRAM_VERSION,
                )
                .await?;
            if response.error_code != 0 {
                bail!(
                    "DescribeUserScramCredentials failed: {}",
                    error_name(response.error_code)
                );
            }
            let mut rows = Vec::new();
            let mut failed = false;
            for result in &response.results {
                if result.error_code != 0 {
                    failed = true;
                    rows.push(vec![
                        result.user.to_string(),
                        error_name(result.error_code),
                        String::new(),
                    ]);
                }
                for info in &result.credential_infos {
                    rows.push(vec![
                        result.user.to_string(),
                        name_of(MECHANISMS, info.mechanism),
                        info.iterations.to_string(),
                    ]);
                }
            }
            Ok(Output {
                text: table(&["USER", "MECHANISM", "ITERATIONS"], &rows),
                json: json!(rows
                    .iter()
                    .map(|r| json!({"user": r[0], "mechanism": r[1], "iterations": r[2]}))
                    .collect::<Vec<_>>()),
                failed,
            })
        }
        UserCommand::SetScram {
            user,
            mechanism,
            password,
            iterations,
        } => {
            let code = code_of(MECHANISMS, &mechanism, "--mechanism")?;
            let mechanism = client::sasl::Mechanism::from_name(&mechanism.to_ascii_uppercase())
                .context("--mechanism")?;
            let salt = client::sasl::random_salt()?;
            let salted = client::sasl::salted_password(mechanism, &password, &salt, iterations)?;
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_string(user.clone()))
                    .with_mechanism(code)
                    .with_iterations(iterations)
                    .with_salt(salt.into())
                    .with_salted_password(salted.into()),
            ]);
            alter(client, request, &user).await
        }
        UserCommand::DeleteScram { user, mechanism } => {
            let code = code_of(MECHANISMS, &mechanism, "--mechanism")?;
            let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_string(user.clone()))
                    .with_mechanism(code),
            ]);
            alter(client, request, &user).await
        }
    }
}

async fn alter(
    client: &mut Client,
    request: AlterUserScramCredentialsRequest,
    user: &str,
) -> anyhow::Result<Output> {
    let response = client.call(request, SCRAM_VERSION).await?;
    for result in &response.results {
        if result.error_code != 0 {
            bail!(
                "AlterUserScramCredentials for {}: {} {}",
                result.user,
                error_name(result.error_code),
                result.error_message.as_deref().unwrap_or("")
            );
        }
    }
    Ok(Output {
        text: format!("{user}: done\n"),
        json: json!({"user": user, "error": "NONE"}),
        failed: false,
    })
}
