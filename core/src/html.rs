//! The links of an HTML document, read by the WHATWG HTML tokenizer's rules.
//!
//! Insights read the links of every email; a general-purpose parser builds a tree (or runs a
//! rewriter) for a question that needs only the start tags, and cost 80–300 µs for a 50 KB
//! email — more than every other check together. This module is the tokenizer of the HTML
//! Standard (§13.2.5) reduced to what decides which start tags exist and what their `href`
//! is: text is skipped with `memchr`, tags and their attributes are read state by state
//! (quoted values may hold `>`), comments, DOCTYPEs and bogus comments end where the standard
//! ends them, RCDATA / RAWTEXT / script data (with its escaped and double-escaped states) end
//! only at their appropriate end tag, `plaintext` ends the document, a tag cut off by the end
//! of input is no tag, a repeated attribute keeps its first value, and attribute values get
//! the input stream's newline normalisation, NUL replacement and the attribute rules for
//! character references (`htmlize::unescape_attribute`).
//!
//! Invariant (checked by `tests::same_links_as_html5gum` and the `links` fuzz target): for any
//! input, [`links`] returns exactly the `href`s that html5gum — a spec-conformant tokenizer —
//! emits for `a`, `area` and `base` start tags, with the same tokenizer state switches.
//!
//! Like any tokenizer without a tree builder, it does not know about foreign content: inside
//! `<svg>` / `<math>` a `<![CDATA[` section is read as a bogus comment, and `<title>`, `<style>`
//! and `<script>` switch state as they would in HTML. `noscript` is ordinary markup: email is
//! rendered with scripting disabled.

mod text;

pub use text::{WIDTH as TEXT_WIDTH, to_text};

use memchr::{memchr, memchr2, memmem};
use std::borrow::Cow;
use std::ops::Range;

/// Where an `href` was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// `<a href>` or `<area href>`: something the reader can follow.
    Anchor,
    /// `<base href>`: what relative links resolve against.
    Base,
}

/// One `href`, decoded as a browser would hand it to the URL parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link<'a> {
    /// Which tag it came from.
    pub kind: LinkKind,
    /// The attribute's value, character references decoded.
    pub href: Cow<'a, str>,
    /// Where the value stands in the source, as written (inside its quotes, if any; empty
    /// for an `href` without a value): what a rewriter replaces.
    pub span: std::ops::Range<usize>,
}

/// The `href` of every `a`, `area` and `base` start tag of `html`, in document order.
pub fn links(html: &str) -> Vec<Link<'_>> {
    read(html, false)
}

/// [`links`], and also those inside Outlook's conditional comments (`<!--[if mso]> …
/// <![endif]-->`): each such comment's body is read as a document of its own (so that nothing
/// in it, a quote left open, runs on past the comment's end), one level deep. What a link
/// rewriter must see: Outlook shows those bodies (real buttons in real mail), and every other
/// link is exactly one that [`links`] returns.
pub fn links_with_conditionals(html: &str) -> Vec<Link<'_>> {
    read(html, true)
}

fn read(html: &str, conditionals: bool) -> Vec<Link<'_>> {
    let mut t = Tokenizer::new(html, Links { out: Vec::with_capacity(16), conditionals });
    t.run();
    t.sink.out
}

/// [`to_text`] and [`links_with_conditionals`] of `html` from one pass of the tokenizer.
/// Why: a tracked email sent as html alone needs both at every hand-over (its text part, and
/// the links to rewrite), and reading a 50 KB email's tags is a third of the rewrite's time.
pub fn text_and_links(html: &str) -> (String, Vec<Link<'_>>) {
    let sinks = Both::new(text::Writer::new(html), Links { out: Vec::with_capacity(16), conditionals: true });
    let mut t = Tokenizer::new(html, sinks);
    t.run();
    let Both { a, b, .. } = t.sink;
    (a.finish(), b.out)
}

