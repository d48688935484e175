//! One client connection.
//!
//! Requests are read and handled one at a time, in order, as Apache Kafka
//! does: a producer's pipelined batches to one partition must be appended in
//! the order they were sent. Responses go to a writer task through a bounded
//! queue, so reading and handling the next request overlaps with writing the
//! previous response, and a client that stops reading is not buffered for
//! without bound.
//!
//! Unlike Kafka, which mutes a connection until its request is answered, an
//! acks=all produce does not hold up the requests after it while it waits
//! for the replicas: its batches are appended in turn, and the wait goes in
//! the queue as a future the writer awaits in order. Responses still leave
//! in request order (clients rely on it), and at most
//! [`RESPONSES_QUEUED_MAX`] are outstanding; but a producer that pipelines
//! gets one replication round trip for many requests instead of one each.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use protocol::codec::{self, DecodeError};
use protocol::frame::{self, FRAME_PREFIX_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::handlers;
use crate::metrics::RequestTiming;
use crate::sasl;

/// Responses queued for the writer per connection before reading pauses
/// (counting those still waiting for replicas).
pub(crate) const RESPONSES_QUEUED_MAX: usize = 16;
/// A request body's buffer starts at most this large, so memory grows with
/// the bytes that really arrive, not with the size a prefix claims.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;
/// When a body's buffer is full it grows to this many times the bytes
/// received (never past the frame's size): memory stays within a bounded
/// multiple of what arrived, and a 1 MB produce request is moved once, 64
/// KiB of it, instead of 960 KiB over four doublings.
pub(crate) const READ_GROWTH: usize = 16;

/// A response frame in chunks to write in order (see
/// [`codec::encode_response_chunks`]); `Err` closes the connection.
type Encoded = Result<Vec<Bytes>, String>;

/// What the writer sends next, with its request's timing (none for what
/// the SASL gate answers) for the request metrics.
enum Outgoing {
    Now(Vec<Bytes>, Option<RequestTiming>),
    /// A response that is due once its produce is replicated.
    Later(
        Pin<Box<dyn Future<Output = Encoded> + Send>>,
        Option<RequestTiming>,
    ),
}

/// Who is at the other end of a connection, as its listener established
/// it before the first request: the peer's address, the listener, and the
/// principal (`User:ANONYMOUS` on PLAINTEXT and for TLS clients without a
/// certificate; the mapped certificate subject with mTLS; on a SASL
/// listener, the SASL identity once authenticated).
pub(crate) struct Session {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub principal: String,
}

/// Serves one connection: `reader` and `writer` are its two directions (a
/// TCP stream's halves, or a TLS stream's).
pub(crate) async fn serve<R, W>(
    (mut reader, writer): (R, W),
    session: Session,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // On a SASL listener the principal is recorded once authenticated.
    let span = tracing::info_span!(
        "connection",
        peer = %session.peer,
        listener = &*session.listener,
        principal = tracing::field::Empty,
    );
    let sasl_listener = broker
        .config
        .listeners
        .iter()
        .any(|l| *l.name == *session.listener && l.sasl.is_some());
    if !sasl_listener {
        span.record("principal", session.principal.as_str());
    }
    async move {
        let listener = session.listener.clone();
        let peer = session.peer;
        let mut principal = session.principal;
        // When the SASL session must re-authenticate by (KIP-368).
        let mut session_ends: Option<Instant> = None;
        tracing::debug!("accepted");
        let (responses, queue) = mpsc::channel::<Outgoing>(RESPONSES_QUEUED_MAX);
        // The writer cancels it when it stops, so that reading stops too.
        let closing = shutdown.child_token();
        let writing = tokio::spawn(
            write_responses(writer, queue, closing.clone(), broker.clone())
                .instrument(tracing::Span::current()),
        );
        let configured_max = broker.config.socket_request_max_bytes;
        // A SASL listener's connection authenticates first.
        let mut authenticator = broker
            .config
            .listeners
            .iter()
            .find(|l| *l.name == *listener)
            .and_then(|l| l.sasl.as_ref())
            .map(|config| sasl::Authenticator::new(config, &*broker.store));
        loop {
            let max = authenticator
                .as_ref()
                .map_or(configured_max, |a| a.frame_bytes_max(configured_max));
            let frame = tokio::select! {
                _ = closing.cancelled() => break,
                frame = read_frame(&mut reader, max) => frame,
            };
            let received = Instant::now();
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    tracing::debug!("client closed the connection");
                    break;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "closing connection");
                    break;
                }
            };
            if let Some(authenticator) = authenticator.as_mut() {
                // KIP-368: SaslHandshake on an authenticated connection
                // starts re-authentication; past its session's lifetime a
                // connection may send nothing else.
                let handshake = codec::peek_api(&frame)
                    .is_some_and(|(api_key, _)| api_key == ApiKey::SaslHandshake as i16);
                if authenticator.authenticated() {
                    if handshake {
                        authenticator.reauthenticate();
                    } else if session_ends.is_some_and(|ends| Instant::now() >= ends) {
                        tracing::info!("the SASL session expired without re-authentication (connections.max.reauth.ms); closing the connection");
                        break;
                    }
                }
            }
            if let Some(authenticator) = authenticator.as_mut().filter(|a| !a.authenticated()) {
                match authenticator.step(frame.clone()) {
                    sasl::Gate::Pass => {}
                    sasl::Gate::Answer { frame, close } => {
                        if responses.send(Outgoing::Now(vec![frame], None)).await.is_err() || close {
                            break;
                        }
                        if let Some(authenticated) = authenticator.principal() {
                            // Logged with every request of the connection
                            // from now on, and what ACLs check.
                            tracing::Span::current().record("principal", authenticated.as_str());
                            principal = authenticated;
                            session_ends =
                                authenticator.session_lifetime().map(|life| Instant::now() + life);
                        }
                        continue;
                    }
                    sasl::Gate::Close(reason) => {
                        tracing::info!(%reason, "closing an unauthenticated connection");
                        break;
                    }
                }
            }
            let origin = handlers::RequestContext {
                peer,
                listener: &listener,
                principal: &principal,
            };
            match handle_frame(&broker, frame, origin, received).await {
                Ok(Some(outgoing)) => {
                    if responses.send(outgoing).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%reason, "closing connection");
                    break;
                }
            }
        }
        drop(responses);
        let _ = writing.await;
    }
    .instrument(span)
    .await;
}

