//! The MIME layer of the bounce reader: only what a bounce needs, read in place.
//!
//! A bounce is read for a few headers, its text parts, its report part and the headers of
//! the message it returns. A general parser builds the whole tree — every header of every
//! part, the returned original parsed as a message of its own — and that was more than
//! half of the reader's time. Here a message is split into parts by scanning for its
//! boundaries, the few headers asked for are read where they lie, and only the parts the
//! reader keeps are decoded (transfer encoding, then charset, with mail-parser's decoders).
//!
//! Invariants: every function is total on any bytes (no panics, no unbounded recursion:
//! nesting stops at [`MAX_DEPTH`], a message yields at most [`MAX_PARTS`] leaves); input
//! has LF line endings (the caller normalises); nothing is copied until a part is decoded.

use mail_parser::HeaderValue;
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use std::borrow::Cow;

/// Multiparts nested deeper than this are not opened (mail-parser stops at the same kind of
/// limit): real reports nest three or four levels.
pub(super) const MAX_DEPTH: usize = 10;
/// A message with more leaves than this is read for its first ones only.
pub(super) const MAX_PARTS: usize = 256;

/// Splits an entity into its header block (each line with its `\n`) and its body.
pub(super) fn split(b: &[u8]) -> (&[u8], &[u8]) {
    if b.first() == Some(&b'\n') {
        return (&[], &b[1..]);
    }
    // Built once: `memmem::find` would build a searcher for every entity of every message.
    static BLANK_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));
    match BLANK_LINE.find(b) {
        Some(i) => (&b[..i + 1], &b[i + 2..]),
        None => (b, &[]),
    }
}

/// A header block, indexed once: each header's name and raw value (folded lines included,
/// with the `\n` that ends it). Lookups then compare names only; scanning the block again
/// for each of the dozen headers a bounce is asked for cost more than the rest of its
/// MIME reading.
#[derive(Debug, Clone, Default)]
pub(super) struct Headers<'a> {
    block: &'a [u8],
    /// Each header: its name, and where its value starts and ends in `block`.
    fields: Vec<(&'a [u8], usize, usize)>,
}

impl<'a> Headers<'a> {
    pub fn new(block: &'a [u8]) -> Headers<'a> {
        let mut fields: Vec<(&[u8], usize, usize)> = Vec::new();
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', block).chain((block.last() != Some(&b'\n')).then_some(block.len())) {
            let end = (nl + 1).min(block.len());
            let line = &block[at..end];
            let start = at;
            at = end;
            if matches!(line.first(), Some(b' ' | b'\t')) {
                // A continuation line extends the header before it.
                if let Some(field) = fields.last_mut() {
                    field.2 = end;
                }
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else { continue };
            let name = line[..colon].trim_ascii_end();
            if !name.is_empty() {
                fields.push((name, start + colon + 1, end));
            }
        }
        Headers { block, fields }
    }

    /// The raw value of the first header `name`.
    pub fn raw(&self, name: &str) -> Option<&'a [u8]> {
        let (_, start, end) = self.fields.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        self.block.get(*start..*end)
    }

