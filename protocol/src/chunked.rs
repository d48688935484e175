//! An encoding buffer that keeps large record sets by reference.
//!
//! A Fetch response is mostly record batches read from the log as [`Bytes`].
//! Encoding it into one contiguous buffer would copy every byte once more
//! (and fault in fresh pages for megabytes of buffer). [`ChunkedBuf`] instead
//! recognises, in `put_slice`, a slice that lies inside one of the record
//! sets it was given, and keeps that [`Bytes`] as a chunk of its own; the
//! bytes around it are encoded as usual. The connection then writes the
//! chunks one after another.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a chunk of its own costs a write.
pub const SHARE_MIN_BYTES: usize = 16 * 1024;

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
}

impl ChunkedBuf {
    pub fn new(capacity: usize, shared: Vec<Bytes>) -> ChunkedBuf {
        ChunkedBuf {
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity),
            shared,
            next_shared: 0,
        }
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

    /// The encoded bytes, in chunks.
    pub fn into_chunks(mut self) -> Vec<Bytes> {
        if !self.tail.is_empty() || self.done.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            self.done.push(Chunk::Own(tail));
        }
        self.done
            .into_iter()
            .map(|chunk| match chunk {
                Chunk::Own(bytes) => bytes.freeze(),
                Chunk::Shared(bytes) => bytes,
            })
            .collect()
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
        match self.shared_slice(src) {
            Some(bytes) => {
                let own = self.tail.split();
                if !own.is_empty() {
                    self.done_len += own.len();
                    self.done.push(Chunk::Own(own));
                }
                self.done_len += bytes.len();
                self.done.push(Chunk::Shared(bytes));
            }
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
        let mut buf = ChunkedBuf::new(64, vec![records.clone()]);
        buf.put_i32(0);
        buf.put_slice(&records[..SHARE_MIN_BYTES + 1]);
        buf.put_u8(1);
        buf.put_slice(&other); // large but not shared: copied
        buf.put_slice(&records[10..20]); // shared but small: copied
        buf.put_slice(&records[SHARE_MIN_BYTES..]);
        let total = buf.offset();
        buf.head_mut(4)
            .copy_from_slice(&(total as i32 - 4).to_be_bytes());
        let chunks = buf.into_chunks();
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
        let mut buf = ChunkedBuf::new(0, vec![records.clone()]);
        buf.put_slice(&records);
        buf.put_u16(0xabcd);
        buf.range(0..2).copy_from_slice(&[5, 6]);
        buf.seek(buf.offset() + 2);
        let chunks = buf.into_chunks();
        assert_eq!(chunks.len(), 1);
        assert_eq!(&chunks[0][..2], &[5, 6]);
        assert_eq!(chunks[0].len(), SHARE_MIN_BYTES + 4);
    }
}