/// Two sinks fed by one pass: each gets the tokens it would get alone. For a tag, the
/// attribute wanted is the one either sink wants; they must not want different attributes of
/// the same tag (the text writer wants `a`'s `href` and `img`'s `alt`, the link reader the
/// `href` of `a`, `area` and `base`), and each gets the value only if it asked for it.
struct Both<A, B> {
    a: A,
    b: B,
    /// Which of the two wanted the attribute of the tag being read.
    wanted: (bool, bool),
}

impl<A, B> Both<A, B> {
    fn new(a: A, b: B) -> Self {
        Both { a, b, wanted: (false, false) }
    }
}

impl<'a, A: Sink<'a>, B: Sink<'a>> Sink<'a> for Both<A, B> {
    fn wants(&mut self, kind: Kind, name: &[u8], start: bool) -> Option<&'static [u8]> {
        let (a, b) = (self.a.wants(kind, name, start), self.b.wants(kind, name, start));
        debug_assert!(a.is_none() || b.is_none() || a == b, "both sinks want different attributes of one tag");
        self.wanted = (a.is_some(), b.is_some() && (a.is_none() || a == b));
        a.or(b)
    }

    fn tag(&mut self, kind: Kind, name: &'a [u8], start: bool, attribute: Option<(Cow<'a, str>, Range<usize>)>) {
        let (a, b) = std::mem::take(&mut self.wanted);
        let (for_a, for_b) = match (a, b) {
            (true, true) => (attribute.clone(), attribute),
            (true, false) => (attribute, None),
            (false, true) => (None, attribute),
            (false, false) => (None, None),
        };
        self.a.tag(kind, name, start, for_a);
        self.b.tag(kind, name, start, for_b);
    }

    fn text(&mut self, span: Range<usize>) {
        self.a.text(span.clone());
        self.b.text(span);
    }

    fn plaintext(&mut self, span: Range<usize>) {
        self.a.plaintext(span.clone());
        self.b.plaintext(span);
    }

    fn conditional(&mut self, src: &'a str, body: Range<usize>) {
        self.a.conditional(src, body.clone());
        self.b.conditional(src, body);
    }
}

/// What a pass over the tokens does with them. The tokenizer is generic over it so that the
/// link reader (the hot one: insights and tracking read every email) pays for nothing the
/// text reader needs: its `text` is empty and inlined away.
pub(crate) trait Sink<'a> {
    /// Which attribute of the tag named `name` (a start tag of `kind`, or an end tag) the sink
    /// wants: [`tag`](Self::tag) gets the first value of that name.
    fn wants(&mut self, kind: Kind, name: &[u8], start: bool) -> Option<&'static [u8]>;
    /// A tag, read to its `>`: its name as written, and the wanted attribute's decoded value
    /// with the span of its raw text.
    fn tag(&mut self, kind: Kind, name: &'a [u8], start: bool, attribute: Option<(Cow<'a, str>, Range<usize>)>);
    /// Text of the data state (character references not yet decoded), by its span; the text
    /// of a `plaintext` element too.
    fn text(&mut self, _span: Range<usize>) {}
    /// The rest of the input after `<plaintext>`, where character references are text.
    fn plaintext(&mut self, span: Range<usize>) {
        self.text(span);
    }
    /// The body of a conditional comment (`<!--[if …]>` … `<![endif]-->`), by its span.
    fn conditional(&mut self, _src: &'a str, _body: Range<usize>) {}
}

/// The link reader's sink.
struct Links<'a> {
    out: Vec<Link<'a>>,
    /// Read the bodies of conditional comments (see [`links_with_conditionals`]).
    conditionals: bool,
}

impl<'a> Sink<'a> for Links<'a> {
    fn wants(&mut self, kind: Kind, _name: &[u8], start: bool) -> Option<&'static [u8]> {
        (start && matches!(kind, Kind::Anchor | Kind::Base)).then_some(b"href")
    }

    fn tag(&mut self, kind: Kind, _name: &'a [u8], _start: bool, attribute: Option<(Cow<'a, str>, Range<usize>)>) {
        let kind = match kind {
            Kind::Anchor => LinkKind::Anchor,
            Kind::Base => LinkKind::Base,
            _ => return,
        };
        if let Some((href, span)) = attribute {
            self.out.push(Link { kind, href, span });
        }
    }

    fn conditional(&mut self, src: &'a str, body: Range<usize>) {
        if self.conditionals {
            let inner = links(&src[body.clone()]);
            let at = body.start;
            self.out.extend(inner.into_iter().map(|l| Link { span: l.span.start + at..l.span.end + at, ..l }));
        }
    }
}

