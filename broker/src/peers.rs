//! Requests from this broker to the others (transaction markers to
//! partition leaders, transaction verification to coordinators): one
//! connection per broker over its inter-broker listener, opened when first
//! needed, dropped when a request on it fails. Requests to one broker take
//! turns on its connection; requests to different brokers do not wait for
//! each other.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context;
use coordinator::MetadataStore;
use kafka_protocol::protocol::Request;

use client::{Client, Security};

const CLIENT_ID: &str = "kbroker-peer";

/// How this broker reaches the others: their registrations' inter-broker
/// endpoints, over the inter-broker listener's security protocol.
#[derive(Clone)]
pub(crate) struct Connector {
    store: Arc<dyn MetadataStore>,
    security: Security,
}

impl Connector {
    pub(crate) fn new(store: Arc<dyn MetadataStore>, security: Security) -> Connector {
        Connector { store, security }
    }

    /// Where the other brokers are.
    pub(crate) fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// A connection to broker `node_id`, naming itself `client_id`.
    pub(crate) async fn connect(
        &self,
        node_id: i32,
        client_id: &'static str,
    ) -> anyhow::Result<Client> {
        let endpoint = self
            .store
            .snapshot()
            .brokers
            .get(&node_id)
            .and_then(|registration| registration.inter_broker_endpoint())
            .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port))
            .with_context(|| format!("broker {node_id} is not alive"))?;
        Client::connect_with(&endpoint, client_id, &self.security).await
    }
}
/// Longest a request to another broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Peers {
    connector: Connector,
    connections: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Client>>>>>,
}

impl Peers {
    pub(crate) fn new(connector: Connector) -> Peers {
        Peers {
            connector,
            connections: Mutex::default(),
        }
    }

    /// Sends `request` at `version` to broker `node_id` and waits for its answer.
    pub async fn call<R: Request>(
        &self,
        node_id: i32,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let slot = self.connections.lock().entry(node_id).or_default().clone();
        let mut connection = slot.lock().await;
        if connection.is_none() {
            *connection = Some(self.connector.connect(node_id, CLIENT_ID).await?);
        }
        let client = connection.as_mut().expect("connected above");
        match tokio::time::timeout(REQUEST_TIMEOUT, client.call(request, version)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                *connection = None;
                Err(error)
            }
            Err(_) => {
                *connection = None;
                anyhow::bail!("broker {node_id} did not answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }
}
