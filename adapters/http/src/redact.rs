//! What a request log keeps of a body: a redacted copy of at most [`KEEP`] bytes, made in one
//! pass over the bytes without parsing them into a tree.
//!
//! Invariants:
//! - memory is bounded by what is kept, whatever the body's size (a 55 MB body costs no more
//!   than a 1 KB one beyond the scan);
//! - attachment `content` (base64 text or a byte array) is never kept, only its size; values
//!   of secret-looking keys (`token`, `password`, `secret`, …) and of custom headers with
//!   secret-looking names (`X-Api-Token`, `Authorization`, …) are never kept; the query string
//!   of an attachment `path` URL is never kept (signed URLs carry credentials there);
//! - keys are compared after JSON unescaping (`"cont\u0065nt"` is `content`);
//! - anything that is not well-formed JSON — a body that is not JSON, the bytes after a
//!   syntax error, trailing bytes after the value — is never kept, only counted.

/// The most of a body a log keeps.
pub const KEEP: usize = 64 << 10;

/// Containers deeper than this are not followed (and not kept).
const MAX_DEPTH: usize = 64;

/// Key names (lower-cased) whose string values are never kept.
fn secret_key(key: &str) -> bool {
    const WORDS: [&str; 10] = [
        "token",
        "password",
        "secret",
        "authorization",
        "private_key",
        "api_key",
        "apikey",
        "signature",
        "cookie",
        "credential",
    ];
    WORDS.iter().any(|w| key.contains(w))
}

/// Custom header names (lower-cased) whose values are never kept.
fn secret_header(name: &str) -> bool {
    const WORDS: [&str; 9] =
        ["token", "secret", "key", "auth", "password", "signature", "cookie", "session", "credential"];
    WORDS.iter().any(|w| name.contains(w))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// In an object; `headers`: it is the value of a `headers` key.
    Object {
        expect_key: bool,
        headers: bool,
    },
    Array,
}

/// What the value being read is, from the key in front of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Treat {
    Keep,
    /// Replaced by its size.
    Size,
    /// Replaced by `[redacted]`.
    Hide,
    /// A URL whose query is hidden.
    Path,
}

struct Scanner<'a> {
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    keep: usize,
}