/// What a start tag's name means to us: the tags that carry links, and the tree builder's
/// tokenizer switches (§13.2.6) for the elements whose contents are not markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Markup,
    Anchor,
    Base,
    /// RCDATA and RAWTEXT end at the same place (their end tag); only text differs, which we
    /// skip. The element's name in `RAW`, which its end tag repeats.
    Raw(u8),
    Script,
    Plaintext,
}

/// The elements whose contents are RCDATA (the first two) or RAWTEXT.
const RAW: [&[u8]; 7] = [b"title", b"textarea", b"style", b"xmp", b"iframe", b"noembed", b"noframes"];

/// The kind of a tag named `name` (ASCII case-insensitive, as the tokenizer lower-cases).
fn kind_of(name: &[u8]) -> Kind {
    // Most tags of real mail are one or two letters long (`a`, `p`, `td`, `tr`, `b`): they
    // are settled by one predictable branch (a `match` on the length compiled to a jump table
    // whose indirect branch mispredicted on every other tag).
    if name.len() < 3 {
        return if name.len() == 1 && name[0] | 0x20 == b'a' { Kind::Anchor } else { Kind::Markup };
    }
    let is = |word: &[u8]| name.eq_ignore_ascii_case(word);
    match name.len() {
        4 if is(b"area") => Kind::Anchor,
        4 if is(b"base") => Kind::Base,
        6 if is(b"script") => Kind::Script,
        9 if is(b"plaintext") => Kind::Plaintext,
        3..=8 => RAW.iter().position(|w| is(w)).map_or(Kind::Markup, |i| Kind::Raw(i as u8)),
        _ => Kind::Markup,
    }
}

pub(crate) struct Tokenizer<'a, S> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    pub(crate) sink: S,
}