    /// The value of header `name`, unfolded and trimmed (undecoded: for machine-read headers).
    pub fn get(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(self.raw(name)?);
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 && !line.is_empty() {
                out.push(' ');
            }
            out.push_str(line.trim());
        }
        Some(out.trim().to_string())
    }

    /// The value of header `name` with RFC 2047 encoded words decoded (a subject).
    pub fn text(&self, name: &str) -> Option<String> {
        match MessageStream::new(self.raw(name)?).parse_unstructured() {
            HeaderValue::Text(t) => Some(t.into_owned()),
            _ => None,
        }
    }

    /// The first mailbox of address header `name`, lower-cased: the first `<…>` holding an
    /// `@`, else the first bare word holding one outside comments and quotes. (A bounce's
    /// From and To are read to leave the bounce's own parties out of its recipients; a full
    /// RFC 5322 address parser cost more than the rest of the header work.)
    pub fn address(&self, name: &str) -> Option<String> {
        let value = String::from_utf8_lossy(self.raw(name)?);
        let mut rest = value.as_ref();
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('>') else { break };
            let inside = after[..close].trim();
            if inside.contains('@') {
                return Some(inside.to_ascii_lowercase());
            }
            rest = &after[close + 1..];
        }
        // Bare words: drop comments and quoted strings first.
        let mut plain = String::with_capacity(value.len());
        let (mut depth, mut quoted) = (0usize, false);
        for c in value.chars() {
            match c {
                '"' if depth == 0 => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted && depth > 0 => depth -= 1,
                c if depth == 0 && !quoted => plain.push(c),
                _ => {}
            }
        }
        plain
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .find(|w| w.contains('@') && !w.starts_with('@'))
            .map(|w| w.trim_matches(|c| c == '<' || c == '>' || c == ':').to_ascii_lowercase())
    }

    /// The Content-Type, or the default (empty `mime`) when there is none.
    pub fn content_type(&self) -> ContentType {
        self.raw("Content-Type").map(ContentType::parse).unwrap_or_default()
    }
}

/// A part's media type, lower-cased (`text/plain`), and the parameters the reader uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ContentType {
    /// `type/subtype`, or empty when the part declares none.
    pub mime: String,
    pub boundary: Option<Vec<u8>>,
    pub charset: Option<String>,
    /// `report-type` of a `multipart/report`.
    pub report_type: Option<String>,
}

