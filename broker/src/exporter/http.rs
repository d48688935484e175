//! The metrics listener (`metrics.listener`): HTTP/1.1 with hyper.
//!
//! - `GET /metrics`: every metric, in the OpenMetrics text format;
//! - `GET /health`: 200 while the process serves HTTP at all (liveness);
//! - `GET /ready`: 200 once the broker is registered in the cluster and its
//!   listeners accept clients, 503 before that and while it shuts down
//!   (readiness).
//!
//! At most [`CONNECTIONS_MAX`] scrapers at once, one request per
//! connection; one that has not sent its request headers within
//! [`HEADER_TIMEOUT`] is disconnected.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

const CONNECTIONS_MAX: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(answer(&broker, &request)) }
            });
            // One request per connection: an idle keep-alive connection
            // would hold one of the few slots for as long as it likes.
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = connection => if let Err(error) = served {
                    tracing::debug!(%peer, %error, "metrics connection ended");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn answer(broker: &Broker, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => Response::builder()
            .header(hyper::header::CONTENT_TYPE, OPENMETRICS)
            .body(Full::new(Bytes::from(super::scrape(broker))))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "")),
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" if broker.metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /health, /ready\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