impl<'a, S: Sink<'a>> Tokenizer<'a, S> {
    pub(crate) fn new(src: &'a str, sink: S) -> Self {
        Tokenizer { src, bytes: src.as_bytes(), pos: 0, sink }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Hands the text from `from` to `to` (exclusive) to the sink, if there is any.
    fn text(&mut self, from: usize, to: usize) {
        if to > from {
            self.sink.text(from..to);
        }
    }

    pub(crate) fn run(&mut self) {
        let len = self.bytes.len();
        // Where the text not yet handed to the sink begins.
        let mut text = self.pos;
        // Data state: only `<` matters.
        loop {
            // Tags often follow each other (`</td></tr><tr>`): look before searching.
            let off = match self.bytes.get(self.pos) {
                Some(b'<') => 0,
                Some(_) => match memchr(b'<', &self.bytes[self.pos..]) {
                    Some(off) => off,
                    None => return self.text(text, len),
                },
                None => return self.text(text, len),
            };
            let lt = self.pos + off;
            self.pos = lt + 1;
            match self.peek() {
                Some(b'!') => {
                    self.text(text, lt);
                    self.pos += 1;
                    self.markup_declaration();
                }
                Some(b'/') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b.is_ascii_alphabetic() => {
                            self.text(text, lt);
                            let _ = self.tag(false);
                        }
                        Some(b'>') => {
                            self.text(text, lt);
                            self.pos += 1;
                        }
                        // `</` at the end of input is text.
                        None => return self.text(text, len),
                        Some(_) => {
                            self.text(text, lt);
                            self.bogus_comment();
                        }
                    }
                }
                Some(b'?') => {
                    self.text(text, lt);
                    self.bogus_comment();
                }
                Some(b) if b.is_ascii_alphabetic() => {
                    self.text(text, lt);
                    let Some(kind) = self.tag(true) else { return };
                    match kind {
                        Kind::Markup | Kind::Anchor | Kind::Base => {}
                        Kind::Raw(i) => self.raw(RAW[usize::from(i)]),
                        Kind::Script => self.script(),
                        Kind::Plaintext => {
                            if len > self.pos {
                                self.sink.plaintext(self.pos..len);
                            }
                            return;
                        }
                    }
                }
                // `<` followed by anything else (or nothing) is text.
                _ => continue,
            }
            text = self.pos;
        }
    }

    /// After `<!`: a comment, a DOCTYPE (ends at the next `>` in every DOCTYPE state), or a
    /// bogus comment (CDATA outside foreign content is one too).
    fn markup_declaration(&mut self) {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(b"--") {
            self.pos += 2;
            self.comment();
        } else {
            self.bogus_comment();
        }
    }

    /// After `<!--`. The standard's comment states end a comment at the first `-->` (which may
    /// reuse the opening dashes: `<!-->`, `<!--->`) or `--!>` after the opener; the end of input
    /// ends it too.
    fn comment(&mut self) {
        let body = self.pos;
        let (body_end, after) = comment_end(self.bytes, body);
        if body < body_end && self.bytes.get(body..body + 3).is_some_and(|w| w.eq_ignore_ascii_case(b"[if")) {
            self.sink.conditional(self.src, body..body_end);
        }
        self.pos = after;
    }

    fn bogus_comment(&mut self) {
        self.pos = memchr(b'>', &self.bytes[self.pos..]).map_or(self.bytes.len(), |i| self.pos + i + 1);
    }

    /// RCDATA / RAWTEXT after the start tag `name`: the text ends at `</name` followed by
    /// whitespace, `/` or `>`; that end tag is then read as a tag.
    fn raw(&mut self, name: &[u8]) {
        while let Some(off) = memchr(b'<', &self.bytes[self.pos..]) {
            self.pos += off + 1;
            if self.appropriate_end_tag(name) {
                self.pos += 1;
                let _ = self.tag(false);
                return;
            }
        }
        self.pos = self.bytes.len();
    }

    /// At the byte after `<`: is this `/name` followed by whitespace, `/` or `>`?
    fn appropriate_end_tag(&self, name: &[u8]) -> bool {
        is_end_tag(&self.bytes[self.pos..], name)
    }

    /// Script data, with the escaped (`<!--`) and double-escaped (`<!-- <script>`) states: in
    /// the double-escaped state a `</script>` does not end the script.
    fn script(&mut self) {
        #[derive(Clone, Copy, PartialEq)]
        enum S {
            Data,
            Escaped,
            Double,
        }
        let mut s = S::Data;
        // Dashes seen just before (for `-->`); `<!--` needs two more after `<!`.
        let mut dashes = 0usize;
        while let Some(&b) = self.bytes.get(self.pos) {
            match (s, b) {
                (_, b'-') => {
                    dashes += 1;
                    self.pos += 1;
                    continue;
                }
                (S::Escaped | S::Double, b'>') if dashes >= 2 => s = S::Data,
                (_, b'<') => {
                    self.pos += 1;
                    let rest = &self.bytes[self.pos..];
                    match s {
                        S::Data | S::Escaped if self.appropriate_end_tag(b"script") => {
                            self.pos += 1;
                            let _ = self.tag(false);
                            return;
                        }
                        S::Data if rest.starts_with(b"!--") => {
                            // `<!--`: the two dashes also count towards a `-->` (`<!-->`).
                            self.pos += 3;
                            s = S::Escaped;
                            dashes = 2;
                            continue;
                        }
                        S::Escaped if script_word(rest, 0) => {
                            self.pos += 6;
                            s = S::Double;
                        }
                        S::Double if rest.first() == Some(&b'/') && script_word(rest, 1) => {
                            self.pos += 7;
                            s = S::Escaped;
                        }
                        _ => {}
                    }
                    dashes = 0;
                    continue;
                }
                _ => {}
            }
            dashes = 0;
            self.pos += 1;
        }
    }

    /// A tag from its name's first letter, through its attributes, to its `>`, handed to the
    /// sink. `None` when the input ends inside it: such a tag is not emitted, and nothing
    /// follows it.
    fn tag(&mut self, start: bool) -> Option<Kind> {
        let tag = self.tag_to_end(start);
        if tag.is_none() {
            self.pos = self.bytes.len();
        }
        tag
    }

    fn tag_to_end(&mut self, start: bool) -> Option<Kind> {
        let b = self.bytes;
        let len = b.len();
        // Tag name state: up to whitespace, `/` or `>`.
        let mut i = self.pos;
        while i < len && class(b[i]) & (WS | SLASH | GT) == 0 {
            i += 1;
        }
        let name: &'a [u8] = &b[self.pos..i];
        // An end tag's name changes nothing (only start tags switch the tokenizer's state).
        let kind = if start { kind_of(name) } else { Kind::Markup };
        let want = self.sink.wants(kind, name, start);
        let mut value = None;
        let mut span = 0..0;
        let mut seen = false;
        loop {
            // Before attribute name (a `/` here is the self-closing flag, which changes nothing
            // for us: anything but `>` after it is read as before an attribute name).
            while i < len && class(b[i]) & (WS | SLASH) != 0 {
                i += 1;
            }
            if *b.get(i)? == b'>' {
                self.pos = i + 1;
                self.sink.tag(kind, name, start, value.map(|v| (v, span)));
                return Some(kind);
            }
            // Attribute name: its first character may be `=`.
            let name_start = i;
            i += 1;
            while i < len && class(b[i]) & (WS | SLASH | GT | EQ) == 0 {
                i += 1;
            }
            let is_wanted = !seen && want.is_some_and(|w| b[name_start..i].eq_ignore_ascii_case(w));
            seen |= is_wanted;
            // After attribute name.
            while i < len && class(b[i]) & WS != 0 {
                i += 1;
            }
            if *b.get(i)? != b'=' {
                if is_wanted {
                    value = Some(Cow::Borrowed(""));
                    span = i..i;
                }
                continue;
            }
            i += 1;
            // Before attribute value.
            while i < len && class(b[i]) & WS != 0 {
                i += 1;
            }
            let (start, end) = match *b.get(i)? {
                q @ (b'"' | b'\'') => {
                    let end = i + 1 + memchr(q, &b[i + 1..])?;
                    let value = (i + 1, end);
                    i = end + 1;
                    value
                }
                // A missing value: the tag ends here.
                b'>' => (i, i),
                _ => {
                    let start = i;
                    while i < len && class(b[i]) & (WS | GT) == 0 {
                        i += 1;
                    }
                    if i == len {
                        return None;
                    }
                    (start, i)
                }
            };
            if is_wanted {
                value = Some(decode_attribute(&self.src[start..end]));
                span = start..end;
            }
        }
    }
}

