//! Content-Transfer-Encoding of text parts: 7bit when the text is short-lined ASCII,
//! quoted-printable unless base64 is much smaller (mostly non-Latin text).
//!
//! Why not mail-builder's own detection: it writes quoted-printable one byte at a time through
//! `io::Write`, with a `format!` per escaped byte, which made encoding the html the largest
//! cost of rendering a transactional email. This encoder makes one pass into a buffer sized up
//! front. It also keeps two rules mail-builder bends: an encoded line is at most 76
//! characters including the soft break's `=` (RFC 2045 §6.7, rule 5), and a CR that does not
//! start a line break is encoded instead of written bare (SMTP servers reject bare CRs).
//!
//! Invariants (tested against mail-parser's decoder, and fuzzed through `render`): decoding
//! gives the text back with every line break as CRLF; every output line ends in CRLF and is
//! at most 76 characters long; the output is ASCII.

use base64::Engine as _;

/// How a text part is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// The `Content-Transfer-Encoding` value.
    pub(crate) encoding: &'static str,
    /// The part's body, ready to be written as it is.
    pub(crate) body: Vec<u8>,
}

/// The longest line written without encoding (RFC 5322 §2.1.1's recommended 78).
const PLAIN_LINE: usize = 78;
/// The longest encoded line, soft break included (RFC 2045 §6.7).
const QP_LINE: usize = 76;

/// Encodes a text part's body.
pub(crate) fn encode_text(text: &[u8]) -> Encoded {
    if plain(text) {
        return Encoded { encoding: "7bit", body: crlf(text) };
    }
    let qp = quoted_printable(text);
    // Mostly non-ASCII text (Cyrillic, CJK…) nearly triples under quoted-printable, and
    // base64 is then much smaller. Otherwise quoted-printable wins even when a little larger:
    // it stays readable, and spam filters score base64-wrapped text as an attempt to hide it
    // (SpamAssassin's MIME_BASE64_TEXT).
    let base64_len = text.len().div_ceil(3) * 4;
    if qp.len() <= base64_len + base64_len / 4 {
        Encoded { encoding: "quoted-printable", body: qp }
    } else {
        // A text part is encoded in its canonical form, line breaks as CRLF (RFC 2045 §6.8).
        Encoded { encoding: "base64", body: base64_lines(&crlf(text)) }
    }
}

/// Whether `text` may go as it is: ASCII without control characters other than tab and line
/// breaks, no bare CR, no line longer than [`PLAIN_LINE`], and no trailing white space on a
/// line (which transports may strip). Read a line at a time (`memchr` finds the breaks):
/// derived text parts are tens of kilobytes of short lines, and a byte-by-byte state machine
/// cost more than the rest of their rendering.
fn plain(text: &[u8]) -> bool {
    let mut start = 0;
    let ok = |line: &[u8]| {
        line.len() <= PLAIN_LINE
            && !matches!(line.last(), Some(b' ' | b'\t'))
            && line.iter().all(|&b| PLAIN_BYTE[usize::from(b)])
    };
    for i in memchr::memchr_iter(b'\n', text) {
        // A CR just before the LF is the line break's; any other CR is bare.
        let end = if i > start && text[i - 1] == b'\r' { i - 1 } else { i };
        if !ok(&text[start..end]) {
            return false;
        }
        start = i + 1;
    }
    ok(&text[start..])
}

/// The bytes a plain line may hold: printable ASCII and tab.
const PLAIN_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = true;
        b += 1;
    }
    t[b'\t' as usize] = true;
    t
};

/// Whether a line break (or the end) starts at `i`.
fn line_ends(text: &[u8], i: usize) -> bool {
    match text.get(i) {
        None | Some(b'\n') => true,
        Some(b'\r') => text.get(i + 1) == Some(&b'\n'),
        Some(_) => false,
    }
}

/// `text` with every LF that has no CR before it preceded by one (copied a line at a time).
fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', text) {
        if i == 0 || text[i - 1] != b'\r' {
            out.extend_from_slice(&text[start..i]);
            out.push(b'\r');
            start = i;
        }
    }
    out.extend_from_slice(&text[start..]);
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The bytes a run of the fast path may hold: printable ASCII but `=`, and space and tab
/// (written as they are unless a line break follows them, which the run checks at its end).
const IN_RUN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b >= 0x21 && b <= 0x7e && b != b'=' as usize) || b == b' ' as usize || b == b'\t' as usize;
        b += 1;
    }
    t
};

