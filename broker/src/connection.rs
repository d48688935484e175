//! One client connection.
//!
//! Requests are read and handled one at a time, in order, as Apache Kafka
//! does: a producer's pipelined batches to one partition must be appended in
//! the order they were sent. Responses go to a writer task through a bounded
//! queue, so reading and handling the next request overlaps with writing the
//! previous response, and a client that stops reading is not buffered for
//! without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use protocol::codec::{self, DecodeError};
use protocol::frame::{self, FRAME_PREFIX_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::handlers;
use crate::state::Broker;

/// Responses queued for the writer per connection before reading pauses.
pub const RESPONSES_QUEUED_MAX: usize = 16;
/// A request body is read in pieces of at most this much, so memory grows
/// with the bytes that really arrive, not with the size a prefix claims.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("connection", %peer, listener = &*listener);
    async move {
        tracing::debug!("accepted");
        let (mut reader, writer) = stream.into_split();
        let (responses, queue) = mpsc::channel::<Vec<Bytes>>(RESPONSES_QUEUED_MAX);
        let writing = tokio::spawn(write_responses(writer, queue));
        let max = broker.config.socket_request_max_bytes;
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break,
                frame = read_frame(&mut reader, max) => frame,
            };
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
            let origin = handlers::Origin {
                peer,
                listener: &listener,
            };
            match handle_frame(&broker, frame, origin).await {
                Ok(Some(response)) => {
                    if responses.send(response).await.is_err() {
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
    .await
}

/// Reads one frame; `None` on a clean end of stream before a frame starts.
async fn read_frame(reader: &mut OwnedReadHalf, max: usize) -> Result<Option<Bytes>, String> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(format!("read failed: {error}")),
    }
    let size = frame::check_request_size(prefix, max).map_err(|error| error.to_string())?;
    let mut body = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    while body.len() < size {
        body.reserve((size - body.len()).min(READ_CHUNK_BYTES));
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

/// Decodes and handles one request; the response frame in chunks to write
/// in order (see [`codec::encode_response_chunks`]), `Ok(None)` when no
/// response is due (Produce with acks=0); `Err` closes the connection.
async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    origin: handlers::Origin<'_>,
) -> Result<Option<Vec<Bytes>>, String> {
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
                .map(|frame| Some(vec![frame]))
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
    async move {
        let api_key = request.api_key;
        let Some(response) = handlers::handle(broker, request, origin).await else {
            return Ok(None);
        };
        codec::encode_response_chunks(&response, version, correlation_id)
            .map(Some)
            .map_err(|error| {
                format!("encoding the {api_key:?} v{version} response failed: {error:#}")
            })
    }
    .instrument(span)
    .await
}

async fn write_responses(
    writer: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<Bytes>>,
) {
    let mut writer = BufWriter::new(writer);
    while let Some(response) = queue.recv().await {
        // Small chunks gather in the buffer; a large one (record sets) goes
        // straight from the log read to the socket.
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
    }
    let _ = writer.shutdown().await;
}