const WS: u8 = 1;
const SLASH: u8 = 2;
const GT: u8 = 4;
const EQ: u8 = 8;

/// What a byte means inside a tag. CR is whitespace: the input stream turns it into LF.
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'\t' as usize] = WS;
    t[b'\n' as usize] = WS;
    t[0x0c] = WS;
    t[b'\r' as usize] = WS;
    t[b' ' as usize] = WS;
    t[b'/' as usize] = SLASH;
    t[b'>' as usize] = GT;
    t[b'=' as usize] = EQ;
    t
};

fn class(b: u8) -> u8 {
    CLASSES[b as usize]
}

/// `script` (case-insensitive) at `rest[at..]`, followed by whitespace, `/` or `>`.
fn script_word(rest: &[u8], at: usize) -> bool {
    rest.len() > at + 6 && rest[at..at + 6].eq_ignore_ascii_case(b"script") && ends_tag_name(rest[at + 6])
}

/// Whether `c` ends a tag's name (the tag name state: whitespace, `/` or `>`).
fn ends_tag_name(c: u8) -> bool {
    class(c) & (WS | SLASH | GT) != 0
}

/// Whether `rest` (what follows a `<`) is the end tag `</name` (any case) followed by
/// whitespace, `/` or `>`: the only end of a raw-text element named `name`.
fn is_end_tag(rest: &[u8], name: &[u8]) -> bool {
    rest.first() == Some(&b'/')
        && rest.len() > name.len() + 1
        && rest[1..=name.len()].eq_ignore_ascii_case(name)
        && ends_tag_name(rest[name.len() + 1])
}

