//! The records of `__transaction_state`, in Apache Kafka's formats (key v0
//! `(transactional id)`, value v0), so that the topic means the same to us
//! as to Kafka's tools. A null value is a tombstone: the transactional id
//! expired. Decoding checks every length against the bytes present.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::internal_topics::{
    get_i16, get_i32, get_i64, get_string, need, put_string, RecordError,
};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// A transaction's state, with Kafka's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names, as DescribeTransactions and ListTransactions show them.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// What `__transaction_state` holds for a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the transaction, by topic.
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

pub(crate) fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

pub(crate) fn decode_key(mut buf: Bytes) -> Result<String, RecordError> {
    match get_i16(&mut buf)? {
        KEY_VERSION => get_string(&mut buf),
        version => Err(RecordError(format!(
            "unknown transaction key version {version}"
        ))),
    }
}

impl TxnValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(VALUE_VERSION);
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.timeout_ms);
        buf.put_i8(self.state.code());
        buf.put_i32(self.partitions.len() as i32);
        for (topic, partitions) in &self.partitions {
            put_string(&mut buf, topic);
            buf.put_i32(partitions.len() as i32);
            for partition in partitions {
                buf.put_i32(*partition);
            }
        }
        buf.put_i64(self.last_update_ms);
        buf.put_i64(self.start_ms);
        buf.freeze()
    }

    pub(crate) fn decode(mut buf: Bytes) -> Result<TxnValue, RecordError> {
        let version = get_i16(&mut buf)?;
        if version != VALUE_VERSION {
            return Err(RecordError(format!(
                "unknown transaction value version {version}"
            )));
        }
        let producer_id = get_i64(&mut buf)?;
        let producer_epoch = get_i16(&mut buf)?;
        let timeout_ms = get_i32(&mut buf)?;
        need(&buf, 1)?;
        let state = TxnState::from_code(buf.get_i8())
            .ok_or_else(|| RecordError("unknown transaction status".into()))?;
        let topics = get_i32(&mut buf)?;
        let mut partitions = Vec::new();
        // Each topic takes at least 6 bytes: no count can make us allocate
        // more than the record holds.
        if topics > 0 {
            need(&buf, topics as usize * 6)?;
            for _ in 0..topics {
                let topic = get_string(&mut buf)?;
                let count = get_i32(&mut buf)?.max(0) as usize;
                need(&buf, count * 4)?;
                partitions.push((topic, (0..count).map(|_| buf.get_i32()).collect()));
            }
        }
        Ok(TxnValue {
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms: get_i64(&mut buf)?,
            start_ms: get_i64(&mut buf)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let value = TxnValue {
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: vec![
                ("orders".into(), vec![0, 2]),
                ("__consumer_offsets".into(), vec![7]),
            ],
            last_update_ms: 1_700_000_000_000,
            start_ms: 1_699_999_999_000,
        };
        assert_eq!(TxnValue::decode(value.encode()).unwrap(), value);
        assert_eq!(decode_key(encode_key("tx-1")).unwrap(), "tx-1");
        let encoded = value.encode();
        for cut in 0..encoded.len() {
            assert!(
                TxnValue::decode(encoded.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = BytesMut::from(&encoded[..17]);
        huge.put_i32(i32::MAX);
        assert!(TxnValue::decode(huge.freeze()).is_err());
    }
}
