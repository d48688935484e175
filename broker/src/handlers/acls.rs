//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs of the cluster
//! metadata, checked and matched as Kafka does (SECURITY_DISABLED without
//! an authorizer; ALTER on the cluster to change them, DESCRIBE to list
//! them). Deleting ACLs removes exactly those a filter matches: the other
//! ACLs of the same resource stay enforced (CVE-2024-27309).

use std::collections::BTreeMap;

use coordinator::AclBinding;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{cluster_allows, RequestContext};
use crate::authorizer::{invalid_acl, AclFilter, Operation};
use crate::broker::Broker;
use crate::errors::{code, coordinator_error};

/// Why none of the request can be done: the authorizer is off, or the
/// principal may not do `operation` on the cluster.
fn refusal(
    broker: &Broker,
    origin: RequestContext<'_>,
    api: ApiKey,
    operation: Operation,
) -> Option<(i16, StrBytes)> {
    if !broker.authorizer.enabled() {
        return Some((
            code(ResponseError::SecurityDisabled),
            StrBytes::from_static_str("No Authorizer is configured on the broker"),
        ));
    }
    if !cluster_allows(broker, origin, api, operation) {
        return Some((
            code(ResponseError::ClusterAuthorizationFailed),
            StrBytes::from_static_str("Cluster authorization failed."),
        ));
    }
    None
}

pub(super) async fn create(
    broker: &Broker,
    request: CreateAclsRequest,
    origin: RequestContext<'_>,
) -> CreateAclsResponse {
    if let Some((error, message)) = refusal(broker, origin, ApiKey::CreateAcls, Operation::Alter) {
        let results = request
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(error)
                    .with_error_message(Some(message.clone()))
            })
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let bindings: Vec<Result<AclBinding, String>> = request
        .creations
        .into_iter()
        .map(|creation| {
            let acl = AclBinding {
                resource_type: creation.resource_type,
                resource_name: creation.resource_name.to_string(),
                pattern_type: creation.resource_pattern_type,
                principal: creation.principal.to_string(),
                host: creation.host.to_string(),
                operation: creation.operation,
                permission_type: creation.permission_type,
            };
            match invalid_acl(&acl) {
                Some(reason) => Err(reason),
                None => Ok(acl),
            }
        })
        .collect();
    let valid: Vec<AclBinding> = bindings.iter().filter_map(|b| b.clone().ok()).collect();
    let stored = if valid.is_empty() {
        Ok(())
    } else {
        broker.store.create_acls(valid.clone()).await
    };
    if stored.is_ok() {
        for acl in &valid {
            tracing::info!(principal = origin.principal, ?acl, "ACL created");
        }
    }
    let results = bindings
        .into_iter()
        .map(|binding| {
            let result = AclCreationResult::default();
            match (binding, &stored) {
                (Err(reason), _) => result
                    .with_error_code(code(ResponseError::InvalidRequest))
                    .with_error_message(Some(StrBytes::from_string(reason))),
                (Ok(_), Err(error)) => result
                    .with_error_code(code(coordinator_error(error)))
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
                (Ok(_), Ok(())) => result,
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub(super) fn describe(
    broker: &Broker,
    request: &DescribeAclsRequest,
    origin: RequestContext<'_>,
) -> DescribeAclsResponse {
    if let Some((error, message)) =
        refusal(broker, origin, ApiKey::DescribeAcls, Operation::Describe)
    {
        return DescribeAclsResponse::default()
            .with_error_code(error)
            .with_error_message(Some(message));
    }
    let filter = AclFilter {
        resource_type: request.resource_type_filter,
        resource_name: request
            .resource_name_filter
            .as_ref()
            .map(ToString::to_string),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.as_ref().map(ToString::to_string),
        host: request.host_filter.as_ref().map(ToString::to_string),
        operation: request.operation,
        permission_type: request.permission_type,
    };
    if let Some(reason) = filter.invalid() {
        return DescribeAclsResponse::default()
            .with_error_code(code(ResponseError::InvalidRequest))
            .with_error_message(Some(StrBytes::from_static_str(reason)));
    }
    let metadata = broker.store.snapshot();
    let mut resources: BTreeMap<(i8, &str, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in metadata.acls.iter().filter(|acl| filter.matches(acl)) {
        resources
            .entry((acl.resource_type, &acl.resource_name, acl.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(StrBytes::from_string(acl.principal.clone()))
                    .with_host(StrBytes::from_string(acl.host.clone()))
                    .with_operation(acl.operation)
                    .with_permission_type(acl.permission_type),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

pub(super) async fn delete(
    broker: &Broker,
    request: DeleteAclsRequest,
    origin: RequestContext<'_>,
) -> DeleteAclsResponse {
    if let Some((error, message)) = refusal(broker, origin, ApiKey::DeleteAcls, Operation::Alter) {
        let results = request
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(error)
                    .with_error_message(Some(message.clone()))
            })
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let metadata = broker.store.snapshot();
    let filters: Vec<AclFilter> = request
        .filters
        .into_iter()
        .map(|f| AclFilter {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.map(|s| s.to_string()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.map(|s| s.to_string()),
            host: f.host_filter.map(|s| s.to_string()),
            operation: f.operation,
            permission_type: f.permission_type,
        })
        .collect();
    // What each filter matches now; each ACL is deleted once.
    let matched: Vec<Result<Vec<&AclBinding>, &str>> = filters
        .iter()
        .map(|filter| match filter.invalid() {
            Some(reason) => Err(reason),
            None => Ok(metadata
                .acls
                .iter()
                .filter(|acl| filter.matches(acl))
                .collect()),
        })
        .collect();
    let mut doomed: Vec<AclBinding> = matched
        .iter()
        .filter_map(|m| m.as_ref().ok())
        .flatten()
        .map(|acl| (*acl).clone())
        .collect();
    doomed.sort();
    doomed.dedup();
    let deleted = if doomed.is_empty() {
        Ok(())
    } else {
        broker.store.delete_acls(doomed.clone()).await
    };
    if deleted.is_ok() {
        for acl in &doomed {
            tracing::info!(principal = origin.principal, ?acl, "ACL deleted");
        }
    }
    let results = matched
        .into_iter()
        .map(|m| match (m, &deleted) {
            (Err(reason), _) => DeleteAclsFilterResult::default()
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(Some(StrBytes::from_static_str(reason))),
            (Ok(_), Err(error)) => DeleteAclsFilterResult::default()
                .with_error_code(code(coordinator_error(error)))
                .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            (Ok(acls), Ok(())) => DeleteAclsFilterResult::default().with_matching_acls(
                acls.into_iter()
                    .map(|acl| {
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(acl.resource_type)
                            .with_resource_name(StrBytes::from_string(acl.resource_name.clone()))
                            .with_pattern_type(acl.pattern_type)
                            .with_principal(StrBytes::from_string(acl.principal.clone()))
                            .with_host(StrBytes::from_string(acl.host.clone()))
                            .with_operation(acl.operation)
                            .with_permission_type(acl.permission_type)
                    })
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
