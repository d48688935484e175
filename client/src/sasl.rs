//! The client's side of SASL: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677) over SaslHandshake v1 and SaslAuthenticate, as
//! Kafka's clients speak them. The password is never printed: `Debug`
//! shows the user and the mechanism only.

use std::fmt;
use std::num::NonZeroU32;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

/// The most SCRAM iterations a server may ask of the client.
const ITERATIONS_MAX: u32 = 1_000_000;

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// 32 random bytes: a salt for a new SCRAM credential.
pub fn random_salt() -> anyhow::Result<Vec<u8>> {
    let mut salt = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("no random numbers for a salt"))?;
    Ok(salt)
}

/// SCRAM's SaltedPassword (PBKDF2 of the password), what
/// AlterUserScramCredentials carries.
pub fn salted_password(
    mechanism: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: i32,
) -> anyhow::Result<Vec<u8>> {
    let (algorithm, len) = match mechanism {
        Mechanism::ScramSha256 => (pbkdf2::PBKDF2_HMAC_SHA256, 32),
        Mechanism::ScramSha512 => (pbkdf2::PBKDF2_HMAC_SHA512, 64),
        Mechanism::Plain => bail!("PLAIN has no salted password"),
    };
    let iterations = u32::try_from(iterations)
        .ok()
        .and_then(NonZeroU32::new)
        .context("iterations must be positive")?;
    let mut out = vec![0; len];
    pbkdf2::derive(algorithm, iterations, salt, password.as_bytes(), &mut out);
    Ok(out)
}

/// Who the client authenticates as.
#[derive(Clone)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(mechanism: Mechanism, username: String, password: String) -> Credentials {
        Credentials {
            mechanism,
            username,
            password,
        }
    }
}

/// One exchange: the first token, then each next one from the server's.
pub(crate) enum Exchange {
    Plain,
    Scram(Box<ScramClient>),
}

pub(crate) struct ScramClient {
    digest: &'static digest::Algorithm,
    hmac: hmac::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
    client_first_bare: String,
    nonce: String,
    /// What the server's last message must prove, once client-final is sent.
    server_signature: Option<Vec<u8>>,
}

impl Exchange {
    /// The exchange and its first token.
    pub(crate) fn start(credentials: &Credentials) -> anyhow::Result<(Exchange, Vec<u8>)> {
        let user = &credentials.username;
        match credentials.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{user}\0{}", credentials.password).into_bytes();
                Ok((Exchange::Plain, token))
            }
            mechanism => {
                let (digest, hmac, pbkdf2) = if mechanism == Mechanism::ScramSha256 {
                    (
                        &digest::SHA256,
                        hmac::HMAC_SHA256,
                        pbkdf2::PBKDF2_HMAC_SHA256,
                    )
                } else {
                    (
                        &digest::SHA512,
                        hmac::HMAC_SHA512,
                        pbkdf2::PBKDF2_HMAC_SHA512,
                    )
                };
                let mut random = [0u8; 24];
                SystemRandom::new()
                    .fill(&mut random)
                    .map_err(|_| anyhow::anyhow!("no random numbers for a SCRAM nonce"))?;
                let nonce = STANDARD.encode(random);
                let name = user.replace('=', "=3D").replace(',', "=2C");
                let client_first_bare = format!("n={name},r={nonce}");
                let token = format!("n,,{client_first_bare}").into_bytes();
                Ok((
                    Exchange::Scram(Box::new(ScramClient {
                        digest,
                        hmac,
                        pbkdf2,
                        client_first_bare,
                        nonce,
                        server_signature: None,
                    })),
                    token,
                ))
            }
        }
    }

    /// The answer to the server's token: `Some` to send, `None` when the
    /// exchange is complete (the server proved it knows the credential).
    pub(crate) fn next(
        &mut self,
        credentials: &Credentials,
        server: &[u8],
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let Exchange::Scram(scram) = self else {
            return Ok(None);
        };
        let text = std::str::from_utf8(server).context("a SCRAM message that is not UTF-8")?;
        if let Some(expected) = &scram.server_signature {
            let proof = text
                .strip_prefix("v=")
                .context("the server's last SCRAM message has no verifier")?;
            if STANDARD.decode(proof).ok().as_deref() != Some(expected.as_slice()) {
                bail!("the server's SCRAM signature is wrong: it does not know the credential");
            }
            return Ok(None);
        }
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in text.split(',') {
            match attribute.split_at_checked(2) {
                Some(("r=", value)) => nonce = Some(value),
                Some(("s=", value)) => salt = Some(STANDARD.decode(value).context("SCRAM salt")?),
                Some(("i=", value)) => {
                    iterations = Some(value.parse::<u32>().context("SCRAM iterations")?);
                }
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            bail!("a SCRAM server-first message without nonce, salt or iterations");
        };
        if !nonce.starts_with(&scram.nonce) || nonce.len() == scram.nonce.len() {
            bail!("the server's SCRAM nonce does not extend ours");
        }
        // From the server: bounded before the key derivation runs that
        // many rounds (librdkafka's bound; Kafka's own maximum is 16384).
        if iterations > ITERATIONS_MAX {
            bail!("the server asks for {iterations} SCRAM iterations, more than {ITERATIONS_MAX}");
        }
        let iterations = NonZeroU32::new(iterations).context("zero SCRAM iterations")?;
        let mut salted = vec![0; scram.digest.output_len()];
        pbkdf2::derive(
            scram.pbkdf2,
            iterations,
            &salt,
            credentials.password.as_bytes(),
            &mut salted,
        );
        let sign = |key: &[u8], data: &[u8]| {
            hmac::sign(&hmac::Key::new(scram.hmac, key), data)
                .as_ref()
                .to_vec()
        };
        let client_key = sign(&salted, b"Client Key");
        let stored_key = digest::digest(scram.digest, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", scram.client_first_bare);
        let signature = sign(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = sign(&salted, b"Server Key");
        scram.server_signature = Some(sign(&server_key, auth_message.as_bytes()));
        Ok(Some(
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
        ))
    }
}
