//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) on the server's
//! side, as Kafka's ScramSaslServer speaks them: client-first, server-first,
//! client-final, server-final. Credentials are what
//! [`coordinator::ScramCredential`] holds (salt, iterations, StoredKey,
//! ServerKey), never a password.
//!
//! A user nobody knows gets a server-first as any user does (a salt derived
//! from the name, so the same each time) and fails at the proof: an unknown
//! user and a wrong password look the same from outside.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use coordinator::ScramCredential;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use crate::config::Mechanism;

/// Kafka's bounds on a credential's iterations.
pub(crate) const ITERATIONS_MIN: i32 = 4096;
pub(crate) const ITERATIONS_MAX: i32 = 16384;
/// Bytes of randomness in the server's part of the nonce.
const SERVER_NONCE_BYTES: usize = 24;
/// Bytes of salt in a credential made here.
const SALT_BYTES: usize = 32;

/// The hash functions of one SCRAM mechanism.
#[derive(Clone, Copy)]
pub(crate) struct Hashes {
    digest: &'static digest::Algorithm,
    hmac: hmac::Algorithm,
    pbkdf2: pbkdf2::Algorithm,
}

impl Hashes {
    /// `None` for a mechanism that is not SCRAM.
    pub(crate) fn of(mechanism: Mechanism) -> Option<Hashes> {
        match mechanism {
            Mechanism::ScramSha256 => Some(Hashes {
                digest: &digest::SHA256,
                hmac: hmac::HMAC_SHA256,
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA256,
            }),
            Mechanism::ScramSha512 => Some(Hashes {
                digest: &digest::SHA512,
                hmac: hmac::HMAC_SHA512,
                pbkdf2: pbkdf2::PBKDF2_HMAC_SHA512,
            }),
            Mechanism::Plain => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac, key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest, data).as_ref().to_vec()
    }

    fn output_len(self) -> usize {
        self.digest.output_len()
    }

    /// The credential of SaltedPassword (what AlterUserScramCredentials
    /// carries).
    pub(crate) fn credential(
        self,
        salt: Vec<u8>,
        iterations: i32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
        }
    }

    /// SaltedPassword: PBKDF2 of the password.
    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: i32) -> Vec<u8> {
        let iterations = u32::try_from(iterations)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        let mut out = vec![0; self.output_len()];
        pbkdf2::derive(self.pbkdf2, iterations, salt, password, &mut out);
        out
    }

    /// A new credential for `password` with a random salt.
    pub(crate) fn credential_for_password(
        self,
        password: &str,
        iterations: i32,
    ) -> ScramCredential {
        let salt = random_bytes(SALT_BYTES);
        let salted = self.salted_password(password.as_bytes(), &salt, iterations);
        self.credential(salt, iterations, &salted)
    }
}

fn random_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0; count];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator works");
    bytes
}

/// A credential for a user nobody knows: its salt derived from the name
/// with a key random per process (the same user gets the same salt each
/// time, as a real one would); its keys random, so no proof matches.
fn unknown_user_credential(hashes: Hashes, user: &str) -> ScramCredential {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    let key = KEY.get_or_init(|| random_bytes(32));
    let mut salt = hashes.hmac(key, user.as_bytes());
    salt.truncate(SALT_BYTES);
    ScramCredential {
        salt,
        iterations: ITERATIONS_MIN,
        stored_key: random_bytes(hashes.output_len()),
        server_key: random_bytes(hashes.output_len()),
    }
}

/// The server's side of one SCRAM exchange.
pub(crate) enum Exchange {
    /// Waiting for client-first.
    Start(Hashes),
    /// Server-first sent; waiting for client-final.
    Challenged(Box<Challenge>),
    /// Done or failed: nothing more is accepted.
    Over,
}

/// What the server keeps between server-first and client-final.
pub(crate) struct Challenge {
    hashes: Hashes,
    user: String,
    /// The client's GS2 header, which client-final's `c=` must repeat.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The client's part of `nonce`, in bytes.
    client_nonce_len: usize,
    credential: ScramCredential,
}

/// What a message of the client leads to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send this challenge and wait for the next message.
    Challenge(Vec<u8>),
    /// Authenticated as the user; send this last message.
    Authenticated { user: String, last: Vec<u8> },
}

