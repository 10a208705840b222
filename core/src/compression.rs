//! zstd for the stores' records (feature `zstd`): one compression and one decompression
//! context per thread, because making a context costs more than compressing an email.
//! Pure computation; the stores decide what to compress and how to mark it.

use crate::error::StorageError;

/// Records up to this size are compressed. Larger ones are nearly always large because of
/// attachments that are compressed already (PDF, images): compressing them would cost time and
/// a second copy in memory for nothing.
pub const COMPRESS_UP_TO: usize = 256 << 10;

/// zstd's fastest level: a 2 KB email compresses in microseconds, to about a third.
const LEVEL: i32 = 1;

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `bytes` as one zstd frame that records its size; `None` if zstd fails.
pub fn compress(bytes: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        c.as_mut()?.compress(bytes).ok()
    })
}

/// Decompresses a frame written by [`compress`]. A frame that does not record its size, or
/// says it holds more than `max` bytes, is corrupt (a damaged size must not allocate
/// gigabytes).
pub fn decompress(frame: &[u8], max: usize) -> Result<Vec<u8>, StorageError> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt("a compressed record without its size"))?;
    let size = usize::try_from(size).map_err(corrupt)?;
    if size > max {
        return Err(corrupt("a compressed record larger than any written"));
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(corrupt)?);
        }
        match d.as_mut() {
            Some(d) => d.decompress(frame, size).map_err(corrupt),
            None => Err(corrupt("no decompressor")),
        }
    })
}

/// A record as a store keeps it: `plain` is a version byte, then the encoded record. When the
/// record is at most [`COMPRESS_UP_TO`] and compressing saves a tenth or more, the answer is
/// `version` (the store's byte for "compressed") and the compressed record; else `plain`.
pub fn pack(plain: Vec<u8>, version: u8) -> Vec<u8> {
    if plain.len() <= COMPRESS_UP_TO
        && let Some(z) = plain.get(1..).and_then(compress)
        // Kept compressed only when it saves a tenth or more.
        && z.len() + z.len() / 9 < plain.len()
    {
        let mut out = Vec::with_capacity(z.len() + 1);
        out.push(version);
        out.extend_from_slice(&z);
        return out;
    }
    plain
}

/// The encoded record a [`pack`]ed frame holds (what followed its version byte).
pub fn unpack(frame: &[u8]) -> Result<Vec<u8>, StorageError> {
    decompress(frame, COMPRESS_UP_TO * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_frames_over_the_limit_or_damaged() {
        let text = "<p>Hello, world</p>".repeat(200);
        let z = compress(text.as_bytes()).unwrap();
        assert!(z.len() < text.len() / 4);
        assert_eq!(decompress(&z, text.len()).unwrap(), text.as_bytes());
        assert!(matches!(decompress(&z, text.len() - 1), Err(StorageError::Corrupt(_))));
        assert!(matches!(decompress(&z[..5], text.len()), Err(StorageError::Corrupt(_))));
        assert!(matches!(decompress(b"not zstd", 100), Err(StorageError::Corrupt(_))));
    }
}
