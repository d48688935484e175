//! Our Kafka client, for brokers talking to each other (replica fetches,
//! transaction markers and verification), the admin tool and the tests:
//! one connection, one request at a time (or pipelined with `send` and
//! `receive`), versions fixed per API and checked against the broker's
//! ApiVersions answer, responses bounded in size. TLS and the SASL client
//! belong here, written once for all of them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// Responses larger than this are refused (a describe of thousands of
/// partitions stays far below).
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The client id of [`Client::connect`].
pub const DEFAULT_CLIENT_ID: &str = "kbroker-client";
/// A read buffer above this size is not kept between responses.
const BUFFER_KEPT_MAX: usize = 16 * 1024 * 1024;

pub mod jaas;
pub mod properties;
pub mod sasl;

/// How to reach brokers: plain TCP, or TLS with a configuration (trusted
/// certificates, and a client certificate if the broker wants one); and
/// SASL credentials, on SASL_PLAINTEXT and SASL_SSL listeners.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<Arc<sasl::Credentials>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl Security {
    pub fn plaintext() -> Security {
        Security::default()
    }

    pub fn tls(config: Arc<rustls::ClientConfig>) -> Security {
        Security {
            tls: Some(config),
            sasl: None,
        }
    }

    /// The same, authenticating with SASL after ApiVersions.
    #[must_use]
    pub fn with_sasl(self, credentials: sasl::Credentials) -> Security {
        Security {
            sasl: Some(Arc::new(credentials)),
            ..self
        }
    }

    /// The protocol name Kafka gives this (`security.protocol`).
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }
}

/// A connection's byte stream, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

pub struct Client {
    stream: Stream,
    client_id: &'static str,
    correlation_id: i32,
    /// api key → (min, max) the broker supports.
    supported: HashMap<i16, (i16, i16)>,
    /// Responses are read into it. A response's record sets stay slices of
    /// it until the caller drops them (the replica fetcher, once it has
    /// appended them); then its memory is used again for the next one,
    /// without page faults or zero-filling.
    buffer: BytesMut,
}

impl Client {
    pub async fn connect(bootstrap: &str) -> anyhow::Result<Client> {
        Client::connect_as(bootstrap, DEFAULT_CLIENT_ID).await
    }

    /// Connects to the first broker of `bootstrap` (`host:port`, or a
    /// comma-separated list of them) that answers, naming itself
    /// `client_id` in every request.
    pub async fn connect_as(bootstrap: &str, client_id: &'static str) -> anyhow::Result<Client> {
        Client::connect_with(bootstrap, client_id, &Security::plaintext()).await
    }

