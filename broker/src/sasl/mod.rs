//! SASL authentication on SASL_PLAINTEXT and SASL_SSL listeners, as
//! Kafka's server authenticator does it: before a connection is
//! authenticated it may send only ApiVersions and SaslHandshake, then (after
//! a v1 handshake) SaslAuthenticate; anything else closes it, decided from
//! the request header before the body is decoded, and its frames are at
//! most `sasl.server.max.receive.size`. After a v0 handshake the client
//! sends the mechanism's tokens raw (size-prefixed, no Kafka header).
//!
//! Mechanisms: PLAIN (RFC 4616) against the users of the listener's JAAS
//! config; SCRAM-SHA-256 and SCRAM-SHA-512 ([`scram`]) against the
//! credentials in the cluster metadata, looked up when a client names its
//! user (so a change applies to the next connection). Unknown user and
//! wrong password give the same answer, and secrets are compared in
//! constant time; nothing secret is logged.

pub(crate) mod scram;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use protocol::codec::{self, Request, Response};
use subtle::ConstantTimeEq;

use coordinator::MetadataStore;

use crate::config::{Mechanism, SaslConfig, Secret};
use crate::errors::code;

/// Kafka's one message for a failed authentication, whatever failed.
const AUTHENTICATION_FAILED: &str = "Authentication failed: Invalid username or password";

/// Compared against when the user is unknown, so that an unknown user
/// takes as long as a wrong password.
const NO_PASSWORD: &str = "\u{0}no such user\u{0}";

/// What the connection does with a frame while it authenticates.
pub(crate) enum Gate {
    /// Handle it as any request (ApiVersions).
    Pass,
    /// Send this frame (size prefix included); with `close`, then close:
    /// the authentication failed.
    Answer { frame: Bytes, close: bool },
    /// Close without an answer, for this reason (logged).
    Close(String),
}

enum State {
    /// No handshake yet.
    Start,
    /// SaslHandshake chose `mechanism`; at v0 the tokens come raw. SCRAM's
    /// exchange is under way in `scram`.
    Handshaken {
        mechanism: Mechanism,
        raw: bool,
        scram: Option<scram::Exchange>,
    },
    /// Authenticated as `user` with `mechanism`.
    Done { user: String, mechanism: Mechanism },
}

/// What a client's token leads to.
enum Token {
    /// Send this token and wait for the client's next one.
    More(Vec<u8>),
    /// Authenticated; send this last token (empty for PLAIN).
    Done(Vec<u8>),
}

/// One connection's authentication.
pub(crate) struct Authenticator<'a> {
    config: &'a SaslConfig,
    /// Where SCRAM credentials are (the cluster metadata).
    store: &'a dyn MetadataStore,
    state: State,
    /// While re-authenticating (KIP-368): who the connection was, which
    /// it must stay.
    previous: Option<(String, Mechanism)>,
}

