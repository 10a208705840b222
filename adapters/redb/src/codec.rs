//! How records are laid out as bytes: a one-byte format version, then postcard (a compact
//! binary serde format without field names); email content compressed with zstd.
//!
//! Invariants: every layout ever written still reads (a new layout gets a new version byte
//! and a decoder beside the old ones); encoding never depends on anything but the value.
//!
//! Why compression, and why only for content up to [`COMPRESS_UP_TO`]: redb keeps a value
//! larger than about half a page on pages of its own, so a 2 KB html email took a whole
//! 4 KB page and more (the file was 2.9 × the payload). Compressed, a typical email fits
//! inline in a leaf page beside others. Large records are nearly always large because of
//! attachments that are compressed already (PDF, images); compressing them would cost time and
//! a second copy in memory for nothing.

use mailroom_core::email::EmailContent;
use mailroom_core::error::StorageError;
use mailroom_core::ports::ApiKeyRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of every stored value other than content and keys.
pub(crate) const FORMAT_V1: u8 = 1;
/// Email content from the version that added `api_key_id` (an `Option`, last): a version-1
/// content record reads as version 2 with postcard's `None` (one zero byte) appended.
pub(crate) const CONTENT_V2: u8 = 2;
/// Version-2 content, zstd-compressed.
pub(crate) const CONTENT_V3: u8 = 3;
/// API keys from the version that added `managed` (a bool, last): a version-1 key record
/// reads as version 2 with postcard's `false` (one zero byte) appended.
pub(crate) const KEY_V2: u8 = 2;

/// Content records up to this size are compressed.
pub(crate) const COMPRESS_UP_TO: usize = 256 << 10;
/// zstd's fastest level: a 2 KB email compresses in microseconds, to about a third.
const LEVEL: i32 = 1;

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

thread_local! {
    /// One compression context per thread (making one costs more than compressing an email).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// One decompression context per thread, likewise.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses a frame written by [`compress`] (which records the content's size).
fn decompress(frame: &[u8]) -> Result<Vec<u8>, StorageError> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt("a compressed record without its size"))?;
    let size = usize::try_from(size).map_err(corrupt)?;
    if size > COMPRESS_UP_TO * 2 {
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

fn compress(bytes: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        c.as_mut()?.compress(bytes).ok()
    })
}

/// An email's content as stored.
pub(crate) fn encode_content(c: &EmailContent) -> Result<Vec<u8>, StorageError> {
    // Sized up front: a 40 MB attachment must not be copied through a doubling buffer.
    let hint = c.attachments.iter().map(|a| a.content.len() + 256).sum::<usize>()
        + c.html.as_ref().map_or(0, String::len)
        + c.text.as_ref().map_or(0, String::len)
        + 4096;
    let mut plain = Vec::with_capacity(hint);
    plain.push(CONTENT_V2);
    postcard::to_io(c, &mut plain).map_err(corrupt)?;
    if plain.len() <= COMPRESS_UP_TO
        && let Some(z) = compress(&plain[1..])
        // Kept compressed only when it saves a tenth or more.
        && z.len() + z.len() / 9 < plain.len()
    {
        let mut out = Vec::with_capacity(z.len() + 1);
        out.push(CONTENT_V3);
        out.extend_from_slice(&z);
        return Ok(out);
    }
    Ok(plain)
}

pub(crate) fn decode_content(bytes: &[u8]) -> Result<EmailContent, StorageError> {
    match bytes.split_first() {
        Some((&CONTENT_V3, rest)) => postcard::from_bytes(&decompress(rest)?).map_err(corrupt),
        Some((&CONTENT_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_V1, rest)) => {
            let mut v2 = rest.to_vec();
            v2.push(0);
            postcard::from_bytes(&v2).map_err(corrupt)
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown content format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

pub(crate) fn encode_key(account: &str, key: &ApiKeyRecord) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![KEY_V2];
    postcard::to_io(&(account, key), &mut out).map_err(corrupt)?;
    Ok(out)
}

pub(crate) fn decode_key(bytes: &[u8]) -> Result<(String, ApiKeyRecord), StorageError> {
    match bytes.split_first() {
        Some((&KEY_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_V1, rest)) => {
            let mut v2 = rest.to_vec();
            v2.push(0);
            postcard::from_bytes(&v2).map_err(corrupt)
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown key format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![FORMAT_V1];
    postcard::to_io(v, &mut out).map_err(corrupt)?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn content_written_by_every_version_still_reads() {
        let mut new = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        new.content.html = Some(mailroom_core::testkit::sample_html(7));
        let v3 = encode_content(&new.content).unwrap();
        assert_eq!(v3[0], CONTENT_V3, "a typical email is stored compressed");
        assert!(v3.len() * 2 < new.content.html.as_ref().unwrap().len(), "{} bytes", v3.len());
        assert_eq!(decode_content(&v3).unwrap(), new.content);
        // Version 2: postcard as it is; version 1: the same without the trailing `None`.
        let mut v2 = vec![CONTENT_V2];
        postcard::to_io(&new.content, &mut v2).unwrap();
        assert_eq!(decode_content(&v2).unwrap(), new.content);
        assert_eq!(v2.last(), Some(&0));
        let mut v1 = v2[..v2.len() - 1].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_content(&v1).unwrap(), new.content);
        new.content.api_key_id = Some("key-1".into());
        assert_eq!(decode_content(&encode_content(&new.content).unwrap()).unwrap(), new.content);
        assert!(decode_content(&[9, 0]).is_err());
        assert!(decode_content(&[CONTENT_V3, 1, 2, 3]).is_err());
    }

    #[test]
    fn incompressible_and_large_content_is_stored_as_it_is() {
        let mut new = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        new.content.html = None;
        new.content.attachments = vec![mailroom_core::email::Attachment {
            id: uuid::Uuid::nil(),
            filename: Some("noise.bin".into()),
            content_type: "application/octet-stream".into(),
            content_id: None,
            content: noise,
        }];
        assert_eq!(encode_content(&new.content).unwrap()[0], CONTENT_V2);
        new.content.attachments[0].content = vec![b'a'; COMPRESS_UP_TO + 1];
        assert_eq!(encode_content(&new.content).unwrap()[0], CONTENT_V2, "large: not compressed");
    }

    #[test]
    fn keys_written_before_the_managed_flag_still_read() {
        let key = ApiKeyRecord::new(
            "k",
            "ops",
            [5; 32],
            mailroom_core::ports::KeyPermission::FullAccess,
            mailroom_core::testkit::t0(),
        );
        let v2 = encode_key("acct", &key).unwrap();
        assert_eq!(v2.last(), Some(&0), "managed = false is one zero byte, last");
        let mut v1 = v2[..v2.len() - 1].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_key(&v1).ok(), Some(("acct".to_string(), key)));
    }
}
