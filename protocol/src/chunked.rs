//! An encoding buffer that keeps large record sets by reference.
//!
//! A Fetch response is mostly record batches read from the log as [`Bytes`].
//! Encoding it into one contiguous buffer would copy every byte once more
//! (and fault in fresh pages for megabytes of buffer). [`ChunkedBuf`] instead
//! recognises, in `put_slice`, a slice that lies inside one of the record
//! sets it was given, and keeps that [`Bytes`] as a chunk of its own; the
//! bytes around it are encoded as usual. The connection then writes the
//! chunks one after another.
//!
//! A record set can also be sent in pieces that are not one `Bytes` (a
//! leader's batches from memory: each batch's header and its records are
//! apart): a [`Splice`] puts a stand-in of their joined length in the
//! message, and the buffer writes the pieces where the encoder writes the
//! stand-in. Stand-ins point into one zeroed region that is never read.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a chunk of its own costs a write.
pub const SHARE_MIN_BYTES: usize = 16 * 1024;

/// The longest record set a [`Splice`] stands in for; longer ones are
/// joined (copied) instead.
pub const SPLICE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// What stand-ins point into, allocated zeroed on first use: memory the
/// kernel maps only when it is read, and nothing reads it.
static STAND_IN: OnceLock<Bytes> = OnceLock::new();

fn stand_in(len: usize) -> Bytes {
    STAND_IN
        .get_or_init(|| Bytes::from(vec![0u8; SPLICE_MAX_BYTES]))
        .slice(..len)
}

fn stand_in_start() -> Option<usize> {
    STAND_IN.get().map(|region| region.as_ptr() as usize)
}

/// `pieces` in one `Bytes` (a copy, unless there is one piece).
pub fn join(pieces: &[Bytes]) -> Bytes {
    if let [one] = pieces {
        return one.clone();
    }
    let mut joined = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in pieces {
        joined.extend_from_slice(piece);
    }
    joined.freeze()
}

fn is_stand_in(src: &[u8]) -> bool {
    let Some(start) = stand_in_start() else {
        return false;
    };
    let at = src.as_ptr() as usize;
    !src.is_empty() && start <= at && at < start + SPLICE_MAX_BYTES
}

/// A record set in pieces, to be written where the encoder writes its
/// stand-in (see the module documentation).
#[derive(Debug)]
pub struct Splice {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Splice {
    /// What to put in a message for the record set `pieces` joined: one
    /// piece as it is; several as a stand-in, with the [`Splice`] to hand
    /// to the encoder; more than [`SPLICE_MAX_BYTES`] joined.
    pub fn new(mut pieces: Vec<Bytes>) -> (Bytes, Option<Splice>) {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if pieces.len() <= 1 {
            return (pieces.pop().unwrap_or_default(), None);
        }
        if len > SPLICE_MAX_BYTES {
            return (join(&pieces), None);
        }
        (stand_in(len), Some(Splice { pieces, len }))
    }
}

#[derive(Debug)]
enum Chunk {
    Own(BytesMut),
    Shared(Bytes),
}

/// See the module documentation.
#[derive(Debug)]
pub struct ChunkedBuf {
    /// Finished chunks, in order.
    done: Vec<Chunk>,
    done_len: usize,
    /// Where encoding goes on.
    tail: BytesMut,
    /// The record sets that may be kept by reference, in the order the
    /// encoder writes them.
    shared: Vec<Bytes>,
    /// Where the search of `shared` starts: the last one matched. Record
    /// sets are met in order, so a response with many partitions is matched
    /// in one pass (one met out of order would only be copied).
    next_shared: usize,
    /// The pieces of the stand-ins still to meet, in the order the encoder
    /// writes them.
    splices: VecDeque<Splice>,
    /// A stand-in met without its splice: the encoding is void.
    broken: Option<String>,
}

impl ChunkedBuf {
    pub fn new(capacity: usize, mut shared: Vec<Bytes>, splices: Vec<Splice>) -> ChunkedBuf {
        shared.retain(|bytes| !is_stand_in(bytes));
        ChunkedBuf {
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity),
            shared,
            next_shared: 0,
            splices: splices.into(),
            broken: None,
        }
    }