    /// [`Client::connect_as`] over `security`: with TLS, the broker's
    /// certificate must be valid for the host or IP address dialled.
    pub async fn connect_with(
        bootstrap: &str,
        client_id: &'static str,
        security: &Security,
    ) -> anyhow::Result<Client> {
        let mut failure = None;
        for address in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let stream = match &security.tls {
                        None => Stream::Plain(stream),
                        Some(config) => {
                            let host = address
                                .rsplit_once(':')
                                .map_or(address, |(host, _)| host)
                                .trim_start_matches('[')
                                .trim_end_matches(']');
                            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                                .with_context(|| format!("{host} is no TLS server name"))?;
                            let connector = tokio_rustls::TlsConnector::from(config.clone());
                            let stream = connector
                                .connect(name, stream)
                                .await
                                .with_context(|| format!("TLS handshake with {address}"))?;
                            Stream::Tls(Box::new(stream))
                        }
                    };
                    let mut client = Client::handshake(stream, client_id).await?;
                    if let Some(credentials) = &security.sasl {
                        client
                            .authenticate(credentials)
                            .await
                            .with_context(|| format!("SASL authentication with {address}"))?;
                    }
                    return Ok(client);
                }
                Err(error) => {
                    failure = Some(
                        anyhow::Error::from(error).context(format!("connecting to {address}")),
                    );
                }
            }
        }
        Err(failure.unwrap_or_else(|| anyhow::anyhow!("no broker address in {bootstrap:?}")))
    }

    async fn handshake(stream: Stream, client_id: &'static str) -> anyhow::Result<Client> {
        let mut client = Client {
            stream,
            client_id,
            correlation_id: 0,
            supported: HashMap::new(),
            buffer: BytesMut::new(),
        };
        let versions = client
            .call_unchecked(
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str(client_id))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
                3,
            )
            .await?;
        if versions.error_code != 0 {
            bail!("ApiVersions failed with error {}", versions.error_code);
        }
        client.supported = versions
            .api_keys
            .iter()
            .map(|api| (api.api_key, (api.min_version, api.max_version)))
            .collect();
        Ok(client)
    }

    /// SaslHandshake v1, then SaslAuthenticate until the mechanism is done.
    async fn authenticate(&mut self, credentials: &sasl::Credentials) -> anyhow::Result<()> {
        let mechanism = credentials.mechanism.name();
        let handshake = self
            .call(
                SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
                1,
            )
            .await?;
        if handshake.error_code != 0 {
            let enabled: Vec<&str> = handshake
                .mechanisms
                .iter()
                .map(kafka_protocol::protocol::StrBytes::as_str)
                .collect();
            bail!(
                "the broker refused SASL mechanism {mechanism} (error {}; it has {enabled:?})",
                handshake.error_code
            );
        }
        let version = self
            .supported
            .get(&SaslAuthenticateRequest::KEY)
            .map_or(0, |(_, max)| (*max).min(2));
        let (mut exchange, mut token) = sasl::Exchange::start(credentials)?;
        loop {
            let answer = self
                .call(
                    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                    version,
                )
                .await?;
            if answer.error_code != 0 {
                bail!(
                    "error {}: {}",
                    answer.error_code,
                    answer.error_message.as_deref().unwrap_or("")
                );
            }
            match exchange.next(credentials, &answer.auth_bytes)? {
                Some(next) => token = next,
                None => return Ok(()),
            }
        }
    }

    /// Sends `request` at `version`, if the broker supports it.
    pub async fn call<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let correlation_id = self.send(request, version).await?;
        self.receive::<R>(correlation_id, version).await
    }

    async fn call_unchecked<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let correlation_id = self.send_unchecked(request, version).await?;
        self.receive::<R>(correlation_id, version).await
    }

    /// Sends `request` at `version` without waiting for its response, if
    /// the broker supports it; its correlation id, for [`Client::receive`].
    /// Requests sent so are answered in order.
    pub async fn send<R: Request>(&mut self, request: R, version: i16) -> anyhow::Result<i32> {
        match self.supported.get(&R::KEY) {
            Some((min, max)) if (*min..=*max).contains(&version) => {}
            _ => bail!(
                "the broker does not support version {version} of API {}",
                R::KEY
            ),
        }
        self.send_unchecked(request, version).await
    }

    async fn send_unchecked<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> anyhow::Result<i32> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(self.client_id)));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_u32(u32::try_from(body.len())?);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).await?;
        // TLS holds records back until flushed (no-op on TCP).
        self.stream.flush().await?;
        Ok(self.correlation_id)
    }

    /// Reads the next response, which must answer `correlation_id`: an `R`
    /// sent at `version`.
    pub async fn receive<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let size = self.stream.read_u32().await? as usize;
        if size > RESPONSE_BYTES_MAX {
            bail!("response of {size} bytes is larger than {RESPONSE_BYTES_MAX}");
        }
        let mut response = self.read_body(size).await?;
        let header = ResponseHeader::decode(
            &mut response,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        if header.correlation_id != correlation_id {
            bail!(
                "response to correlation id {} while waiting for {}",
                header.correlation_id,
                correlation_id
            );
        }
        let decoded = R::Response::decode(&mut response, version)?;
        if response.has_remaining() {
            bail!("{} bytes left after the response", response.remaining());
        }
        Ok(decoded)
    }

    /// The next `size` bytes of the stream. Kept buffers larger than
    /// [`BUFFER_KEPT_MAX`] are let go, so one large answer (a describe of
    /// thousands of partitions) does not stay allocated.
    async fn read_body(&mut self, size: usize) -> anyhow::Result<Bytes> {
        if self.buffer.capacity() > BUFFER_KEPT_MAX {
            self.buffer = BytesMut::new();
        }
        self.buffer.clear();
        // Reuses the allocation when nothing read into it is still held.
        self.buffer.reserve(size);
        while self.buffer.len() < size {
            let limit = (size - self.buffer.len()) as u64;
            if (&mut self.stream)
                .take(limit)
                .read_buf(&mut self.buffer)
                .await?
                == 0
            {
                bail!(
                    "connection closed after {} of {size} bytes of a response",
                    self.buffer.len()
                );
            }
        }
        Ok(self.buffer.split_to(size).freeze())
    }
}
