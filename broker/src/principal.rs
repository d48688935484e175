//! Principals, as Kafka names them (`User:<name>`): who a connection is,
//! for logs and (to come) the authorizer.

/// Kafka's principal for a client it knows nothing of: on PLAINTEXT, and
/// for a TLS client without a certificate.
pub(crate) const ANONYMOUS: &str = "User:ANONYMOUS";

/// The principal of a user name (a SASL identity, a mapped certificate
/// subject).
pub(crate) fn user(name: &str) -> String {
    format!("User:{name}")
}