impl ContentType {
    /// Reads a Content-Type value (RFC 2045 §5.1): `type/subtype`, then `;`-separated
    /// parameters, plain or quoted. Comments and RFC 2231 continuations are not read:
    /// the parameters used here do not need them.
    pub fn parse(value: &[u8]) -> ContentType {
        let value = String::from_utf8_lossy(value);
        let mut rest = value.trim_start();
        let mime_end = rest.find([';', ' ', '\t', '\n', '(']).unwrap_or(rest.len());
        let mime = rest[..mime_end].to_ascii_lowercase();
        rest = &rest[mime_end..];
        let mut ct = ContentType { mime: if mime.contains('/') { mime } else { String::new() }, ..Default::default() };
        while let Some(semi) = rest.find(';') {
            rest = rest[semi + 1..].trim_start();
            let Some(eq) = rest.find('=') else { break };
            let name = rest[..eq].trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(quoted) = rest.strip_prefix('"') {
                let close = quoted.find('"').unwrap_or(quoted.len());
                let v = &quoted[..close];
                rest = quoted.get(close + 1..).unwrap_or("");
                v
            } else {
                let end = rest.find([';', ' ', '\t', '\n']).unwrap_or(rest.len());
                let v = &rest[..end];
                rest = &rest[end..];
                v
            };
            match name.as_str() {
                "boundary" if !value.is_empty() => ct.boundary = Some(value.as_bytes().to_vec()),
                "charset" => ct.charset = Some(value.to_ascii_lowercase()),
                "report-type" => ct.report_type = Some(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        ct
    }
}

/// What a leaf holds, as the reader sorts parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `text/*` other than html, or a part that declares no type (RFC 2045 §5.2).
    Text,
    /// `text/html`.
    Html,
    /// An enclosed message: `message/rfc822`, `message/global`, or an untyped digest entry.
    Message,
    /// Anything else (report parts, attachments).
    Other,
}

/// One part that is not a multipart.
#[derive(Debug, Clone)]
pub(super) struct Leaf<'a> {
    pub content_type: ContentType,
    pub kind: Kind,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
    /// Where the part (its headers) starts in the whole message.
    pub offset: usize,
}

impl Leaf<'_> {
    /// The body with its transfer encoding undone.
    pub fn decoded(&self) -> Cow<'_, [u8]> {
        let cte = self
            .headers
            .raw("Content-Transfer-Encoding")
            .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
            .unwrap_or_default();
        match cte.as_str() {
            // Bad base64 is shown as it came rather than dropped: its words may still say why.
            "base64" => base64_decode(self.body).map_or(Cow::Borrowed(self.body), Cow::Owned),
            "quoted-printable" => Cow::Owned(quoted_printable(self.body)),
            _ => Cow::Borrowed(self.body),
        }
    }

    /// The body as text: transfer encoding undone, then the declared charset (UTF-8 when
    /// none, or when the charset is unknown).
    pub fn text(&self) -> String {
        let bytes = self.decoded();
        let charset = self.content_type.charset.as_deref().unwrap_or("utf-8");
        // ASCII bytes are themselves in every charset but the 7-bit ones that switch state
        // with escapes (ISO-2022-JP, -KR, -CN: Japanese notices are mostly ISO-2022-JP) or
        // shifts (UTF-7, HZ): their text is all ASCII and still needs the decoder.
        // (Only when a shift is there to undo: text in them without one is plain ASCII.)
        let shifted = || match charset {
            c if c.starts_with("iso-2022") => memchr::memchr(0x1b, &bytes).is_some(),
            "utf-7" => memchr::memchr(b'+', &bytes).is_some(),
            "hz-gb-2312" => memchr::memmem::find(&bytes, b"~{").is_some(),
            _ => false,
        };
        if !matches!(charset, "utf-8" | "us-ascii" | "utf8" | "ascii")
            && (!bytes.is_ascii() || shifted())
            && let Some(decode) = charset_decoder(charset.as_bytes())
        {
            return decode(&bytes);
        }
        match std::str::from_utf8(&bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// A header-like value written in ISO-2022-JP without a declared charset (its escapes are
/// 7-bit, so it passes where only ASCII may stand: Lotus Domino's Japanese `Diagnostic-Code`),
/// decoded; any other text as it is.
pub(super) fn unescaped_jis(s: &str) -> Cow<'_, str> {
    // (ESC `$` starts a JIS X 0208 run in ISO-2022-JP; nothing else puts an ESC in a field.
    // ISO-2022-JP is all ASCII: a value that holds other bytes is not written in it, and the
    // decoder would mangle them.)
    // (The ESC is looked for first: almost no field has one, and then nothing else is read.)
    if !s.contains("\u{1b}$") || !s.is_ascii() {
        return Cow::Borrowed(s);
    }
    charset_decoder(b"iso-2022-jp").map_or(Cow::Borrowed(s), |decode| Cow::Owned(decode(s.as_bytes())))
}

/// Quoted-printable (RFC 2045 §6.7), leniently: a `=` that starts no escape stays as it is
/// (mail in the wild breaks the rule, and one bad escape must not lose the whole part).
fn quoted_printable(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let Some(eq) = memchr::memchr(b'=', &b[i..]) else {
            out.extend_from_slice(&b[i..]);
            break;
        };
        out.extend_from_slice(&b[i..i + eq]);
        i += eq + 1;
        match (b.get(i).copied().and_then(hex), b.get(i + 1).copied().and_then(hex)) {
            (Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            _ => {
                // A soft line break: `=`, optional white space, newline.
                let ws = b[i..].iter().take_while(|c| **c == b' ' || **c == b'\t').count();
                if b.get(i + ws) == Some(&b'\n') {
                    i += ws + 1;
                } else if i + ws >= b.len() {
                    i += ws;
                } else {
                    out.push(b'=');
                }
            }
        }
    }
    out
}

/// The message's own headers and every leaf of it, depth first, in order.
pub(super) fn read(message: &[u8]) -> (Headers<'_>, Vec<Leaf<'_>>) {
    read_up_to(message, MAX_PARTS)
}

/// [`read`], stopping after `max` leaves.
fn read_up_to(message: &[u8], max: usize) -> (Headers<'_>, Vec<Leaf<'_>>) {
    let (headers, body) = split(message);
    let headers = Headers::new(headers);
    let mut out = Vec::new();
    let at = message.len() - body.len();
    walk_entity(headers.clone(), body, 0, at, false, 0, &mut Walk { max, out: &mut out });
    (headers, out)
}

/// The leaves found so far, and how many to find at most.
struct Walk<'w, 'a> {
    max: usize,
    out: &'w mut Vec<Leaf<'a>>,
}

fn walk<'a>(entity: &'a [u8], offset: usize, in_digest: bool, depth: usize, w: &mut Walk<'_, 'a>) {
    let (headers, body) = split(entity);
    walk_entity(Headers::new(headers), body, offset, offset + (entity.len() - body.len()), in_digest, depth, w);
}