impl<'a> Authenticator<'a> {
    pub(crate) fn new(config: &'a SaslConfig, store: &'a dyn MetadataStore) -> Authenticator<'a> {
        Authenticator {
            config,
            store,
            state: State::Start,
            previous: None,
        }
    }

    /// KIP-368: an authenticated connection authenticates again (its
    /// client sent SaslHandshake). The principal and the mechanism must
    /// stay the same.
    pub(crate) fn reauthenticate(&mut self) {
        if let State::Done { user, mechanism } = std::mem::replace(&mut self.state, State::Start) {
            self.previous = Some((user, mechanism));
        }
    }

    /// How long a session lasts before it must re-authenticate
    /// (`connections.max.reauth.ms`; none when 0).
    pub(crate) fn session_lifetime(&self) -> Option<std::time::Duration> {
        (self.config.reauth_ms > 0).then(|| std::time::Duration::from_millis(self.config.reauth_ms))
    }

    pub(crate) fn authenticated(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// The principal, once authenticated: the SASL identity.
    pub(crate) fn principal(&self) -> Option<String> {
        match &self.state {
            State::Done { user, .. } => Some(crate::principal::user(user)),
            _ => None,
        }
    }

    /// The largest frame the connection may read now.
    pub(crate) fn frame_bytes_max(&self, configured: usize) -> usize {
        match self.state {
            State::Done { .. } => configured,
            _ => configured.min(self.config.max_receive_bytes),
        }
    }

    /// Handles a frame received before the connection is authenticated.
    pub(crate) fn step(&mut self, frame: Bytes) -> Gate {
        if let State::Handshaken { raw: true, .. } = self.state {
            // The mechanism's server token, raw (none at PLAIN's end).
            return match self.token(&frame) {
                Ok(Token::More(token) | Token::Done(token)) => {
                    let mut answer = Vec::with_capacity(4 + token.len());
                    answer.extend_from_slice(
                        &i32::try_from(token.len()).unwrap_or(i32::MAX).to_be_bytes(),
                    );
                    answer.extend_from_slice(&token);
                    Gate::Answer {
                        frame: Bytes::from(answer),
                        close: false,
                    }
                }
                Err(reason) => Gate::Close(reason),
            };
        }
        let Some((api_key, _)) = codec::peek_api(&frame) else {
            return Gate::Close("a frame too short for a request header".into());
        };
        let expected = match self.state {
            State::Start => {
                api_key == ApiKey::ApiVersions as i16 || api_key == ApiKey::SaslHandshake as i16
            }
            State::Handshaken { .. } => api_key == ApiKey::SaslAuthenticate as i16,
            State::Done { .. } => true,
        };
        if !expected {
            return Gate::Close(format!(
                "api key {api_key} before the SASL authentication is complete"
            ));
        }
        if api_key == ApiKey::ApiVersions as i16 {
            return Gate::Pass;
        }
        let request = match codec::decode_request(frame) {
            Ok(request) => request,
            Err(error) => return Gate::Close(format!("an undecodable SASL request: {error}")),
        };
        let version = request.version();
        let correlation_id = request.header.correlation_id;
        let (response, close) = match request.body {
            Request::SaslHandshake(body) => self.handshake(&body, version),
            Request::SaslAuthenticate(body) => self.authenticate(&body),
            _ => return Gate::Close("an unexpected request during the SASL handshake".into()),
        };
        match codec::encode_response(&response, version, correlation_id) {
            Ok(frame) => Gate::Answer { frame, close },
            Err(error) => Gate::Close(format!("encoding a SASL response failed: {error:#}")),
        }
    }

    fn handshake(&mut self, request: &SaslHandshakeRequest, version: i16) -> (Response, bool) {
        let enabled: Vec<StrBytes> = self
            .config
            .mechanisms
            .iter()
            .map(|mechanism| StrBytes::from_static_str(mechanism.name()))
            .collect();
        let response = SaslHandshakeResponse::default().with_mechanisms(enabled);
        match Mechanism::from_name(&request.mechanism)
            .filter(|m| self.config.mechanisms.contains(m))
            .filter(|m| self.previous.as_ref().is_none_or(|(_, before)| before == m))
        {
            Some(mechanism) => {
                self.state = State::Handshaken {
                    mechanism,
                    raw: version == 0,
                    scram: scram::Hashes::of(mechanism).map(scram::Exchange::Start),
                };
                (Response::SaslHandshake(response), false)
            }
            None => {
                tracing::info!(mechanism = %request.mechanism, "SASL mechanism not enabled; closing the connection");
                let response =
                    response.with_error_code(code(ResponseError::UnsupportedSaslMechanism));
                (Response::SaslHandshake(response), true)
            }
        }
    }

    fn authenticate(&mut self, request: &SaslAuthenticateRequest) -> (Response, bool) {
        match self.token(&request.auth_bytes) {
            Ok(token) => {
                let response = SaslAuthenticateResponse::default();
                let response = match token {
                    Token::More(token) => response.with_auth_bytes(Bytes::from(token)),
                    Token::Done(token) => response
                        .with_auth_bytes(Bytes::from(token))
                        .with_session_lifetime_ms(
                            i64::try_from(self.config.reauth_ms).unwrap_or(i64::MAX),
                        ),
                };
                (Response::SaslAuthenticate(response), false)
            }
            Err(_) => (
                Response::SaslAuthenticate(
                    SaslAuthenticateResponse::default()
                        .with_error_code(code(ResponseError::SaslAuthenticationFailed))
                        .with_error_message(Some(StrBytes::from_static_str(AUTHENTICATION_FAILED))),
                ),
                true,
            ),
        }
    }

    /// Takes the client's next token; authenticated when the mechanism is
    /// done. The error is for the log and names no secret (it is logged
    /// here).
    fn token(&mut self, token: &[u8]) -> Result<Token, String> {
        let State::Handshaken {
            mechanism, scram, ..
        } = &mut self.state
        else {
            unreachable!("tokens are only taken after a handshake");
        };
        let mechanism = *mechanism;
        let (user, last) = match scram {
            None => (plain(&self.config.plain_users, token)?, Vec::new()),
            Some(exchange) => {
                let store = self.store;
                let step = exchange.step(token, |user| {
                    store
                        .snapshot()
                        .scram_credentials
                        .get(user)?
                        .get(mechanism.name())
                        .cloned()
                });
                match step {
                    Ok(scram::Step::Challenge(challenge)) => return Ok(Token::More(challenge)),
                    Ok(scram::Step::Authenticated { user, last }) => (user, last),
                    Err(reason) => {
                        tracing::info!(mechanism = mechanism.name(), %reason, "SASL/SCRAM authentication failed");
                        return Err(reason);
                    }
                }
            }
        };
        if let Some((before, _)) = self.previous.take() {
            if before != user {
                tracing::info!(principal = %crate::principal::user(&before), "re-authentication as another user refused");
                return Err("re-authentication as another user".into());
            }
            tracing::debug!(principal = %crate::principal::user(&user), "SASL re-authenticated");
        } else {
            tracing::info!(principal = %crate::principal::user(&user), mechanism = mechanism.name(), "SASL authenticated");
        }
        self.state = State::Done { user, mechanism };
        Ok(Token::Done(last))
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. Returns the user.
fn plain(
    users: &std::collections::BTreeMap<String, Secret>,
    token: &[u8],
) -> Result<String, String> {
    let mut parts = token.split(|byte| *byte == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        tracing::info!("SASL/PLAIN authentication failed: a malformed token");
        return Err("a malformed PLAIN token".into());
    };
    let user = String::from_utf8_lossy(user).into_owned();
    let known = users.get(&user);
    let expected = known.map_or(NO_PASSWORD, Secret::expose);
    let matches = bool::from(expected.as_bytes().ct_eq(password));
    if known.is_none() || !matches {
        tracing::info!(%user, "SASL/PLAIN authentication failed: unknown user or wrong password");
        return Err("unknown user or wrong password".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        tracing::info!(%user, "SASL/PLAIN authentication failed: an authorization id other than the user");
        return Err("an authorization id other than the user".into());
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> std::collections::BTreeMap<String, Secret> {
        [("alice", "alice-secret"), ("bob", "")]
            .into_iter()
            .map(|(user, password)| (user.to_string(), Secret::new(password.to_string())))
            .collect()
    }

    #[test]
    fn plain_tokens_authenticate_only_a_known_user_with_its_password() {
        assert_eq!(
            plain(&users(), b"\0alice\0alice-secret"),
            Ok("alice".into())
        );
        assert_eq!(
            plain(&users(), b"alice\0alice\0alice-secret"),
            Ok("alice".into())
        );
        assert_eq!(plain(&users(), b"\0bob\0"), Ok("bob".into()));
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0alice\0alice-secre",
            b"\0mallory\0alice-secret",
            b"bob\0alice\0alice-secret",
            b"\0alice",
            b"\0alice\0alice-secret\0",
            b"",
        ] {
            assert!(plain(&users(), bad).is_err(), "{bad:?}");
        }
    }
}