impl Exchange {
    /// Takes the client's next message. `credential` finds a user's
    /// credential for this mechanism. An error is for the log: it names no
    /// secret, and the client only learns that authentication failed.
    pub(crate) fn step(
        &mut self,
        message: &[u8],
        credential: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Step, String> {
        match std::mem::replace(self, Exchange::Over) {
            Exchange::Start(hashes) => {
                let first = ClientFirst::parse(message)?;
                let credential = credential(&first.user)
                    .unwrap_or_else(|| unknown_user_credential(hashes, &first.user));
                let nonce = format!(
                    "{}{}",
                    first.nonce,
                    STANDARD.encode(random_bytes(SERVER_NONCE_BYTES))
                );
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    STANDARD.encode(&credential.salt),
                    credential.iterations
                );
                let challenge = server_first.clone().into_bytes();
                *self = Exchange::Challenged(Box::new(Challenge {
                    hashes,
                    user: first.user,
                    gs2_header: first.gs2_header,
                    client_first_bare: first.bare,
                    server_first,
                    client_nonce_len: first.nonce.len(),
                    nonce,
                    credential,
                }));
                Ok(Step::Challenge(challenge))
            }
            Exchange::Challenged(challenge) => {
                let Challenge {
                    hashes,
                    user,
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                    client_nonce_len,
                    credential,
                } = *challenge;
                let last = client_final(
                    hashes,
                    message,
                    &gs2_header,
                    &nonce,
                    nonce.len() - client_nonce_len,
                    &format!("{client_first_bare},{server_first},"),
                    &credential,
                )
                .map_err(|reason| format!("user {user}: {reason}"))?;
                Ok(Step::Authenticated { user, last })
            }
            Exchange::Over => Err("a SCRAM message after the exchange ended".into()),
        }
    }
}

/// A parsed client-first message.
struct ClientFirst {
    gs2_header: String,
    user: String,
    nonce: String,
    bare: String,
}

impl ClientFirst {
    /// `gs2-header client-first-bare`: `n,[a=authzid],n=user,r=nonce[,ext]`.
    fn parse(message: &[u8]) -> Result<ClientFirst, String> {
        let text = std::str::from_utf8(message).map_err(|_| "client-first is not UTF-8")?;
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid_field), Some(bare)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("client-first has no GS2 header".into());
        };
        // No channel binding: "n", or "y" (the client could but thinks we
        // cannot). "p=..." asks for one we do not offer.
        if flag != "n" && flag != "y" {
            return Err("client-first asks for channel binding".into());
        }
        let authzid = match authzid_field {
            "" => None,
            a => Some(
                a.strip_prefix("a=")
                    .ok_or("client-first's authzid is malformed")
                    .and_then(|name| {
                        decode_name(name).ok_or("client-first's authzid is malformed")
                    })?,
            ),
        };
        let mut attributes = bare.split(',');
        let user = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or("client-first has no user name")?;
        let user = decode_name(user).ok_or("client-first's user name is malformed")?;
        if user.is_empty() {
            return Err("client-first's user name is empty".into());
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or("client-first has no nonce")?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("client-first's nonce is not printable".into());
        }
        for extension in attributes {
            // Kafka's only extension is tokenauth (delegation tokens),
            // which this broker does not issue.
            if extension == "tokenauth=true" {
                return Err("delegation token authentication is not supported".into());
            }
        }
        if authzid.as_ref().is_some_and(|a| *a != user) {
            return Err(format!(
                "user {user}: an authorization id other than the user"
            ));
        }
        Ok(ClientFirst {
            gs2_header: format!("{flag},{authzid_field},"),
            user,
            nonce: nonce.to_string(),
            bare: bare.to_string(),
        })
    }
}

/// A SCRAM `saslname`: `=2C` is `,`, `=3D` is `=`, no other `=`.
fn decode_name(name: &str) -> Option<String> {
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        decoded.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Some(decoded)
}