/// Reads one frame; `None` on a clean end of stream before a frame starts.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Bytes>, String> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(format!("read failed: {error}")),
    }
    let size = frame::check_request_size(prefix, max).map_err(|error| error.to_string())?;
    let mut body = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    while body.len() < size {
        let received = body.len();
        if received == body.capacity() {
            body.reserve((received * (READ_GROWTH - 1)).min(size - received));
        }
        let limit = size - body.len();
        let read = (&mut *reader)
            .take(limit as u64)
            .read_buf(&mut body)
            .await
            .map_err(|error| format!("read failed: {error}"))?;
        if read == 0 {
            return Err(format!(
                "connection closed after {} of {size} bytes of a request",
                body.len()
            ));
        }
    }
    Ok(Some(body.freeze()))
}

/// Decodes and handles one request; what to send, `Ok(None)` when no
/// response is due (Produce with acks=0); `Err` closes the connection.
async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    origin: handlers::RequestContext<'_>,
    received: Instant,
) -> Result<Option<Outgoing>, String> {
    let request = match codec::decode_request(frame) {
        Ok(request) => request,
        Err(DecodeError::ApiVersionsUnsupported {
            version,
            correlation_id,
        }) => {
            tracing::info!(
                version,
                correlation_id,
                "ApiVersions at an unsupported version: answering v0"
            );
            return codec::api_versions_unsupported_response(correlation_id)
                .map(|frame| Some(Outgoing::Now(vec![frame], None)))
                .map_err(|e| e.to_string());
        }
        Err(error) => return Err(error.to_string()),
    };
    let version = request.version();
    let correlation_id = request.header.correlation_id;
    let span = tracing::info_span!(
        "request",
        api_key = ?request.api_key,
        version,
        correlation_id,
        client_id = request.header.client_id.as_deref().unwrap_or(""),
    );
    let api_key = request.api_key;
    let timing = RequestTiming {
        api: api_key,
        received,
        started: Instant::now(),
    };
    let encode = move |response: codec::Response, splices| {
        codec::encode_response_chunks(&response, splices, version, correlation_id).map_err(
            |error| format!("encoding the {api_key:?} v{version} response failed: {error:#}"),
        )
    };
    let reply = handlers::handle(broker, request, origin)
        .instrument(span.clone())
        .await;
    Ok(match reply {
        handlers::Reply::Nothing => {
            broker.metrics.request_done(timing, None);
            None
        }
        handlers::Reply::Now(response) => {
            Some(Outgoing::Now(encode(response, Vec::new())?, Some(timing)))
        }
        handlers::Reply::Spliced(response, splices) => {
            Some(Outgoing::Now(encode(response, splices)?, Some(timing)))
        }
        handlers::Reply::Later(waiting) => Some(Outgoing::Later(
            Box::pin(async move { encode(waiting.await, Vec::new()) }.instrument(span)),
            Some(timing),
        )),
    })
}

/// Writes the responses in the order they were queued, until the queue
/// closes or something fails; then cancels `closing`.
async fn write_responses<W: AsyncWrite + Unpin>(
    writer: W,
    queue: mpsc::Receiver<Outgoing>,
    closing: CancellationToken,
    broker: Arc<Broker>,
) {
    write_in_order(BufWriter::new(writer), queue, &broker).await;
    closing.cancel();
}

async fn write_in_order<W: AsyncWrite + Unpin>(
    mut writer: BufWriter<W>,
    mut queue: mpsc::Receiver<Outgoing>,
    broker: &Broker,
) {
    while let Some(outgoing) = queue.recv().await {
        let (encoded, timing) = match outgoing {
            Outgoing::Now(response, timing) => (Ok(response), timing),
            Outgoing::Later(mut waiting, timing) => {
                // Not due yet: what is written so far goes out first.
                let ready = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
                let encoded = match ready {
                    Poll::Ready(encoded) => encoded,
                    Poll::Pending => {
                        if let Err(error) = writer.flush().await {
                            tracing::debug!(%error, "flush failed");
                            return;
                        }
                        waiting.await
                    }
                };
                (encoded, timing)
            }
        };
        let response = match encoded {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(%reason, "closing connection");
                return;
            }
        };
        // Small chunks gather in the buffer; a large one (record sets) goes
        // straight from the log read to the socket.
        let sending = Instant::now();
        for chunk in &response {
            if let Err(error) = writer.write_all(chunk).await {
                tracing::debug!(%error, "write failed");
                return;
            }
        }
        // Flush once the queue is drained, so pipelined responses share writes.
        if queue.is_empty() {
            if let Err(error) = writer.flush().await {
                tracing::debug!(%error, "flush failed");
                return;
            }
        }
        if let Some(timing) = timing {
            broker.metrics.request_done(timing, Some(sending));
        }
    }
    let _ = writer.shutdown().await;
}
