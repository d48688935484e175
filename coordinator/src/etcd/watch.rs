//! Keeps the cache current: one watch on the whole prefix, from the
//! revision after the last one applied. A broken stream is opened again
//! from where it stopped; a compacted start revision means events were
//! lost, and the cache is read again in full.

use std::sync::Arc;

use etcd_client::{EventType, GetOptions, WatchOptions};

use super::cache::KeyRevision;
use super::{backoff, timed, Inner};
use crate::CoordinatorError;

/// Reads every key of the cluster into the cache and publishes it; returns
/// the revision read at.
pub(crate) async fn load(inner: &Inner) -> Result<i64, CoordinatorError> {
    let mut client = inner.client.clone();
    let response = timed(client.get(inner.keys.all(), Some(GetOptions::new().with_prefix())))
        .await
        .map_err(super::unavailable)?;
    let revision = response
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let mut cache = inner.cache.lock();
    cache.clear();
    for kv in response.kvs() {
        if let Ok(key) = kv.key_str() {
            cache.put(
                key,
                kv.value(),
                KeyRevision {
                    create: kv.create_revision(),
                    modified: kv.mod_revision(),
                },
            );
        }
    }
    cache.read_up_to(revision);
    inner.metadata.send_replace(cache.publish());
    tracing::debug!(
        revision,
        keys = response.kvs().len(),
        "read the cluster metadata"
    );
    Ok(revision)
}

pub(crate) async fn run(inner: Arc<Inner>, read_at: i64) {
    let mut next = Some(read_at + 1);
    let mut failures = 0u32;
    while !inner.shutdown.is_cancelled() {
        let from = match next {
            Some(from) => from,
            None => match load(&inner).await {
                Ok(revision) => revision + 1,
                Err(error) => {
                    failures += 1;
                    pause(&inner, failures, &error).await;
                    continue;
                }
            },
        };
        next = Some(from);
        let mut client = inner.client.watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let mut stream = match timed(client.watch(inner.keys.all(), Some(options))).await {
            Ok(stream) => stream,
            Err(error) => {
                failures += 1;
                pause(&inner, failures, &super::unavailable(error)).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "the etcd watch failed");
                    break;
                }
            };
            failures = 0;
            if response.canceled() {
                if response.compact_revision() > 0 {
                    tracing::warn!(
                        from,
                        compacted = response.compact_revision(),
                        "the etcd watch fell behind a compaction; reading everything again"
                    );
                    next = None;
                } else {
                    tracing::warn!(
                        reason = response.cancel_reason(),
                        "etcd cancelled the watch"
                    );
                }
                break;
            }
            if response.events().is_empty() {
                continue;
            }
            let mut cache = inner.cache.lock();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                match event.event_type() {
                    EventType::Put => cache.put(
                        key,
                        kv.value(),
                        KeyRevision {
                            create: kv.create_revision(),
                            modified: kv.mod_revision(),
                        },
                    ),
                    EventType::Delete => cache.delete(key, kv.mod_revision()),
                }
                next = Some(kv.mod_revision() + 1);
            }
            inner.metadata.send_replace(cache.publish());
        }
        if !inner.shutdown.is_cancelled() {
            failures += 1;
            pause(
                &inner,
                failures,
                &CoordinatorError::Unavailable("the watch stream ended".into()),
            )
            .await;
        }
    }
}

async fn pause(inner: &Inner, failures: u32, error: &CoordinatorError) {
    let wait = backoff(failures);
    tracing::warn!(%error, retry_in = ?wait, "watching etcd failed");
    tokio::select! {
        _ = inner.shutdown.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}
