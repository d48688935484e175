//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and
//! the broker, with Kafka's names, defaults, sources and synonyms.
//!
//! Topic configs are stored with the topic; the dynamic broker configs (the
//! defaults of topic configs, see `config::DYNAMIC_BROKER_CONFIGS`) with the
//! cluster metadata, cluster-wide (resource name "") or per broker. Both
//! apply to the logs at once, without a restart. A value's source follows
//! Kafka's precedence: topic, dynamic broker, dynamic cluster default,
//! static broker (file or --override), default.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::authorizer::{Operation, ResourceType, CLUSTER_NAME};
use crate::broker::Broker;
use crate::config::{
    dynamic_listener_ssl, is_dynamic_security_config, is_sensitive, known_properties,
    DYNAMIC_BROKER_CONFIGS,
};
use crate::errors::{code, topic_error_code, NONE};
use crate::topic_config::{self, ConfigType, TopicConfigDef, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs' config sources.
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_DYNAMIC_BROKER_CONFIG: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// DescribeConfigs v3+ reports types and documentation.
const TYPES_VERSION_MIN: i16 = 3;

fn string(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// One described config before it is put on the wire.
struct Described {
    name: String,
    value: String,
    source: i8,
    read_only: bool,
    config_type: ConfigType,
    doc: Option<&'static str>,
    synonyms: Vec<(String, String, i8)>,
}

/// A topic config's value and where it comes from: the topic's override,
/// else a broker config given at start-up, else Kafka's default.
fn describe_topic_config(
    def: &TopicConfigDef,
    overrides: &BTreeMap<String, String>,
    levels: &BrokerLevels,
) -> Described {
    let mut synonyms = Vec::new();
    if let Some(value) = overrides.get(def.name) {
        synonyms.push((def.name.to_string(), value.clone(), SOURCE_TOPIC_CONFIG));
    }
    for (source, properties) in levels.in_precedence() {
        for (synonym, factor) in def.synonyms {
            if let Some(value) = properties.get(*synonym) {
                let converted = match value.trim().parse::<i64>() {
                    Ok(number) if *factor != 1 => number.saturating_mul(*factor).to_string(),
                    _ => value.clone(),
                };
                synonyms.push((synonym.to_string(), converted, source));
            }
        }
    }
    let default_name = def.synonyms.first().map_or(def.name, |(name, _)| *name);
    synonyms.push((
        default_name.to_string(),
        def.default.to_string(),
        SOURCE_DEFAULT_CONFIG,
    ));
    let (value, source) = synonyms
        .first()
        .map(|(_, value, source)| (value.clone(), *source))
        .expect("the default is always there");
    Described {
        name: def.name.to_string(),
        value,
        source,
        read_only: false,
        config_type: def.config_type,
        doc: Some(def.doc),
        synonyms,
    }
}

/// The broker config levels above the defaults.
struct BrokerLevels {
    own: BTreeMap<String, String>,
    cluster: BTreeMap<String, String>,
    fixed: BTreeMap<String, String>,
}

impl BrokerLevels {
    fn of(broker: &Broker) -> BrokerLevels {
        BrokerLevels {
            own: broker.dynamic_broker_configs(&broker.config.node_id.to_string()),
            cluster: broker.dynamic_broker_configs(""),
            fixed: broker.config.explicit.clone(),
        }
    }

    fn in_precedence(&self) -> [(i8, &BTreeMap<String, String>); 3] {
        [
            (SOURCE_DYNAMIC_BROKER_CONFIG, &self.own),
            (SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG, &self.cluster),
            (SOURCE_STATIC_BROKER_CONFIG, &self.fixed),
        ]
    }
}

/// A broker config with every level that sets it, highest first.
fn describe_broker_config(
    key: &str,
    default: &str,
    levels: &[(i8, &BTreeMap<String, String>)],
) -> Described {
    let mut synonyms: Vec<(String, String, i8)> = levels
        .iter()
        .filter_map(|(source, properties)| {
            properties
                .get(key)
                .map(|value| (key.to_string(), value.clone(), *source))
        })
        .collect();
    synonyms.push((key.to_string(), default.to_string(), SOURCE_DEFAULT_CONFIG));
    let (_, value, source) = synonyms[0].clone();
    Described {
        name: key.to_string(),
        config_type: type_of_broker_value(&value),
        value,
        source,
        read_only: !DYNAMIC_BROKER_CONFIGS.contains(&key) && !is_dynamic_security_config(key),
        doc: None,
        synonyms,
    }
}

fn type_of_broker_value(value: &str) -> ConfigType {
    if value == "true" || value == "false" {
        ConfigType::Boolean
    } else if value.parse::<i64>().is_ok() {
        ConfigType::Long
    } else {
        ConfigType::String
    }
}

/// Why the principal may not do `operation` (DESCRIBE_CONFIGS or
/// ALTER_CONFIGS) on a config resource: a topic's are the topic's, a
/// broker's the cluster's.
fn config_denied(
    broker: &Broker,
    origin: RequestContext<'_>,
    api: ApiKey,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Option<(i16, String)> {
    let who = origin.who(api);
    let (resource, name, error) = match resource_type {
        RESOURCE_TOPIC => (
            ResourceType::Topic,
            name,
            ResponseError::TopicAuthorizationFailed,
        ),
        _ => (
            ResourceType::Cluster,
            CLUSTER_NAME,
            ResponseError::ClusterAuthorizationFailed,
        ),
    };
    (!broker.authorizer.authorize(&who, operation, resource, name))
        .then(|| (code(error), "Authorization failed.".to_string()))
}

pub(super) fn describe_configs(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
    origin: RequestContext<'_>,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let fail = |error: ResponseError, message: String| {
                result
                    .clone()
                    .with_error_code(code(error))
                    .with_error_message(Some(string(message)))
            };
            if let Some((error_code, message)) = config_denied(
                broker,
                origin,
                ApiKey::DescribeConfigs,
                Operation::DescribeConfigs,
                resource.resource_type,
                &resource.resource_name,
            ) {
                return result
                    .with_error_code(error_code)
                    .with_error_message(Some(string(message)));
            }
            let described: Vec<Described> = match resource.resource_type {
                RESOURCE_TOPIC => {
                    let Some(topic) = broker
                        .metadata()
                        .topic(resource.resource_name.as_str())
                        .cloned()
                    else {
                        return fail(
                            ResponseError::UnknownTopicOrPartition,
                            format!("Topic {} does not exist.", resource.resource_name),
                        );
                    };
                    let levels = BrokerLevels::of(broker);
                    TOPIC_CONFIGS
                        .iter()
                        .map(|def| describe_topic_config(def, &topic.configs, &levels))
                        .collect()
                }
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if !name.is_empty() && name != broker.config.node_id.to_string() {
                        return fail(
                            ResponseError::InvalidRequest,
                            format!("Unexpected broker id, expected {} or empty string, but received {name}", broker.config.node_id),
                        );
                    }
                    let levels = BrokerLevels::of(broker);
                    if name.is_empty() {
                        // The cluster-wide dynamic defaults: only those set.
                        known_properties()
                            .filter(|(key, _)| levels.cluster.contains_key(*key))
                            .map(|(key, default)| {
                                describe_broker_config(
                                    key,
                                    default,
                                    &[(SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG, &levels.cluster)],
                                )
                            })
                            .collect()
                    } else {
                        let all = levels.in_precedence();
                        // Every known property, then the per-listener
                        // settings given (static or dynamic), as Kafka
                        // lists them.
                        let per_listener: std::collections::BTreeSet<&String> = levels
                            .own
                            .keys()
                            .chain(levels.cluster.keys())
                            .chain(levels.fixed.keys())
                            .filter(|key| key.starts_with("listener.name."))
                            .collect();
                        known_properties()
                            .map(|(key, default)| describe_broker_config(key, default, &all))
                            .chain(
                                per_listener
                                    .into_iter()
                                    .map(|key| describe_broker_config(key, "", &all)),
                            )
                            .collect()
                    }
                }
                other => {
                    return fail(
                        ResponseError::InvalidRequest,
                        format!("Unsupported resource type {other}"),
                    )
                }
            };
            let wanted = resource.configuration_keys.as_ref();
            let configs = described
                .into_iter()
                .filter(|d| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == d.name)))
                .map(|d| {
                    // Secrets are never shown (Kafka's PASSWORD type).
                    let sensitive = is_sensitive(&d.name);
                    let shown = |value: String| (!sensitive).then(|| string(value));
                    let mut entry = DescribeConfigsResourceResult::default()
                        .with_name(string(d.name))
                        .with_value(shown(d.value))
                        .with_read_only(d.read_only)
                        .with_config_source(d.source)
                        .with_is_sensitive(sensitive);
                    if request.include_synonyms {
                        entry = entry.with_synonyms(
                            d.synonyms
                                .into_iter()
                                .map(|(name, value, source)| {
                                    DescribeConfigsSynonym::default()
                                        .with_name(string(name))
                                        .with_value(shown(value))
                                        .with_source(source)
                                })
                                .collect(),
                        );
                    }
                    if version >= TYPES_VERSION_MIN {
                        entry = entry.with_config_type(d.config_type as i8).with_documentation(
                            if request.include_documentation {
                                d.doc.map(string)
                            } else {
                                None
                            },
                        );
                    }
                    entry
                })
                .collect();
            result.with_error_code(NONE).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies `change` to a topic's overrides and stores them; `Err` is the