/// Whether a general MIME parser (mail-parser) reading `raw` would build at most `max`
/// parts. Counted from above: every line that begins with `--` may open a part; and the
/// enclosed messages such a parser decodes and reads as messages of their own (`message/*`
/// parts in base64 or quoted-printable, three levels deep, as mail-parser does) add theirs,
/// which no line of `raw` shows. Why: a part costs such a parser about 160 bytes however
/// small it is, so 14 MB of empty parts took 330 MB to read; a message over the bound is
/// not given to it at all. `raw` may have CRLF or LF line endings.
pub(crate) fn parts_within(raw: &[u8], max: usize) -> bool {
    let mut left = max;
    parts_within_(raw, 3, max, &mut left)
}

/// Counts `raw`'s delimiter lines against `left`, then its enclosed messages' hidden ones.
/// `depth`: how many levels of enclosed messages a parser still reads; `max`: the bound (no
/// walk finds more leaves than it).
fn parts_within_(raw: &[u8], depth: usize, max: usize, left: &mut usize) -> bool {
    // A line may end with LF, CRLF or a lone CR.
    let lines = usize::from(raw.starts_with(b"--"))
        + memchr::memmem::find_iter(raw, b"\n--").count()
        + memchr::memmem::find_iter(raw, b"\r--").count();
    let Some(rest) = left.checked_sub(lines) else { return false };
    *left = rest;
    hidden_within(raw, depth, max, left)
}

/// The parts of the messages enclosed in `raw` (whose own lines are counted) that its lines
/// do not show: those of each enclosed message a parser decodes, and, inside an enclosed
/// message it reads as it stands, those of the ones enclosed in that.
fn hidden_within(raw: &[u8], depth: usize, max: usize, left: &mut usize) -> bool {
    if depth == 0 || memchr::memmem::find(raw, b"essage/").is_none() {
        return true;
    }
    let lf = super::normalize_newlines(raw);
    // Each leaf but the first follows a delimiter line, all of them counted within `max`.
    let (_, leaves) = read_up_to(&lf, max.saturating_add(1));
    leaves.iter().filter(|l| l.kind == Kind::Message).all(|leaf| match leaf.decoded() {
        Cow::Owned(decoded) => parts_within_(&decoded, depth - 1, max, left),
        Cow::Borrowed(body) => hidden_within(body, depth - 1, max, left),
    })
}

fn walk_entity<'a>(
    headers: Headers<'a>,
    body: &'a [u8],
    offset: usize,
    body_at: usize,
    in_digest: bool,
    depth: usize,
    w: &mut Walk<'_, 'a>,
) {
    if w.out.len() >= w.max {
        return;
    }
    let content_type = headers.content_type();
    if content_type.mime.starts_with("multipart/") && depth < MAX_DEPTH {
        let Some(boundary) = content_type.boundary.as_deref() else {
            // A multipart without a boundary (it fell off a folded header) has no parts to
            // find: the caller falls back to the raw body.
            return;
        };
        let digest = content_type.mime == "multipart/digest";
        for (start, end) in parts(body, boundary) {
            walk(&body[start..end], body_at + start, digest, depth + 1, w);
            if w.out.len() >= w.max {
                return;
            }
        }
        return;
    }
    let kind = match content_type.mime.as_str() {
        "" if in_digest => Kind::Message,
        "" => Kind::Text,
        "text/html" => Kind::Html,
        m if m.starts_with("text/") => Kind::Text,
        "message/rfc822" | "message/global" => Kind::Message,
        _ => Kind::Other,
    };
    w.out.push(Leaf { content_type, kind, headers, body, offset });
}