impl Scanner<'_> {
    fn emit(&mut self, bytes: &[u8]) {
        let room = self.keep.saturating_sub(self.out.len());
        self.out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn full(&self) -> bool {
        self.out.len() >= self.keep
    }

    fn skip_ws(&mut self) {
        while self.input.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// Reads a string starting at the opening quote; returns its raw bytes (quotes included)
    /// and, when `decode` asks, its unescaped text (at most 128 characters).
    fn string(&mut self, decode: bool) -> Option<(usize, usize, Option<String>)> {
        let start = self.pos;
        self.pos += 1;
        let mut text = decode.then(String::new);
        loop {
            let rest = self.input.get(self.pos..)?;
            let i = memchr::memchr2(b'"', b'\\', rest)?;
            // A raw control character ends the JSON: nothing from here on is kept.
            if rest[..i].iter().any(|b| *b < 0x20) {
                return None;
            }
            if let Some(t) = text.as_mut()
                && t.len() < 128
            {
                t.push_str(&String::from_utf8_lossy(&rest[..i.min(128)]));
            }
            self.pos += i;
            match self.input[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos, text));
                }
                _ => {
                    let esc = *self.input.get(self.pos + 1)?;
                    self.pos += 2;
                    let c = match esc {
                        b'u' => {
                            let hex = std::str::from_utf8(self.input.get(self.pos..self.pos + 4)?).ok()?;
                            self.pos += 4;
                            char::from_u32(u32::from_str_radix(hex, 16).ok()?).unwrap_or('\u{fffd}')
                        }
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'"' | b'\\' | b'/' => esc as char,
                        _ => return None,
                    };
                    if let Some(t) = text.as_mut() {
                        t.push(c);
                    }
                }
            }
        }
    }

    /// A number, `true`, `false` or `null`: its bytes.
    fn scalar(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        while self.input.get(self.pos).is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b)) {
            self.pos += 1;
        }
        let word = &self.input[start..self.pos];
        let ok = matches!(word, b"true" | b"false" | b"null")
            || (!word.is_empty() && word.iter().all(|b| b.is_ascii_digit() || b"+-.eE".contains(b)));
        ok.then_some((start, self.pos))
    }

    /// Skips a whole value (counting array items when asked). `None`: not well-formed.
    fn skip_value(&mut self, depth: usize) -> Option<usize> {
        self.skip_ws();
        match *self.input.get(self.pos)? {
            b'"' => self.string(false).map(|(s, e, _)| e - s - 2),
            b'{' | b'[' => {
                if depth > MAX_DEPTH {
                    return None;
                }
                let close = if self.input[self.pos] == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.pos += 1;
                let mut items = 0;
                self.skip_ws();
                if self.input.get(self.pos) == Some(&close) {
                    self.pos += 1;
                    return Some(0);
                }
                loop {
                    if object {
                        self.skip_ws();
                        if self.input.get(self.pos) != Some(&b'"') {
                            return None;
                        }
                        self.string(false)?;
                        self.skip_ws();
                        if self.input.get(self.pos) != Some(&b':') {
                            return None;
                        }
                        self.pos += 1;
                    }
                    self.skip_value(depth + 1)?;
                    items += 1;
                    self.skip_ws();
                    match *self.input.get(self.pos)? {
                        b',' => self.pos += 1,
                        c if c == close => {
                            self.pos += 1;
                            return Some(items);
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.scalar().map(|(s, e)| e - s),
        }
    }

    /// Copies one value to the output as `treat` says. `None`: not well-formed here.
    fn value(&mut self, treat: Treat, headers: bool, depth: usize) -> Option<()> {
        self.skip_ws();
        let first = *self.input.get(self.pos)?;
        match (treat, first) {
            (Treat::Size, b'"') => {
                let n = self.skip_value(depth)?;
                self.emit(format!("\"[{n} characters]\"").as_bytes());
            }
            (Treat::Size, b'[') => {
                let n = self.skip_value(depth)?;
                self.emit(format!("\"[{n} bytes]\"").as_bytes());
            }
            (Treat::Hide, b'"' | b'{' | b'[') => {
                self.skip_value(depth)?;
                self.emit(b"\"[redacted]\"");
            }
            (Treat::Path, b'"') => {
                let (s, e, _) = self.string(false)?;
                let raw = &self.input[s..e];
                match memchr::memchr(b'?', raw) {
                    Some(q) => {
                        let kept = raw[..q].to_vec();
                        self.emit(&kept);
                        self.emit(b"?[redacted]\"");
                    }
                    None => {
                        let raw = raw.to_vec();
                        self.emit(&raw);
                    }
                }
            }
            (_, b'"') => {
                let (s, e, _) = self.string(false)?;
                let raw = self.input[s..e].to_vec();
                self.emit(&raw);
            }
            (_, b'{' | b'[') => self.container(headers, depth + 1)?,
            _ => {
                let (s, e) = self.scalar()?;
                let raw = self.input[s..e].to_vec();
                self.emit(&raw);
            }
        }
        Some(())
    }

    /// An object or array, with what its keys say about their values.
    fn container(&mut self, headers: bool, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let open = self.input[self.pos];
        let frame = if open == b'{' { Frame::Object { expect_key: true, headers } } else { Frame::Array };
        let close = if open == b'{' { b'}' } else { b']' };
        self.pos += 1;
        self.emit(&[open]);
        self.skip_ws();
        if self.input.get(self.pos) == Some(&close) {
            self.pos += 1;
            self.emit(&[close]);
            return Some(());
        }
        loop {
            if self.full() {
                return Some(());
            }
            let (treat, child_headers) = match frame {
                Frame::Object { headers, .. } => {
                    self.skip_ws();
                    if self.input.get(self.pos) != Some(&b'"') {
                        return None;
                    }
                    let (s, e, key) = self.string(true)?;
                    let raw = self.input[s..e].to_vec();
                    self.emit(&raw);
                    self.skip_ws();
                    if self.input.get(self.pos) != Some(&b':') {
                        return None;
                    }
                    self.pos += 1;
                    self.emit(b":");
                    let key = key.unwrap_or_default().to_ascii_lowercase();
                    let treat = if headers {
                        if secret_header(&key) { Treat::Hide } else { Treat::Keep }
                    } else if key == "content" {
                        Treat::Size
                    } else if key == "path" {
                        Treat::Path
                    } else if secret_key(&key) {
                        Treat::Hide
                    } else {
                        Treat::Keep
                    };
                    (treat, key == "headers" && !headers)
                }
                Frame::Array => (Treat::Keep, false),
            };
            self.value(treat, child_headers, depth)?;
            self.skip_ws();
            match *self.input.get(self.pos)? {
                b',' => {
                    self.pos += 1;
                    self.emit(b",");
                }
                c if c == close => {
                    self.pos += 1;
                    self.emit(&[close]);
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// A body as the request log keeps it: redacted, at most [`KEEP`] bytes and a short note of
/// what was cut; `None` when empty. See the module's invariants.
pub fn redact(body: &[u8]) -> Option<String> {
    redact_to(body, KEEP)
}

pub(crate) fn redact_to(body: &[u8], keep: usize) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let mut s = Scanner { input: body, pos: 0, out: Vec::new(), keep };
    s.skip_ws();
    let well_formed = match s.input.get(s.pos) {
        Some(b'{' | b'[') => s.container(false, 1).is_some(),
        _ => false,
    };
    let full = s.full();
    // Valid UTF-8 (nearly always: the body was JSON) is taken as it is, without a copy.
    let mut text = String::from_utf8(std::mem::take(&mut s.out))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if full && well_formed {
        text.push_str(" …[cut at 64 KB]");
        return Some(text);
    }
    s.skip_ws();
    let rest = body.len() - s.pos.min(body.len());
    if !well_formed || rest > 0 {
        if text.is_empty() {
            text.push_str(&format!("[the body is not JSON: {rest} bytes not kept]"));
        } else {
            text.push_str(&format!(" …[not valid JSON from here: {rest} bytes not kept]"));
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_and_attachment_contents_are_redacted() {
        let body = br#"{"from":"a@b.test","attachments":[{"filename":"x.pdf","content":"QUJD"},{"content":[1,2,3]}]}"#;
        let kept = redact(body).unwrap();
        assert_eq!(
            kept,
            r#"{"from":"a@b.test","attachments":[{"filename":"x.pdf","content":"[4 characters]"},{"content":"[3 bytes]"}]}"#
        );
        let kept = redact(br#"{"id":"k","token":"re_secret","Signing_Secret":{"a":1}}"#).unwrap();
        assert_eq!(kept, r#"{"id":"k","token":"[redacted]","Signing_Secret":"[redacted]"}"#);
        assert_eq!(redact(b"  "), None);
    }

    #[test]
    fn escaped_key_names_are_read_as_the_server_reads_them() {
        let kept = redact(br#"{"attachments":[{"cont\u0065nt":"U0VDUkVU"}],"to\u006ben":"re_x"}"#).unwrap();
        assert!(!kept.contains("U0VDUkVU") && !kept.contains("re_x"), "{kept}");
    }

    #[test]
    fn secret_looking_custom_headers_are_redacted() {
        let body = br#"{"headers":{"X-Api-Token":"abc","Authorization":"Bearer z","X-Entity-Ref-ID":"42","X-Session":{"a":"b"}}}"#;
        let kept = redact(body).unwrap();
        assert_eq!(
            kept,
            r#"{"headers":{"X-Api-Token":"[redacted]","Authorization":"[redacted]","X-Entity-Ref-ID":"42","X-Session":"[redacted]"}}"#
        );
        // Outside `headers`, an ordinary key named like a header is kept.
        assert_eq!(redact(br#"{"subject":"key facts"}"#).unwrap(), r#"{"subject":"key facts"}"#);
    }

    #[test]
    fn signed_url_queries_are_hidden() {
        let kept = redact(br#"{"attachments":[{"path":"https://bucket.test/a.pdf?X-Amz-Signature=abc"}]}"#).unwrap();
        assert_eq!(kept, r#"{"attachments":[{"path":"https://bucket.test/a.pdf?[redacted]"}]}"#);
    }

    #[test]
    fn what_is_not_json_is_never_kept() {
        let kept = redact(br#"{"attachments":[{"content":"U0VDUkVU"}]} U0VDUkVU"#).unwrap();
        assert!(!kept.contains("U0VDUkVU") && kept.contains("8 bytes not kept"), "{kept}");
        let kept = redact(b"content=U0VDUkVU&token=re_x").unwrap();
        assert_eq!(kept, "[the body is not JSON: 27 bytes not kept]");
        let kept = redact(br#"{"subject":"hi","content":"U0VDUkVU"#).unwrap();
        assert!(!kept.contains("U0VDUkVU") && kept.starts_with(r#"{"subject":"hi","content":"#), "{kept}");
        let kept = redact(br#"{"subject":"hi" "attachments":[{"content":"U0VDUkVU"}]}"#).unwrap();
        assert!(!kept.contains("U0VDUkVU"), "{kept}");
        // A raw control character in a string is not JSON either (found by the fuzzer).
        let kept = redact(b"{\"subject\":\"a\nb\",\"x\":\"U0VDUkVU\"}").unwrap();
        assert!(kept.starts_with("{\"subject\":") && !kept.contains("U0VDUkVU"), "{kept}");
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(redact(deep.as_bytes()).unwrap().contains("not kept"));
    }

    #[test]
    fn memory_is_bounded_by_what_is_kept() {
        let huge =
            format!(r#"{{"html":"{}","attachments":[{{"content":"{}"}}]}}"#, "x".repeat(200_000), "Q".repeat(1 << 20));
        let kept = redact(huge.as_bytes()).unwrap();
        assert!(kept.len() <= KEEP + 32 && kept.ends_with("[cut at 64 KB]"), "{}", kept.len());
        let many = format!("[{}]", vec![r#"{"content":"QUJD"}"#; 10_000].join(","));
        let kept = redact_to(many.as_bytes(), 100).unwrap();
        assert!(kept.len() < 140 && !kept.contains("QUJD"), "{kept}");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_leak_a_marked_secret() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..300), |bytes| {
                let mut body = br#"{"attachments":[{"content":"SEKRIT"#.to_vec();
                body.extend_from_slice(&bytes);
                let kept = redact(&body).unwrap_or_default();
                prop_assert!(!kept.contains("SEKRIT"), "{}", kept);
                let _ = redact(&bytes);
                Ok(())
            })
            .unwrap();
    }
}