/// error code and message of the resource's response.
async fn alter_topic(
    broker: &Broker,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), String>,
) -> Result<(), (i16, String)> {
    let Some(topic) = broker.metadata().topic(name).cloned() else {
        return Err((
            code(ResponseError::UnknownTopicOrPartition),
            format!("Topic {name} does not exist."),
        ));
    };
    let mut configs = topic.configs.clone();
    change(&mut configs).map_err(|message| (code(ResponseError::InvalidConfig), message))?;
    broker
        .set_topic_configs(name, configs, validate_only)
        .await
        .map_err(|error| (topic_error_code(&error), error.to_string()))
}

/// Applies `change` to the dynamic configs of a broker resource (`""` or
/// this broker's id) and stores them.
async fn alter_broker(
    broker: &Broker,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<(), String>,
) -> Result<(), (i16, String)> {
    if !name.is_empty() && name != broker.config.node_id.to_string() {
        return Err((
            code(ResponseError::InvalidRequest),
            format!(
                "Unexpected broker id, expected {} or empty string, but received {name}",
                broker.config.node_id
            ),
        ));
    }
    let mut configs = broker.dynamic_broker_configs(name);
    let before = configs.clone();
    change(&mut configs).map_err(|message| (code(ResponseError::InvalidConfig), message))?;
    check_listener_ssl(broker, name, &before, &configs)?;
    broker
        .set_broker_configs(name, configs, validate_only)
        .await
        .map_err(|error| (topic_error_code(&error), error.to_string()))
}