/// Where the comment whose `<!--` ends at `open` ends, by the standard's comment states:
/// (the end of its text, just after its closer). The closer is the first `-->` (which may
/// reuse the opening dashes: `<!-->`, `<!--->`) or `--!>` after the opener; without one, the
/// end of input ends it.
fn comment_end(bytes: &[u8], open: usize) -> (usize, usize) {
    let from = open - 2;
    let dash = memmem::find(&bytes[from..], b"-->").map(|i| (from + i, from + i + 3));
    let bang = memmem::find(&bytes[open..], b"--!>").map(|i| (open + i, open + i + 4));
    // The closer that ends first (`-->` on a tie: it began earlier).
    let (text_end, after) = dash.into_iter().chain(bang).min_by_key(|c| c.1).unwrap_or((bytes.len(), bytes.len()));
    (text_end.max(open), after)
}

/// An attribute value as the tokenizer emits it: CRLF and CR become LF, NUL becomes U+FFFD,
/// character references are decoded by the attribute-value rules.
fn decode_attribute(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let value: Cow<'_, str> = if memchr2(b'\r', b'\0', bytes).is_some() {
        Cow::Owned(raw.replace("\r\n", "\n").replace('\r', "\n").replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(raw)
    };
    let amps = memchr::memchr_iter(b'&', value.as_bytes());
    if amps.clone().next().is_none() {
        return value;
    }
    // Query strings escaped by the book (`?a=1&amp;b=2`) are most of what links carry.
    if amps.clone().all(|i| value.as_bytes()[i..].starts_with(b"&amp;")) {
        let mut out = String::with_capacity(value.len());
        let mut copied = 0;
        for i in amps {
            out.push_str(&value[copied..i]);
            out.push('&');
            copied = i + "&amp;".len();
        }
        out.push_str(&value[copied..]);
        return Cow::Owned(out);
    }
    match value {
        Cow::Borrowed(v) => htmlize::unescape_attribute(v),
        Cow::Owned(v) => Cow::Owned(htmlize::unescape_attribute(v).into_owned()),
    }
}

/// The oracle: html5gum's tokens, with the same state switches after start tags.
#[cfg(any(test, feature = "testkit"))]
pub fn links_by_html5gum(html: &str) -> Vec<(LinkKind, String)> {
    use html5gum::{Token, Tokenizer};
    let mut out = Vec::new();
    let mut tokenizer = Tokenizer::new(html);
    while let Some(Ok(token)) = tokenizer.next() {
        let Token::StartTag(tag) = token else { continue };
        let kind = match kind_of(&tag.name) {
            Kind::Anchor => Some(LinkKind::Anchor),
            Kind::Base => Some(LinkKind::Base),
            _ => None,
        };
        if let (Some(kind), Some(href)) = (kind, tag.attributes.get(b"href".as_slice())) {
            out.push((kind, String::from_utf8_lossy(href).into_owned()));
        }
        switch_html5gum(&mut tokenizer, &tag.name);
    }
    out
}