/// Quoted-printable for a text body: line breaks stay line breaks (as CRLF); `=`, bytes
/// outside printable ASCII, a CR that starts no line break, and white space at the end of a
/// line are encoded; lines are broken softly to stay within [`QP_LINE`].
pub(crate) fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 16);
    let mut line = 0usize;
    let mut i = 0;
    while i < text.len() {
        // Fast path: a run of characters written as they are, as far as the line has room
        // with a column kept for a soft break. Everything else goes one by one below.
        // Spaces and tabs join the run (in html they stand every few characters, and one by
        // one they made the slow path most of the work); only one that ends a line of the
        // text must be encoded, so a run ending in one before a line break gives it back.
        let end = (i + (QP_LINE - 1).saturating_sub(line)).min(text.len());
        let mut run = text[i..end].iter().position(|&b| !IN_RUN[usize::from(b)]).unwrap_or(end - i);
        if run > 0 && matches!(text[i + run - 1], b' ' | b'\t') && line_ends(text, i + run) {
            run -= 1;
        }
        if run > 0 {
            out.extend_from_slice(&text[i..i + run]);
            line += run;
            i += run;
            continue;
        }
        let ch = text[i];
        if ch == b'\n' || (ch == b'\r' && text.get(i + 1) == Some(&b'\n')) {
            out.extend_from_slice(b"\r\n");
            line = 0;
            i += if ch == b'\r' { 2 } else { 1 };
            continue;
        }
        let escape = match ch {
            b'=' => true,
            b' ' | b'\t' => line_ends(text, i + 1),
            0x21..=0x7e => false,
            _ => true,
        };
        let width = if escape { 3 } else { 1 };
        // The soft break's `=` counts: a line holds at most QP_LINE - 1 characters before it.
        // Only the last character of the text's line may take the last column (no soft break
        // follows it).
        if line + width > QP_LINE - 1 && !(line + width == QP_LINE && line_ends(text, i + 1)) {
            out.extend_from_slice(b"=\r\n");
            line = 0;
        }
        if escape {
            out.extend_from_slice(&[b'=', HEX[usize::from(ch >> 4)], HEX[usize::from(ch & 0xf)]]);
        } else {
            out.push(ch);
        }
        line += width;
        i += 1;
    }
    out
}

/// Base64 in lines of 76 characters, each ending in CRLF.
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / QP_LINE * 2 + 2);
    for chunk in encoded.as_bytes().chunks(QP_LINE) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// Decodes `body` the way a receiver does (mail-parser's decoders).
    fn decode(e: &Encoded) -> Vec<u8> {
        match e.encoding {
            "7bit" => e.body.clone(),
            "quoted-printable" => mail_parser::decoders::quoted_printable::quoted_printable_decode(&e.body).unwrap(),
            "base64" => mail_parser::decoders::base64::base64_decode(&e.body).unwrap(),
            other => panic!("unexpected encoding {other}"),
        }
    }

    /// The text as a receiver should get it back: every line break CRLF.
    fn canonical(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'\n' || (text[i] == b'\r' && text.get(i + 1) == Some(&b'\n')) {
                out.extend_from_slice(b"\r\n");
                i += if text[i] == b'\r' { 2 } else { 1 };
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        out
    }

    fn check(text: &[u8]) {
        let e = encode_text(text);
        assert_eq!(decode(&e), canonical(text), "round trip through {}", e.encoding);
        assert!(e.body.is_ascii());
        let limit = if e.encoding == "7bit" { PLAIN_LINE } else { QP_LINE };
        for (n, line) in e.body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(!line.contains(&b'\r'), "a bare CR on line {n}");
            assert!(line.len() <= limit, "line {n} has {} characters: {:?}", line.len(), String::from_utf8_lossy(line));
            // RFC 2045 §6.7 rule 3: transports may strip white space at the end of a line.
            if e.encoding == "quoted-printable" {
                assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"), "line {n} ends in white space");
            }
        }
        if !e.body.is_empty() && e.encoding != "7bit" {
            assert!(e.body.ends_with(b"\r\n") || !text.ends_with(b"\n"));
        }
    }

    #[test]
    fn short_ascii_lines_go_as_they_are() {
        let e = encode_text(b"Hello,\nyour order shipped.\r\n");
        assert_eq!(e.encoding, "7bit");
        assert_eq!(e.body, b"Hello,\r\nyour order shipped.\r\n");
    }

    #[test]
    fn long_lines_and_symbols_are_quoted_printable() {
        let html = format!("<p style=\"color:#333\">{}</p>", "word ".repeat(40));
        let e = encode_text(html.as_bytes());
        assert_eq!(e.encoding, "quoted-printable");
        assert!(e.body.starts_with(b"<p style=3D\"color:#333\">word word"));
        check(html.as_bytes());
    }

    #[test]
    fn mostly_non_latin_text_is_base64() {
        let e = encode_text("привет мир, как дела? ".repeat(10).as_bytes());
        assert_eq!(e.encoding, "base64");
        let e = encode_text("Grüße aus Köln, schönen Tag noch! ".repeat(5).as_bytes());
        assert_eq!(e.encoding, "quoted-printable", "a few accents do not make base64 smaller");
    }

    #[test]
    fn edges() {
        for text in [
            &b""[..],
            b" ",
            b"\t\n",
            b"a \r\nb\t\n",
            b"bare\rcr",
            b"\r",
            b"\r\r\n",
            b"=",
            b"\x00\x01\x7f",
            &[b'x'; 75],
            &[b'x'; 76],
            &[b'x'; 77],
            &[b'='; 30],
        ] {
            check(text);
        }
        let mut long = vec![b'x'; 74];
        long.extend_from_slice(b"= \n");
        check(&long);
    }

    proptest! {
        #[test]
        fn any_text_round_trips_within_the_line_limits(text in proptest::collection::vec(any::<u8>(), 0..600)) {
            check(&text);
        }

        #[test]
        fn long_plain_runs_break_at_the_limit(text in "([a-z]{0,170}[ =\n\r\t\u{e9}]{0,2}){0,6}") {
            check(text.as_bytes());
        }

        #[test]
        fn html_like_text_round_trips(text in "[ a-z<>=\"/\t\r\n#:;é€]{0,400}") {
            check(text.as_bytes());
        }
    }
}