/// The preamble of a multipart message: what comes before its first delimiter line. RFC 2046
/// §5.1.1 tells readers to ignore it, but some mailers write their whole account of a failure
/// there and put only the report and the returned headers in parts (Courier 0.40's delay
/// notices). Empty for a message that is not multipart or has no parts.
pub(super) fn preamble(message: &[u8]) -> &[u8] {
    let (headers, body) = split(message);
    let ct = Headers::new(headers).content_type();
    let Some(boundary) = ct.boundary.as_deref().filter(|_| ct.mime.starts_with("multipart/")) else {
        return &[];
    };
    let Some(&(first, _)) = parts(body, boundary).first() else { return &[] };
    // `first` is just past the first delimiter line: the preamble ends where that line starts.
    let delimiter_line = memchr::memrchr(b'\n', &body[..first.saturating_sub(1)]).map_or(0, |nl| nl + 1);
    &body[..delimiter_line]
}

/// The parts of a multipart body: the ranges between its delimiter lines (RFC 2046 §5.1.1).
/// The preamble and the epilogue are no parts; a body cut short ends its last part.
fn parts(body: &[u8], boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut delimiters = Vec::new();
    let mut closed = None;
    let mut at = 0;
    let finder = memchr::memmem::Finder::new(boundary);
    while let Some(i) = finder.find(&body[at..]).map(|i| at + i) {
        at = i + boundary.len();
        // A delimiter is `--boundary` at the start of a line (indented ones are taken too,
        // as mail-parser and mail clients take them: some MTAs indent their report).
        if i < 2 || &body[i - 2..i] != b"--" {
            continue;
        }
        let indent = body[..i - 2].iter().rev().take_while(|c| **c == b' ' || **c == b'\t').count();
        let line_start = i - 2 - indent;
        if line_start > 0 && body[line_start - 1] != b'\n' {
            continue;
        }
        let rest = &body[at..];
        let close = rest.starts_with(b"--");
        let tail = if close { &rest[2..] } else { rest };
        // Only white space may follow on the line (RFC 2046's transport padding).
        let line_end = memchr::memchr(b'\n', tail).unwrap_or(tail.len());
        if !tail[..line_end].iter().all(|c| *c == b' ' || *c == b'\t') {
            continue;
        }
        let next_line = (at + (rest.len() - tail.len()) + line_end + 1).min(body.len());
        delimiters.push((line_start, next_line));
        if close {
            closed = Some(line_start);
            break;
        }
        at = next_line;
    }
    let mut out = Vec::new();
    for (k, &(_, content_start)) in delimiters.iter().enumerate() {
        if Some(delimiters[k].0) == closed {
            break;
        }
        // The newline before the next delimiter belongs to the delimiter.
        let end = delimiters.get(k + 1).map_or(body.len(), |&(d, _)| d.saturating_sub(1).max(content_start));
        out.push((content_start, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_is_what_comes_before_the_first_delimiter() {
        let m = b"Content-Type: multipart/report; boundary=\"b1\"\n\nwhy it failed\nand more\n--b1\n\npart\n--b1--\n";
        assert_eq!(preamble(m), b"why it failed\nand more\n");
        assert_eq!(preamble(b"Content-Type: multipart/mixed; boundary=b1\n\n--b1\n\npart\n--b1--\n"), b"");
        assert_eq!(preamble(b"Content-Type: text/plain\n\n--b1\nnot a multipart\n"), b"");
        assert_eq!(preamble(b"Content-Type: multipart/mixed; boundary=b1\n\nno delimiter at all\n"), b"");
    }

    #[test]
    fn headers_are_found_folded_and_case_blind() {
        let h = Headers::new(b"Subject: =?utf-8?B?VW5kZWxpdmVyYWJsZTo=?= hi\nTo: \"A <not>\" <A@x.org>,\n b@y.org\nX-Failed-Recipients: a@x.org,\n\tb@y.org\nContent-Type: text/plain;\n charset=\"ISO-8859-1\"; format=flowed");
        assert_eq!(h.text("subject").as_deref(), Some("Undeliverable: hi"));
        assert_eq!(h.address("TO").as_deref(), Some("a@x.org"));
        assert_eq!(h.get("x-failed-recipients").as_deref(), Some("a@x.org, b@y.org"));
        assert_eq!(h.get("X-Failed"), None);
        let ct = h.content_type();
        assert_eq!((ct.mime.as_str(), ct.charset.as_deref()), ("text/plain", Some("iso-8859-1")));
        let from = |v: &str| Headers::new(format!("From: {v}\n").as_bytes()).address("from");
        assert_eq!(from("MAILER-DAEMON@x.org (Mail Delivery System)").as_deref(), Some("mailer-daemon@x.org"));
        assert_eq!(from("\"who@else.org\" (a@comment.org) b@c.org").as_deref(), Some("b@c.org"));
        assert_eq!(from("undisclosed-recipients:;"), None);
        // A header name that only starts the same is another header.
        assert_eq!(Headers::new(b"Tox: 1\n").get("To"), None);
    }

    #[test]
    fn a_report_splits_into_its_leaves() {
        let m = b"Content-Type: multipart/report; report-type=delivery-status;\n boundary=\"b1\"\n\npreamble\n--b1\n\nhuman\n--b1\nContent-Type: message/delivery-status\n\nAction: failed\n--b1  \nContent-Type: message/rfc822\n\nTo: x@y.org\n\nbody\n--b1--\nepilogue\n--b1\nnot a part\n";
        let l = read(m).1;
        assert_eq!(l.iter().map(|l| l.kind).collect::<Vec<_>>(), [Kind::Text, Kind::Other, Kind::Message]);
        assert_eq!(l[0].body, b"human");
        assert_eq!(l[1].content_type.mime, "message/delivery-status");
        assert_eq!(l[1].body, b"Action: failed");
        assert_eq!(l[2].body, b"To: x@y.org\n\nbody");
        assert_eq!(read(m).0.content_type().report_type.as_deref(), Some("delivery-status"));
        // The offset points at the part's headers.
        assert!(m[l[1].offset..].starts_with(b"Content-Type: message/delivery-status"));
    }

    #[test]
    fn a_boundary_inside_a_line_is_text() {
        let m = b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\n\nsee --zz here\n--zzz\nstill text\n--zz--\n";
        let l = read(m).1;
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].body, b"see --zz here\n--zzz\nstill text");
    }

    #[test]
    fn a_truncated_multipart_ends_its_last_part() {
        let m = b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\n\none\n--zz\nContent-Type: text/html\n\n<p>cut";
        let l = read(m).1;
        assert_eq!(l.len(), 2);
        assert_eq!((l[1].kind, l[1].body), (Kind::Html, &b"<p>cut"[..]));
    }

    #[test]
    fn transfer_encodings_and_charsets_are_undone() {
        let m = b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nUtilisateur inconnu =E9t=E9 =3D soft=\nbreak =ZZ end=";
        let l = read(m).1;
        assert_eq!(l[0].text(), "Utilisateur inconnu été = softbreak =ZZ end");
        let m = b"Content-Transfer-Encoding: base64\n\nVXNl\ncg==\n";
        assert_eq!(read(m).1[0].text(), "User");
        // Base64 that is not base64 is read as it came.
        let m = b"Content-Transfer-Encoding: base64\n\nno such user!\n";
        assert_eq!(read(m).1[0].text(), "no such user!\n");
        // A field that carries JIS escapes without a charset is decoded; others stay.
        assert_eq!(
            unescaped_jis("X-Notes; \x1b$B%G%#%l%/%H%j\x1b(B ka"),
            "X-Notes; \u{30c7}\u{30a3}\u{30ec}\u{30af}\u{30c8}\u{30ea} ka"
        );
        assert!(matches!(unescaped_jis("550 5.1.1 user unknown"), Cow::Borrowed(_)));
        // Text that is not all ASCII is not ISO-2022-JP, whatever escapes it holds.
        assert!(matches!(unescaped_jis("caf\u{e9} \x1b$B%G\x1b(B"), Cow::Borrowed(_)));
        // ISO-2022-JP is all ASCII bytes and still decoded (an escape switches to JIS X 0208).
        let m = b"Content-Type: text/plain; charset=ISO-2022-JP\n\n\x1b$B%G%#%l%/%H%j\x1b(B user\n";
        assert_eq!(read(m).1[0].text(), "\u{30c7}\u{30a3}\u{30ec}\u{30af}\u{30c8}\u{30ea} user\n");
    }

    #[test]
    fn nesting_and_part_counts_are_bounded() {
        let mut m = Vec::new();
        for i in 0..50 {
            m.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n").as_bytes());
        }
        m.extend_from_slice(b"\ndeep\n");
        assert!(read(&m).1.len() <= 1);
        let mut m = b"Content-Type: multipart/mixed; boundary=b\n\n".to_vec();
        for _ in 0..1000 {
            m.extend_from_slice(b"--b\n\nx\n");
        }
        assert_eq!(read(&m).1.len(), MAX_PARTS);
    }

    #[test]
    fn untyped_digest_entries_are_messages() {
        let m = b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nFrom: a@b.org\n\nhi\n--d--\n";
        assert_eq!(read(m).1[0].kind, Kind::Message);
    }

    #[test]
    fn an_indented_delimiter_still_opens_a_part() {
        // Some MTAs indent the delimiter of their report part (seen in real reports).
        let m = b"Content-Type: multipart/report; boundary=r\n\n--r\n\nhuman\n --r\nContent-Type: message/delivery-status\n\nAction: failed\n--r--\n";
        let l = read(m).1;
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].content_type.mime, "message/delivery-status");
    }

    /// Pieces a hostile or broken message is made of: the reader must stay total on any mix.
    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(b"Content-Type: multipart/mixed; boundary=b\n".to_vec()),
            Just(b"Content-Type: multipart/report; boundary=\"b\"\n".to_vec()),
            Just(b"Content-Type: message/rfc822\n".to_vec()),
            Just(b"Content-Transfer-Encoding: base64\n".to_vec()),
            Just(b"Content-Transfer-Encoding: quoted-printable\n".to_vec()),
            Just(b"Content-Type: text/plain; charset=iso-2022-jp\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"--b\n".to_vec()),
            Just(b"--b--\n".to_vec()),
            Just(b" --b\n".to_vec()),
            Just(b"=\n=E9=Z".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..24),
        ]
    }

    proptest::proptest! {
        #[test]
        fn reading_is_total_and_bounded(pieces in proptest::collection::vec(piece(), 0..40)) {
            let m = pieces.concat();
            let (headers, leaves) = read(&m);
            let _ = headers.content_type();
            proptest::prop_assert!(leaves.len() <= MAX_PARTS);
            let range = m.as_ptr() as usize..=m.as_ptr() as usize + m.len();
            for l in &leaves {
                // Every part lies inside the message, and decoding it never panics.
                proptest::prop_assert!(l.body.is_empty() || range.contains(&(l.body.as_ptr() as usize)));
                proptest::prop_assert!(l.offset <= m.len());
                let _ = l.text();
            }
        }
    }
}
