//! The Kafka wire protocol, on top of the `kafka-protocol` crate. No I/O.
//!
//! Layout:
//! - [`frame`]: the 4-byte length prefix and its limit (`socket.request.max.bytes`).
//! - [`api`]: the one table of APIs this broker implements and their version
//!   ranges; the ApiVersions response is built from it.
//! - [`codec`]: request header + body decoding, response encoding with the
//!   right header version.
//! - [`batch`]: RecordBatch v2 headers and CRC-32C, without decompressing.
//! - [`legacy`]: message sets v0/v1 (Produce v0-v2, Fetch v0-v3), up- and
//!   down-converted to and from record batches.
//! - [`chunked`]: the encoding buffer that keeps Fetch record sets by
//!   reference instead of copying them into the response.
//! - [`extensions`]: tagged fields of our own, between our brokers.
//!
//! Errors from the generated codec (`anyhow`) are converted to [`codec::DecodeError`]
//! here, at the crate boundary.

pub mod api;
pub mod batch;
pub mod chunked;
pub mod codec;
pub mod extensions;
pub mod frame;
pub mod legacy;

pub use kafka_protocol;