/// A change of a listener's `listener.name.<l>.ssl.*` (KIP-226) is made
/// for one broker (as Kafka requires), on an SSL listener of it, and only
/// if the material it names loads: a keystore that does not load is
/// refused here, not found broken at the next handshake.
fn check_listener_ssl(
    broker: &Broker,
    resource: &str,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Result<(), (i16, String)> {
    let changed: std::collections::BTreeSet<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .filter_map(|key| dynamic_listener_ssl(key).map(str::to_ascii_lowercase))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    if resource.is_empty() {
        return Err((
            code(ResponseError::InvalidRequest),
            "Cannot update these configs at default cluster level, broker id must be specified"
                .to_string(),
        ));
    }
    let cluster = broker.dynamic_broker_configs("");
    for listener in changed {
        let Some(name) = broker
            .config
            .listeners
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(&listener) && l.ssl.is_some())
            .map(|l| l.name.clone())
        else {
            return Err((
                code(ResponseError::InvalidConfig),
                format!("listener {listener} is not an SSL listener of this broker"),
            ));
        };
        let loaded = broker
            .config
            .ssl_with_dynamic(&name, Some(&cluster), Some(after))
            .and_then(|ssl| crate::tls::server_config(&name, &ssl));
        if let Err(error) = loaded {
            return Err((code(ResponseError::InvalidConfig), format!("{error:#}")));
        }
    }
    Ok(())
}

