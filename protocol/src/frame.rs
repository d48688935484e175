//! Length-prefixed framing: every request and response is an `i32` size
//! followed by that many bytes.

/// Kafka's default for `socket.request.max.bytes`: 100 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Bytes of the size prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds socket.request.max.bytes {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame size {0} is smaller than a request header")]
    TooSmall(usize),
}

/// The smallest request: api key (2), version (2), correlation id (4), client id length (2).
pub const REQUEST_HEADER_BYTES_MIN: usize = 10;

/// Checks a size prefix read from the wire before anything is allocated for it.
pub fn check_request_size(
    prefix: [u8; FRAME_PREFIX_BYTES],
    max: usize,
) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    if size < REQUEST_HEADER_BYTES_MIN - 2 {
        // A v0 header has no client id; anything below 8 bytes cannot be a request.
        return Err(FrameError::TooSmall(size));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_negative_oversized_and_tiny_sizes() {
        assert_eq!(
            check_request_size((-1i32).to_be_bytes(), 100),
            Err(FrameError::NegativeSize(-1))
        );
        assert_eq!(
            check_request_size(101i32.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
        assert_eq!(
            check_request_size(3i32.to_be_bytes(), 100),
            Err(FrameError::TooSmall(3))
        );
        assert_eq!(check_request_size(100i32.to_be_bytes(), 100), Ok(100));
    }
}