/// Checks client-final (`c=...,r=...[,ext],p=...`) and returns
/// server-final (`v=...`).
fn client_final(
    hashes: Hashes,
    message: &[u8],
    gs2_header: &str,
    nonce: &str,
    server_part_len: usize,
    auth_message_start: &str,
    credential: &ScramCredential,
) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(message).map_err(|_| "client-final is not UTF-8")?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or("client-final has no proof")?;
    let mut attributes = without_proof.split(',');
    let binding = attributes
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or("client-final has no channel binding")?;
    if STANDARD.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
        return Err("client-final's channel binding differs from client-first's header".into());
    }
    let final_nonce = attributes
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("client-final has no nonce")?;
    // RFC 5802: the nonce the server sent. librdkafka before 2.6.1 sends
    // its own part once more in front of it (librdkafka#4895); Kafka 3.8.1
    // to 3.9 accept that, and so do we (exactly that form, no other).
    let client_part = &nonce[..nonce.len() - server_part_len];
    let librdkafka_form = final_nonce
        .strip_prefix(client_part)
        .is_some_and(|rest| rest == nonce);
    if final_nonce != nonce && !librdkafka_form {
        return Err("client-final's nonce is not the server's".into());
    }
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| "client-final's proof is not base64")?;
    if proof.len() != hashes.output_len() {
        return Err("client-final's proof has the wrong length".into());
    }
    let auth_message = format!("{auth_message_start}{without_proof}");
    let client_signature = hashes.hmac(&credential.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    let stored_key = hashes.hash(&client_key);
    if !bool::from(stored_key.ct_eq(&credential.stored_key)) {
        return Err("wrong password or unknown user".into());
    }
    let server_signature = hashes.hmac(&credential.server_key, auth_message.as_bytes());
    Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The client's side, as RFC 5802 describes it, for tests.
    pub(crate) struct Client {
        pub hashes: Hashes,
        pub user: String,
        pub password: String,
        pub nonce: String,
        /// Sends its nonce again in front of the server's, as librdkafka
        /// before 2.6.1 does.
        pub repeat_nonce: bool,
    }

    impl Client {
        pub(crate) fn first(&self) -> Vec<u8> {
            format!("n,,n={},r={}", self.user, self.nonce).into_bytes()
        }

        /// client-final for `server_first`, and the server signature it expects.
        pub(crate) fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut fields = server_first.split(',');
            let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
            let salt = STANDARD
                .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
                .unwrap();
            let iterations: i32 = fields.next().unwrap()[2..].parse().unwrap();
            let salted = self
                .hashes
                .salted_password(self.password.as_bytes(), &salt, iterations);
            let client_key = self.hashes.hmac(&salted, b"Client Key");
            let stored_key = self.hashes.hash(&client_key);
            let sent_nonce = if self.repeat_nonce {
                format!("{}{nonce}", self.nonce)
            } else {
                nonce.to_string()
            };
            let without_proof = format!("c=biws,r={sent_nonce}");
            let auth_message = format!(
                "n={},r={},{server_first},{without_proof}",
                self.user, self.nonce
            );
            let signature = self.hashes.hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = self.hashes.hmac(&salted, b"Server Key");
            let expected = format!(
                "v={}",
                STANDARD.encode(self.hashes.hmac(&server_key, auth_message.as_bytes()))
            );
            (
                format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
                expected.into_bytes(),
            )
        }
    }

    fn exchange(
        mechanism: Mechanism,
        password: &str,
        stored: &ScramCredential,
        user: &str,
    ) -> Result<Step, String> {
        exchange_as(mechanism, password, stored, user, false)
    }

    fn exchange_as(
        mechanism: Mechanism,
        password: &str,
        stored: &ScramCredential,
        user: &str,
        repeat_nonce: bool,
    ) -> Result<Step, String> {
        let hashes = Hashes::of(mechanism).unwrap();
        let client = Client {
            hashes,
            user: user.into(),
            password: password.into(),
            nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            repeat_nonce,
        };
        let mut server = Exchange::Start(hashes);
        let lookup = |name: &str| (name == "alice").then(|| stored.clone());
        let Step::Challenge(server_first) = server.step(&client.first(), lookup)? else {
            panic!("no challenge");
        };
        let (last, expected) = client.last(&server_first);
        let step = server.step(&last, |_| None)?;
        if let Step::Authenticated { last, .. } = &step {
            assert_eq!(*last, expected, "the server signature verifies");
        }
        Ok(step)
    }

    #[test]
    fn the_right_password_authenticates_and_others_fail_alike() {
        for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            let hashes = Hashes::of(mechanism).unwrap();
            let stored = hashes.credential_for_password("alice-secret", 4096);
            assert!(matches!(
                exchange(mechanism, "alice-secret", &stored, "alice"),
                Ok(Step::Authenticated { user, .. }) if user == "alice"
            ));
            assert!(exchange(mechanism, "wrong", &stored, "alice").is_err());
            assert!(exchange(mechanism, "alice-secret", &stored, "mallory").is_err());
            // librdkafka before 2.6.1: its nonce once more in front.
            assert!(exchange_as(mechanism, "alice-secret", &stored, "alice", true).is_ok());
            assert!(exchange_as(mechanism, "wrong", &stored, "alice", true).is_err());
        }
    }

    /// RFC 7677's example exchange (user "user", password "pencil").
    #[test]
    fn rfc_7677_test_vector() {
        let hashes = Hashes::of(Mechanism::ScramSha256).unwrap();
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = hashes.salted_password(b"pencil", &salt, 4096);
        let credential = hashes.credential(salt, 4096, &salted);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let message = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (start, _) = auth_message.split_at(auth_message.find(",c=").unwrap() + 1);
        let last = client_final(
            hashes,
            message.as_bytes(),
            "n,,",
            "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".len(),
            start,
            &credential,
        )
        .unwrap();
        assert_eq!(
            last,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn malformed_messages_fail_without_panicking() {
        let hashes = Hashes::of(Mechanism::ScramSha256).unwrap();
        let stored = hashes.credential_for_password("alice-secret", 4096);
        for first in [
            &b""[..],
            b"n",
            b"n,,",
            b"p=tls-unique,,n=alice,r=abc",
            b"n,,n=alice",
            b"n,,r=abc,n=alice",
            b"n,,n=,r=abc",
            b"n,,n=al=ice,r=abc",
            b"n,,n=alice,r=",
            b"n,,n=alice,r=a\x01c",
            b"n,a=bob,n=alice,r=abc",
            b"n,,n=alice,r=abc,tokenauth=true",
            b"\xff\xfe",
        ] {
            let mut server = Exchange::Start(hashes);
            assert!(
                server.step(first, |_| Some(stored.clone())).is_err(),
                "{first:?}"
            );
        }
        let client = Client {
            hashes,
            user: "alice".into(),
            password: "alice-secret".into(),
            nonce: "abc".into(),
            repeat_nonce: false,
        };
        let mut server = Exchange::Start(hashes);
        let Ok(Step::Challenge(server_first)) =
            server.step(&client.first(), |_| Some(stored.clone()))
        else {
            panic!("no challenge");
        };
        let (good, _) = client.last(&server_first);
        let good = String::from_utf8(good).unwrap();
        let nonce = std::str::from_utf8(&server_first).unwrap()[2..]
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let proof = good.rsplit_once(",p=").unwrap().1.to_string();
        for last in [
            String::new(),
            format!("c=biws,r={nonce}"),
            format!("c=biws,r=abc,p={proof}"),
            format!("c=biws,r={nonce}x,p={proof}"),
            format!("c=biws,r=ab{nonce},p={proof}"),
            format!("c=biws,r=abcabc{nonce},p={proof}"),
            format!("c=eSws,r={nonce},p={proof}"),
            format!("c=biws,r={nonce},p=!!!"),
            format!("c=biws,r={nonce},p=AAAA"),
            format!("r={nonce},p={proof}"),
        ] {
            let mut replay = Exchange::Challenged(Box::new(Challenge {
                hashes,
                user: "alice".into(),
                gs2_header: "n,,".into(),
                client_first_bare: "n=alice,r=abc".into(),
                server_first: String::from_utf8(server_first.clone()).unwrap(),
                nonce: nonce.clone(),
                client_nonce_len: 3,
                credential: stored.clone(),
            }));
            assert!(replay.step(last.as_bytes(), |_| None).is_err(), "{last}");
        }
        // The good one works once; the exchange then accepts nothing.
        assert!(server.step(good.as_bytes(), |_| None).is_ok());
        assert!(server.step(good.as_bytes(), |_| None).is_err());
    }

    #[test]
    fn names_decode_as_rfc_5802_escapes_them() {
        assert_eq!(decode_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_name("plain").as_deref(), Some("plain"));
        assert_eq!(decode_name("a=2"), None);
        assert_eq!(decode_name("a=41"), None);
    }
}