/// The tree builder's tokenizer switch after the start tag `name` (§13.2.6), which html5gum
/// leaves to its caller; whether the text that follows is not markup's (RCDATA, RAWTEXT,
/// script data).
#[cfg(any(test, feature = "testkit"))]
fn switch_html5gum(tokenizer: &mut html5gum::Tokenizer<html5gum::StringReader<'_>>, name: &[u8]) -> bool {
    use html5gum::State;
    match kind_of(name) {
        Kind::Markup | Kind::Anchor | Kind::Base => return false,
        Kind::Raw(0 | 1) => tokenizer.set_state(State::RcData),
        Kind::Raw(_) => tokenizer.set_state(State::RawText),
        Kind::Script => tokenizer.set_state(State::ScriptData),
        Kind::Plaintext => {
            tokenizer.set_state(State::PlainText);
            return false;
        }
    }
    true
}

/// The oracle for [`to_text`]'s words: the character tokens html5gum emits where a browser
/// shows them (the data state, and PLAINTEXT), with the state switches of
/// [`links_by_html5gum`]; not the contents of `title`, `textarea`, `style`, `script` and
/// the other raw text elements, nor comments.
#[cfg(any(test, feature = "testkit"))]
pub fn text_by_html5gum(html: &str) -> String {
    use html5gum::{Token, Tokenizer};
    let mut out = String::new();
    let mut tokenizer = Tokenizer::new(html);
    let mut raw = false;
    while let Some(Ok(token)) = tokenizer.next() {
        match token {
            Token::String(s) if !raw => out.push_str(&String::from_utf8_lossy(&s)),
            Token::StartTag(tag) => raw = switch_html5gum(&mut tokenizer, &tag.name),
            // In a raw state the only end tag is the one that returns to the data state.
            Token::EndTag(_) => raw = false,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ours(html: &str) -> Vec<(LinkKind, String)> {
        links(html).into_iter().map(|l| (l.kind, l.href.into_owned())).collect()
    }

    fn hrefs(html: &str) -> Vec<String> {
        ours(html).into_iter().map(|(_, h)| h).collect()
    }

    #[test]
    fn reads_tags_as_the_standard_does() {
        let cases: &[(&str, &[&str])] = &[
            (r#"<a href="https://a.test/?x=1&amp;y=2">x</a>"#, &["https://a.test/?x=1&y=2"]),
            (r#"<A HREF='https://b.test'>"#, &["https://b.test"]),
            ("<a href=https://c.test/p>", &["https://c.test/p"]),
            (r#"<a title="x > y" href="https://d.test">"#, &["https://d.test"]),
            (r#"<a href="https://first.test" href="https://second.test">"#, &["https://first.test"]),
            ("<a href>", &[""]),
            ("<a href=>", &[""]),
            (r#"<area shape=rect href="https://e.test/">"#, &["https://e.test/"]),
            (r#"<!-- <a href="https://comment.test"> --><a href="https://f.test">"#, &["https://f.test"]),
            (r#"<!--><a href="https://g.test">"#, &["https://g.test"]),
            (r#"<!--!><a href="https://in-comment.test"> --><a href="https://h.test">"#, &["https://h.test"]),
            (r#"<style>a{} <a href="https://style.test"></style ><a href="https://i.test">"#, &["https://i.test"]),
            (r#"<title><a href="https://t.test"></title><a href="https://j.test">"#, &["https://j.test"]),
            (r#"<script>"<a href='https://s.test'>"</script><a href="https://k.test">"#, &["https://k.test"]),
            (
                r#"<script><!-- <script> </script> <a href="https://s.test"> </script> --></script><a href="https://l.test">"#,
                &["https://l.test"],
            ),
            (r#"<script><!--<script>--></script><a href="https://q.test">"#, &["https://q.test"]),
            (r#"<script><!--<script>x</script>--></script><a href="https://r.test">"#, &["https://r.test"]),
            (r#"<script><!--<scripty></script><a href="https://u.test">"#, &["https://u.test"]),
            (r#"<script><!-- -- ></script><a href="https://v.test">"#, &["https://v.test"]),
            (r#"<plaintext><a href="https://p.test">"#, &[]),
            (r#"<a href="https://cut.test"#, &[]),
            // Found by the fuzzer: an end tag cut off by the end of input swallows the rest.
            ("</r\x0ce=\"<a href>", &[]),
            (r#"<noscript><a href="https://m.test"></noscript>"#, &["https://m.test"]),
            ("<a href=\"https://n.test/\r\npath\0\">", &["https://n.test/\npath\u{fffd}"]),
            ("<a href=\"https://evil&#46;test/&notit;&not=1\">", &["https://evil.test/&notit;&not=1"]),
            ("<!DOCTYPE html><?xml x><a href=\"https://o.test\">", &["https://o.test"]),
        ];
        for (html, want) in cases {
            assert_eq!(hrefs(html), *want, "{html}");
            assert_eq!(ours(html), links_by_html5gum(html), "the oracle disagrees on {html}");
        }
        assert_eq!(ours(r#"<base href="https://base.test/">"#), [(LinkKind::Base, "https://base.test/".to_string())]);
    }

    /// Markup-heavy fragments, so random strings are mostly tags, comments and raw text.
    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "<",
            ">",
            "/",
            "!",
            "-",
            "--",
            "=",
            "\"",
            "'",
            " ",
            "\n",
            "\r",
            "\0",
            "?",
            "a",
            "A",
            "area",
            "base",
            "href",
            "HREF",
            "x",
            "https://h.test/",
            "&amp;",
            "&#x41;",
            "&#0;",
            "&#128;",
            "&lt",
            "&not",
            "&notin;",
            "&",
            "#",
            ";",
            "é",
            "<a ",
            "<a href=",
            "</a>",
            "<!--",
            "-->",
            "--!>",
            "<!",
            "<!DOCTYPE",
            "<![CDATA[",
            "]]>",
            "script",
            "<script>",
            "</script>",
            "<script",
            "</script",
            "<style>",
            "</style>",
            "title",
            "<title>",
            "</title>",
            "<textarea>",
            "</textarea ",
            "<plaintext>",
            "<xmp>",
            "</xmp>",
            "<iframe>",
            "</iframe>",
            "<noscript>",
            "noframes",
            "<svg>",
            "`",
            "\t",
            "<script><!--",
            "<!--<script>",
            "<script><!--<script>",
            "--></script>",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn same_links_as_html5gum(parts in prop::collection::vec(fragment(), 0..40)) {
            let html = parts.concat();
            prop_assert_eq!(ours(&html), links_by_html5gum(&html), "{:?}", html);
        }

        #[test]
        fn same_links_as_html5gum_on_any_text(html in "\\PC{0,200}") {
            prop_assert_eq!(ours(&html), links_by_html5gum(&html), "{:?}", html);
        }

        /// One pass for both gives what each reader gives alone, on markup-heavy input (links
        /// inside and outside conditional comments, images, raw text, broken tags).
        #[test]
        fn text_and_links_in_one_pass_are_each_alone(parts in prop::collection::vec(prop_oneof![
            fragment(),
            Just("<img alt=\"pic\">"),
            Just("<!--[if mso]><a href=\"https://m.test/\">b</a><![endif]-->"),
            Just("<p>"),
            Just("<li>"),
            Just("words here "),
        ], 0..40)) {
            let html = parts.concat();
            let (text, links) = text_and_links(&html);
            prop_assert_eq!(text, to_text(&html), "{:?}", html);
            prop_assert_eq!(links, links_with_conditionals(&html), "{:?}", html);
        }

        /// The text reader's words are the text html5gum reads (links and images aside, whose
        /// addresses and alt texts it adds): compared by their ASCII letters, in order.
        #[test]
        fn same_text_as_html5gum(
            parts in prop::collection::vec(fragment().prop_filter("no link or image tags", |f| !f.starts_with(['a', 'A', 'i']) && !f.starts_with("<a")), 0..40)
        ) {
            let html = parts.concat();
            let lower = html.to_ascii_lowercase();
            prop_assume!(!lower.contains("<a") && !lower.contains("<img"));
            let letters = |t: &str| t.chars().filter(char::is_ascii_alphabetic).collect::<String>();
            prop_assert_eq!(letters(&to_text(&html)), letters(&text_by_html5gum(&html)), "{:?}", html);
        }
    }
}