    /// Writes the pieces of the next splice for the stand-in `src`.
    fn splice(&mut self, src: &[u8]) {
        let splice = match self.splices.pop_front() {
            Some(splice)
                if splice.len == src.len() && stand_in_start() == Some(src.as_ptr() as usize) =>
            {
                splice
            }
            other => {
                self.broken.get_or_insert_with(|| {
                    format!(
                        "a record set stand-in of {} bytes met where {} was due",
                        src.len(),
                        other.map_or("none".to_string(), |s| format!("one of {} bytes", s.len))
                    )
                });
                return;
            }
        };
        for piece in splice.pieces {
            if piece.len() < SHARE_MIN_BYTES {
                self.tail.extend_from_slice(&piece);
            } else {
                self.push_shared(piece);
            }
        }
    }

    /// Ends the chunk being encoded and adds `bytes` as a chunk of its own.
    fn push_shared(&mut self, bytes: Bytes) {
        let own = self.tail.split();
        if !own.is_empty() {
            self.done_len += own.len();
            self.done.push(Chunk::Own(own));
        }
        self.done_len += bytes.len();
        self.done.push(Chunk::Shared(bytes));
    }

    /// The [`Bytes`] that `src` is a part of, if it is large enough to share.
    fn shared_slice(&mut self, src: &[u8]) -> Option<Bytes> {
        if src.len() < SHARE_MIN_BYTES {
            return None;
        }
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        let found = self.shared[self.next_shared..].iter().position(|bytes| {
            let base = bytes.as_ptr() as usize;
            base <= start && end <= base + bytes.len()
        })?;
        self.next_shared += found;
        Some(self.shared[self.next_shared].slice_ref(src))
    }

    /// Joins everything into `tail`: only for random access to bytes already
    /// in a finished chunk, which message encoders never ask for.
    fn materialize(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.done_len + self.tail.len());
        for chunk in self.done.drain(..) {
            match chunk {
                Chunk::Own(bytes) => all.extend_from_slice(&bytes),
                Chunk::Shared(bytes) => all.extend_from_slice(&bytes),
            }
        }
        all.extend_from_slice(&self.tail);
        self.tail = all;
        self.done_len = 0;
    }

    /// The first `len` bytes written, for patching a size prefix: in the
    /// first chunk, which is never a shared one when they were written
    /// before any record set.
    pub fn head_mut(&mut self, len: usize) -> &mut [u8] {
        let in_first_chunk =
            matches!(self.done.first(), Some(Chunk::Own(first)) if first.len() >= len);
        if !in_first_chunk {
            return self.range(0..len);
        }
        match self.done.first_mut() {
            Some(Chunk::Own(first)) => &mut first[..len],
            _ => unreachable!("checked above"),
        }
    }

    /// The encoded bytes, in chunks; an error if a stand-in was met
    /// without its splice or a splice was left over (the bytes would be
    /// wrong).
    pub fn into_chunks(mut self) -> Result<Vec<Bytes>, String> {
        if let Some(broken) = self.broken {
            return Err(broken);
        }
        if let Some(left) = self.splices.front() {
            return Err(format!(
                "{} record set splices not written (the first of {} bytes)",
                self.splices.len(),
                left.len
            ));
        }
        if !self.tail.is_empty() || self.done.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            self.done.push(Chunk::Own(tail));
        }
        Ok(self
            .done
            .into_iter()
            .map(|chunk| match chunk {
                Chunk::Own(bytes) => bytes.freeze(),
                Chunk::Shared(bytes) => bytes,
            })
            .collect())
    }
}

// SAFETY: every method delegates to `tail`, a `BytesMut`, whose
// implementation upholds the trait's contract; `put_slice` only adds whole
// chunks besides.
unsafe impl BufMut for ChunkedBuf {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's promise is passed on to `tail`.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_stand_in(src) {
            return self.splice(src);
        }
        match self.shared_slice(src) {
            Some(bytes) => self.push_shared(bytes),
            None => self.tail.extend_from_slice(src),
        }
    }
}