pub(super) async fn alter_configs(
    broker: &Broker,
    request: AlterConfigsRequest,
    origin: RequestContext<'_>,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let denied = config_denied(
            broker,
            origin,
            ApiKey::AlterConfigs,
            Operation::AlterConfigs,
            resource.resource_type,
            &name,
        );
        let outcome = match resource.resource_type {
            _ if denied.is_some() => Err(denied.unwrap_or_default()),
            RESOURCE_TOPIC => {
                alter_topic(broker, &name, request.validate_only, |configs| {
                    // AlterConfigs replaces the whole set of overrides.
                    let mut replacement = BTreeMap::new();
                    for config in &resource.configs {
                        let Some(value) = &config.value else {
                            return Err(format!("Null value not supported for: {}", config.name));
                        };
                        topic_config::validate(&config.name, value)?;
                        replacement.insert(config.name.to_string(), value.to_string());
                    }
                    *configs = replacement;
                    Ok(())
                })
                .await
            }
            RESOURCE_BROKER => {
                alter_broker(broker, &name, request.validate_only, |configs| {
                    let mut replacement = BTreeMap::new();
                    for config in &resource.configs {
                        let Some(value) = &config.value else {
                            return Err(format!("Null value not supported for: {}", config.name));
                        };
                        replacement.insert(config.name.to_string(), value.to_string());
                    }
                    *configs = replacement;
                    Ok(())
                })
                .await
            }
            other => Err((
                code(ResponseError::InvalidRequest),
                format!("Unsupported resource type {other}"),
            )),
        };
        let (error_code, message) = match outcome {
            Ok(()) => (NONE, None),
            Err((error_code, message)) => (error_code, Some(string(message))),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// One IncrementalAlterConfigs operation on a topic's overrides.
fn apply_operation(
    configs: &mut BTreeMap<String, String>,
    name: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<(), String> {
    let Some(def) = topic_config::definition(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let list_default = (def.config_type == ConfigType::List).then_some(def.default);
    apply_config_operation(configs, name, operation, value, list_default)?;
    match configs.get(name) {
        Some(value) if operation != OP_DELETE => topic_config::validate(name, value),
        _ => Ok(()),
    }
}

/// One IncrementalAlterConfigs operation on a broker's dynamic configs
/// (values are checked when the whole set is applied). A broker config is a
/// list when it is the synonym of a list-typed topic config
/// (`log.cleanup.policy`).
fn apply_broker_operation(
    configs: &mut BTreeMap<String, String>,
    name: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<(), String> {
    let list_default = TOPIC_CONFIGS
        .iter()
        .find(|def| {
            def.config_type == ConfigType::List
                && def.synonyms.iter().any(|(synonym, _)| *synonym == name)
        })
        .map(|def| def.default);
    apply_config_operation(configs, name, operation, value, list_default)
}

/// SET, DELETE, APPEND or SUBTRACT on `configs[name]`. `list_default` is
/// the value of a list-typed config when `configs` does not set it; `None`
/// when the config is not a list (APPEND and SUBTRACT are refused).
fn apply_config_operation(
    configs: &mut BTreeMap<String, String>,
    name: &str,
    operation: i8,
    value: Option<&str>,
    list_default: Option<&str>,
) -> Result<(), String> {
    let list_items = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    };
    match operation {
        OP_SET => {
            let value = value.ok_or_else(|| format!("Null value not supported for: {name}"))?;
            configs.insert(name.to_string(), value.to_string());
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            let Some(default) = list_default else {
                return Err(format!(
                    "Config value append/subtract is not allowed for config key {name}, which is not a list"
                ));
            };
            let mut items = list_items(configs.get(name).map_or(default, String::as_str));
            let given = list_items(value.unwrap_or(""));
            if operation == OP_APPEND {
                for item in given {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            } else {
                items.retain(|item| !given.contains(item));
            }
            configs.insert(name.to_string(), items.join(","));
        }
        other => return Err(format!("Unknown config operation {other}")),
    }
    Ok(())
}

pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
    origin: RequestContext<'_>,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let denied = config_denied(
            broker,
            origin,
            ApiKey::IncrementalAlterConfigs,
            Operation::AlterConfigs,
            resource.resource_type,
            &name,
        );
        let mut names: Vec<&str> = resource.configs.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let duplicated = names.windows(2).any(|pair| pair[0] == pair[1]);
        let outcome = if let Some(denied) = denied {
            Err(denied)
        } else if duplicated {
            Err((
                code(ResponseError::InvalidRequest),
                "Error due to duplicate config keys".to_string(),
            ))
        } else {
            match resource.resource_type {
                RESOURCE_TOPIC => {
                    alter_topic(broker, &name, request.validate_only, |configs| {
                        for config in &resource.configs {
                            apply_operation(
                                configs,
                                &config.name,
                                config.config_operation,
                                config.value.as_deref(),
                            )?;
                        }
                        Ok(())
                    })
                    .await
                }
                RESOURCE_BROKER => {
                    alter_broker(broker, &name, request.validate_only, |configs| {
                        for config in &resource.configs {
                            apply_broker_operation(
                                configs,
                                &config.name,
                                config.config_operation,
                                config.value.as_deref(),
                            )?;
                        }
                        Ok(())
                    })
                    .await
                }
                other => Err((
                    code(ResponseError::InvalidRequest),
                    format!("Unsupported resource type {other}"),
                )),
            }
        };
        let (error_code, message) = match outcome {
            Ok(()) => (NONE, None),
            Err((error_code, message)) => (error_code, Some(string(message))),
        };
        responses.push(
            IncrementalResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
