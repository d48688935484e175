//! Sequential scanning of the batches in a log file: headers always, CRCs on
//! request. Used by recovery (with CRCs), by index rebuilds and lookups
//! (headers only). Reads in chunks with positional reads and never holds more
//! than one chunk, however large a batch claims to be.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use protocol::batch::{BatchError, BatchHeader, ATTRIBUTES_AT, BATCH_HEADER_BYTES};

use crate::error::{IoContext, StorageError};

/// What the scanner found at its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scanned {
    /// A well-formed batch (CRC checked if asked) fully inside the range.
    Batch { position: u64, header: BatchHeader },
    /// The range ends exactly after the previous batch.
    End,
    /// The bytes at `position` are not a whole, valid batch; the scanner
    /// stays there.
    Invalid { position: u64, reason: BatchError },
}

pub struct BatchScanner<'a> {
    file: &'a File,
    path: &'a Path,
    position: u64,
    end: u64,
    chunk_bytes: usize,
    verify_crc: bool,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl<'a> BatchScanner<'a> {
    /// Scans `[start, end)` of `file`, reading `chunk_bytes` at a time.
    pub fn new(
        file: &'a File,
        path: &'a Path,
        start: u64,
        end: u64,
        chunk_bytes: usize,
        verify_crc: bool,
    ) -> BatchScanner<'a> {
        assert!(chunk_bytes >= BATCH_HEADER_BYTES);
        BatchScanner {
            file,
            path,
            position: start,
            end,
            chunk_bytes,
            verify_crc,
            buffer: Vec::new(),
            buffer_start: 0,
        }
    }

    /// The end of the last whole batch returned (or the start).
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn next_batch(&mut self) -> Result<Scanned, StorageError> {
        let position = self.position;
        if position >= self.end {
            return Ok(Scanned::End);
        }
        let available = self.end - position;
        if available < BATCH_HEADER_BYTES as u64 {
            let reason = BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: available as usize,
            };
            return Ok(Scanned::Invalid { position, reason });
        }
        let header = match BatchHeader::parse(self.window(position, BATCH_HEADER_BYTES)?) {
            Ok(header) => header,
            Err(reason) => return Ok(Scanned::Invalid { position, reason }),
        };
        let total = header.total_size() as u64;
        if total > available {
            let reason = BatchError::Truncated {
                needed: header.total_size(),
                available: available as usize,
            };
            return Ok(Scanned::Invalid { position, reason });
        }
        if self.verify_crc {
            let actual = self.crc_of(position + ATTRIBUTES_AT as u64, position + total)?;
            if actual != header.crc {
                return Ok(Scanned::Invalid {
                    position,
                    reason: BatchError::CrcMismatch {
                        expected: header.crc,
                        actual,
                    },
                });
            }
        }
        self.position = position + total;
        Ok(Scanned::Batch { position, header })
    }

    fn crc_of(&mut self, mut at: u64, stop: u64) -> Result<u32, StorageError> {
        let mut crc = 0;
        while at < stop {
            let want = (stop - at).min(self.chunk_bytes as u64) as usize;
            let bytes = self.window(at, want)?;
            crc = crc32c::crc32c_append(crc, bytes);
            at += bytes.len() as u64;
        }
        Ok(crc)
    }

    /// `len` bytes at `at` (fewer only at the end of the range), from the
    /// buffer or read into it.
    fn window(&mut self, at: u64, len: usize) -> Result<&[u8], StorageError> {
        let len = len.min((self.end - at) as usize);
        let buffered = at >= self.buffer_start
            && at + len as u64 <= self.buffer_start + self.buffer.len() as u64;
        if !buffered {
            let read = (self.end - at).min(self.chunk_bytes.max(len) as u64) as usize;
            self.buffer.resize(read, 0);
            self.file
                .read_exact_at(&mut self.buffer, at)
                .at(self.path)?;
            self.buffer_start = at;
        }
        let start = (at - self.buffer_start) as usize;
        Ok(&self.buffer[start..start + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_batches::batch_bytes;
    use std::io::Write;

    fn file_with(parts: &[&[u8]]) -> (tempfile::NamedTempFile, u64) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for part in parts {
            file.write_all(part).unwrap();
        }
        let size = file.as_file().metadata().unwrap().len();
        (file, size)
    }

    fn scan_all(file: &File, path: &Path, end: u64, chunk: usize) -> (Vec<u64>, Scanned) {
        let mut scanner = BatchScanner::new(file, path, 0, end, chunk, true);
        let mut positions = Vec::new();
        loop {
            match scanner.next_batch().unwrap() {
                Scanned::Batch { position, .. } => positions.push(position),
                other => return (positions, other),
            }
        }
    }

    #[test]
    fn scans_batches_and_stops_at_a_torn_tail() {
        let first = batch_bytes(3, 100, 1_000);
        let second = batch_bytes(40, 300, 2_000);
        let (file, size) = file_with(&[&first, &second, &second[..100]]);
        // A chunk smaller than a batch exercises the incremental CRC.
        for chunk in [BATCH_HEADER_BYTES, 100, 1 << 20] {
            let (positions, last) = scan_all(file.as_file(), file.path(), size, chunk);
            let torn_at = (first.len() + second.len()) as u64;
            assert_eq!(positions, vec![0, first.len() as u64]);
            assert!(
                matches!(last, Scanned::Invalid { position, reason: BatchError::Truncated { .. } } if position == torn_at)
            );
        }
        let exact = (first.len() + second.len()) as u64;
        assert_eq!(
            scan_all(file.as_file(), file.path(), exact, 100).1,
            Scanned::End
        );
    }

    #[test]
    fn finds_a_flipped_bit() {
        let first = batch_bytes(3, 100, 1_000);
        let mut second = batch_bytes(40, 300, 2_000).to_vec();
        let middle = second.len() / 2;
        second[middle] ^= 0x10;
        let (file, size) = file_with(&[&first, &second, &first]);
        let (positions, last) = scan_all(file.as_file(), file.path(), size, 128);
        assert_eq!(positions, vec![0]);
        assert!(matches!(
            last,
            Scanned::Invalid {
                reason: BatchError::CrcMismatch { .. },
                ..
            }
        ));
    }

    #[test]
    fn garbage_and_short_files() {
        let (file, size) = file_with(&[&[0xAB; 1000]]);
        assert!(matches!(
            scan_all(file.as_file(), file.path(), size, 256).1,
            Scanned::Invalid { position: 0, .. }
        ));
        let (file, size) = file_with(&[&[0; 10]]);
        assert!(matches!(
            scan_all(file.as_file(), file.path(), size, 256).1,
            Scanned::Invalid {
                position: 0,
                reason: BatchError::Truncated { .. }
            }
        ));
        let (file, size) = file_with(&[]);
        assert_eq!(
            scan_all(file.as_file(), file.path(), size, 256).1,
            Scanned::End
        );
    }
}