impl ByteBufMut for ChunkedBuf {
    fn offset(&self) -> usize {
        self.done_len + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.done_len {
            self.materialize();
        }
        self.tail.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.done_len {
            self.materialize();
        }
        let base = self.done_len;
        &mut self.tail[r.start - base..r.end - base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_shared_slices_become_chunks_and_the_rest_is_copied() {
        let records = Bytes::from(vec![7u8; 3 * SHARE_MIN_BYTES]);
        let other = vec![9u8; 2 * SHARE_MIN_BYTES];
        let mut buf = ChunkedBuf::new(64, vec![records.clone()], Vec::new());
        buf.put_i32(0);
        buf.put_slice(&records[..SHARE_MIN_BYTES + 1]);
        buf.put_u8(1);
        buf.put_slice(&other); // large but not shared: copied
        buf.put_slice(&records[10..20]); // shared but small: copied
        buf.put_slice(&records[SHARE_MIN_BYTES..]);
        let total = buf.offset();
        buf.head_mut(4)
            .copy_from_slice(&(total as i32 - 4).to_be_bytes());
        let chunks = buf.into_chunks().unwrap();
        let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            vec![
                4,
                SHARE_MIN_BYTES + 1,
                1 + other.len() + 10,
                2 * SHARE_MIN_BYTES
            ]
        );
        // The shared chunks point into `records`: no copy.
        assert_eq!(chunks[1].as_ptr(), records.as_ptr());
        assert_eq!(chunks[3].as_ptr(), records[SHARE_MIN_BYTES..].as_ptr());
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut expected = (total as i32 - 4).to_be_bytes().to_vec();
        expected.extend_from_slice(&records[..SHARE_MIN_BYTES + 1]);
        expected.push(1);
        expected.extend_from_slice(&other);
        expected.extend_from_slice(&records[10..20]);
        expected.extend_from_slice(&records[SHARE_MIN_BYTES..]);
        assert_eq!(joined, expected);
    }

    #[test]
    fn random_access_into_finished_chunks_still_works() {
        let records = Bytes::from(vec![1u8; SHARE_MIN_BYTES]);
        let mut buf = ChunkedBuf::new(0, vec![records.clone()], Vec::new());
        buf.put_slice(&records);
        buf.put_u16(0xabcd);
        buf.range(0..2).copy_from_slice(&[5, 6]);
        buf.seek(buf.offset() + 2);
        let chunks = buf.into_chunks().unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(&chunks[0][..2], &[5, 6]);
        assert_eq!(chunks[0].len(), SHARE_MIN_BYTES + 4);
    }

    #[test]
    fn a_stand_in_is_written_as_its_pieces() {
        let big = Bytes::from(vec![3u8; SHARE_MIN_BYTES]);
        let small = Bytes::from_static(b"header");
        let (stand_in, splice) = Splice::new(vec![small.clone(), big.clone(), small.clone()]);
        let splice = splice.expect("several pieces");
        assert_eq!(stand_in.len(), SHARE_MIN_BYTES + 12);
        let mut buf = ChunkedBuf::new(16, vec![stand_in.clone()], vec![splice]);
        buf.put_u8(9);
        buf.put_slice(&stand_in);
        buf.put_u8(8);
        let chunks = buf.into_chunks().unwrap();
        let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![1 + 6, SHARE_MIN_BYTES, 6 + 1]);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr(), "shared, not copied");
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut expected = vec![9u8];
        expected.extend_from_slice(b"header");
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"header");
        expected.push(8);
        assert_eq!(joined, expected);
    }

    #[test]
    fn one_piece_is_itself_and_too_many_bytes_are_joined() {
        let piece = Bytes::from_static(b"batch");
        let (bytes, splice) = Splice::new(vec![piece.clone()]);
        assert!(splice.is_none());
        assert_eq!(bytes.as_ptr(), piece.as_ptr());
        assert!(Splice::new(Vec::new()).0.is_empty());
        let half = Bytes::from(vec![1u8; SPLICE_MAX_BYTES / 2 + 1]);
        let (joined, splice) = Splice::new(vec![half.clone(), half.clone()]);
        assert!(splice.is_none());
        assert_eq!(joined.len(), 2 * half.len());
        assert!(joined.iter().all(|&byte| byte == 1));
    }

    #[test]
    fn a_stand_in_without_its_splice_fails_the_encoding() {
        let (stand_in, splice) =
            Splice::new(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        let mut buf = ChunkedBuf::new(16, Vec::new(), Vec::new());
        buf.put_slice(&stand_in);
        assert!(buf.into_chunks().is_err(), "never the stand-in's zeros");
        let mut buf = ChunkedBuf::new(16, Vec::new(), vec![splice.unwrap()]);
        buf.put_u8(1);
        assert!(buf.into_chunks().is_err(), "a splice left over");
    }
}
