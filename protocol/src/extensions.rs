//! Wire extensions of our own, between our brokers only. Each is a tagged
//! field: a broker (or a Kafka broker) that does not know the tag skips it.

/// A tagged field of a Fetch request's partition: the follower's log end
/// offset (an int64) when its `fetch_offset` is ahead of it, because what
/// lies between is being appended. The leader takes the smaller of the two
/// as what the follower has. Kafka's own tags there are 0 and 1.
pub const WRITTEN_END_TAG: i32 = 0x4b42;
