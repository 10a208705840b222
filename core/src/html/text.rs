//! A plain-text version of an HTML body: what an email's `text/plain` part says when the
//! client sent only `html` (the hosted service derives one unless `text` is `""`).
//!
//! It reads the tokens of [`super::Tokenizer`] (the HTML Standard's tokenizer, so comments,
//! `<script>`, `<style>` and `<title>` hide what they hide in a browser) and writes:
//! - text with white space collapsed as a browser does, character references decoded, the
//!   invisible characters of preheader padding (soft hyphens, zero-width joiners) dropped;
//! - a line break for `<br>` and around block elements (`div`, `tr`, `li`, …), a blank line
//!   around paragraphs, headings, lists, quotations and `pre`;
//! - `* ` before an item of `<ul>` and `1. ` before one of `<ol>`, indented by nesting; `> `
//!   before each line of a `<blockquote>`; a space between table cells; `pre` as written;
//! - a link as its words followed by its address in brackets (`Sign in [https://…]`), the
//!   address alone when it has no words, nothing more when the words already are the address;
//!   `#fragment`, `javascript:` and `cid:` links add nothing;
//! - an image as its `alt` text;
//! - lines of at most [`WIDTH`] characters, broken at spaces (a longer word, a URL, stands on
//!   a line of its own), without trailing spaces.
//!
//! What a tree builder would add (implied end tags, foster parenting, `display:none` from CSS)
//! is not modelled: nesting is counted from the tags as written, with bounds, so malformed
//! markup changes the layout of the text, never its words. Time and output are linear in the
//! input: every output character comes from the input, or from a bounded prefix or marker per
//! line and per element.
//!
//! Why not a general-purpose converter: this runs at every hand-over of an email sent without
//! `text`, and html2text (an html5ever tree, then layout) took 91 µs for a 2 KB body — ten
//! times the rest of rendering that email — and 2.95 ms for 50 KB.

use super::{Kind, Sink, Tokenizer};
use std::borrow::Cow;
use std::ops::Range;

/// The longest line written, in characters (RFC 5322 §2.1.1 asks for at most 78).
pub const WIDTH: usize = 78;

/// Nesting counted at most this deep (lists, quotations); deeper levels are drawn as this one.
const DEPTH: usize = 8;

/// The words of a link kept to compare with its address (a longer text is no address).
const LINK_TEXT: usize = 2048;

/// The plain-text version of `html` (see the module's documentation). Empty when the HTML
/// shows no text.
pub fn to_text(html: &str) -> String {
    let mut t = Tokenizer::new(html, Writer::new(html));
    t.run();
    t.sink.finish()
}

/// How an element lays out its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Inline: words flow on.
    Inline,
    /// On lines of its own.
    Block,
    /// On lines of its own, with a blank line before and after.
    Paragraph,
    /// `<br>`: the line ends here.
    Break,
    /// A table cell: a space from the cell before.
    Cell,
    /// A list (`ul`, `ol`): a paragraph, and the counter for its items.
    List { ordered: bool },
    /// A list item: a line of its own, with its marker.
    Item,
    /// A quotation: a paragraph, each line prefixed by `> `.
    Quote,
    /// Preformatted text: a paragraph, white space as written.
    Pre,
    /// A thematic break (`<hr>`): a line of dashes.
    Rule,
    /// A link (`<a>`): its address follows its words.
    Link,
    /// An image: its `alt` text.
    Image,
}

/// The layout of the element named `name` (ASCII case-insensitive).
fn layout(name: &[u8]) -> Layout {
    let mut lower = [0u8; 10];
    if name.len() > lower.len() {
        return Layout::Inline;
    }
    for (l, c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    match &lower[..name.len()] {
        b"a" => Layout::Link,
        b"img" => Layout::Image,
        b"br" => Layout::Break,
        b"td" | b"th" => Layout::Cell,
        b"li" => Layout::Item,
        b"ul" | b"menu" | b"dir" => Layout::List { ordered: false },
        b"ol" => Layout::List { ordered: true },
        b"blockquote" => Layout::Quote,
        b"pre" | b"listing" => Layout::Pre,
        b"hr" => Layout::Rule,
        b"p" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" | b"dl" | b"figure" | b"address" => Layout::Paragraph,
        b"div" | b"tr" | b"table" | b"caption" | b"section" | b"article" | b"header" | b"footer" | b"nav" | b"main"
        | b"aside" | b"center" | b"dt" | b"dd" | b"form" | b"fieldset" | b"legend" | b"details" | b"summary"
        | b"figcaption" | b"body" | b"html" | b"hgroup" | b"option" => Layout::Block,
        _ => Layout::Inline,
    }
}

/// A list being written: its kind and the number of its next item.
#[derive(Debug, Clone, Copy)]
struct List {
    ordered: bool,
    next: u32,
}

/// An open link: its address, and its words so far (to tell whether they are the address).
#[derive(Debug)]
struct OpenLink {
    href: String,
    words: String,
    any: bool,
}

/// The text being written.
pub(super) struct Writer<'a> {
    src: &'a str,
    out: String,
    /// Characters on the current line, its prefix included.
    column: usize,
    /// Whether the current line holds anything but its prefix.
    line_used: bool,
    /// Where the current line's first word begins in `out` (after its prefix and marker).
    line_start: usize,
    /// Where the word being written begins in `out`.
    word_at: usize,
    /// Line ends owed before the next word (1: a new line, 2: a blank line).
    breaks: u8,
    /// A space owed before the next word.
    space: bool,
    /// The marker owed before the next word (a list item's).
    marker: Option<String>,
    lists: Vec<List>,
    /// Lists nested deeper than [`DEPTH`] (counted so that their ends match).
    lists_beyond: usize,
    quotes: usize,
    pre: usize,
    /// `<pre>` was the last thing read: a line feed right after it is not content.
    pre_start: bool,
    link: Option<OpenLink>,
    /// The layout [`Sink::wants`] found for the start tag being read.
    wanted: Option<Layout>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Writer {
            src,
            out: String::with_capacity(src.len() / 3),
            column: 0,
            line_used: false,
            line_start: 0,
            word_at: 0,
            breaks: 0,
            space: false,
            marker: None,
            lists: Vec::new(),
            lists_beyond: 0,
            quotes: 0,
            pre: 0,
            pre_start: false,
            link: None,
            wanted: None,
        }
    }

    /// Owes `n` line ends before the next word (at most a blank line; none before the first).
    fn block(&mut self, n: u8) {
        if !self.out.is_empty() {
            self.breaks = self.breaks.max(n);
        }
        self.space = false;
    }

    /// Ends the current line.
    fn newline(&mut self) {
        let trimmed = self.out.trim_end_matches(' ').len();
        self.out.truncate(trimmed);
        self.out.push('\n');
        self.column = 0;
        self.line_used = false;
    }

    /// Writes the owed line ends and the new line's prefix, if the line is new.
    fn settle(&mut self) {
        if self.out.is_empty() {
            self.breaks = 0;
        }
        if self.breaks > 0 {
            if self.line_used || self.column > 0 {
                self.newline();
            }
            for _ in 1..self.breaks {
                self.prefix();
                self.newline();
            }
            self.breaks = 0;
            self.space = false;
        }
        if self.column == 0 {
            self.prefix();
        }
    }

    /// The quotation marks that begin every line inside `<blockquote>`.
    fn prefix(&mut self) {
        for _ in 0..self.quotes.min(DEPTH) {
            self.out.push_str("> ");
            self.column += 2;
        }
    }

    /// Writes one word (no white space in it), wrapping the line if it would grow too long.
    fn word(&mut self, w: &str) {
        let len = if w.is_ascii() { w.len() } else { w.chars().count() };
        self.word_of(w, len);
    }

    /// [`word`](Self::word) of a word `len` characters long.
    fn word_of(&mut self, w: &str, len: usize) {
        if w.is_empty() {
            return;
        }
        if self.breaks > 0 || self.column == 0 {
            self.settle();
        }
        if let Some(m) = self.marker.take() {
            self.column += m.chars().count();
            self.out.push_str(&m);
            self.space = false;
        }
        if self.space && self.line_used {
            if self.column + 1 + len > WIDTH {
                self.newline();
                self.prefix();
                self.line_start = self.out.len();
            } else {
                self.out.push(' ');
                self.column += 1;
            }
            self.word_at = self.out.len();
        } else if !self.line_used {
            self.word_at = self.out.len();
            self.line_start = self.out.len();
        } else if self.column + len > WIDTH && self.word_at > self.line_start {
            // The word goes on without a space (`long<b>er</b>`) past the width: all of it
            // moves to the next line, as if it had come whole.
            let tail = self.out.split_off(self.word_at);
            self.out.truncate(self.word_at - 1);
            self.newline();
            self.prefix();
            self.line_start = self.out.len();
            self.word_at = self.out.len();
            self.column += tail.chars().count();
            self.out.push_str(&tail);
        }
        self.space = false;
        self.out.push_str(w);
        self.column += len;
        self.line_used = true;
        if let Some(link) = self.link.as_mut() {
            if link.any && link.words.len() < LINK_TEXT {
                link.words.push(' ');
            }
            if link.words.len() < LINK_TEXT {
                link.words.push_str(w);
            }
            link.any = true;
        }
    }

    /// Text of the data state, decoded, its white space collapsed (or kept, inside `pre`).
    fn write_text(&mut self, raw: &str) {
        let decoded =
            if memchr::memchr(b'&', raw.as_bytes()).is_some() { htmlize::unescape(raw) } else { Cow::Borrowed(raw) };
        if self.pre > 0 {
            return self.write_pre(&decoded);
        }
        if decoded.is_ascii() {
            // Most text: its white space is five bytes, its words their bytes.
            let b = decoded.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if is_ascii_space(b[i]) {
                    self.space = true;
                    i += 1;
                    while i < b.len() && is_ascii_space(b[i]) {
                        i += 1;
                    }
                    continue;
                }
                let start = i;
                while i < b.len() && BYTES[usize::from(b[i])] == 0 {
                    i += 1;
                }
                self.word_of(&decoded[start..i], i - start);
                // NUL shows nothing (the tree builder drops it): the word goes on after it.
                while i < b.len() && b[i] == 0 {
                    i += 1;
                }
            }
            return;
        }
        let mut rest: &str = &decoded;
        while !rest.is_empty() {
            let start = rest.trim_start_matches(is_space);
            if start.len() < rest.len() {
                self.space = true;
            }
            let end = start.find(is_space).unwrap_or(start.len());
            let (w, after) = start.split_at(end);
            if w.contains(is_invisible) {
                let kept: String = w.chars().filter(|c| !is_invisible(*c)).collect();
                self.word(&kept);
            } else {
                self.word(w);
            }
            rest = after;
        }
    }

    /// Preformatted text: lines as written (CR LF and CR read as LF), each with its prefix.
    fn write_pre(&mut self, text: &str) {
        let mut text = text;
        if std::mem::take(&mut self.pre_start) {
            text = text.strip_prefix("\r\n").or_else(|| text.strip_prefix(['\n', '\r'])).unwrap_or(text);
        }
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.settle();
                self.newline();
            }
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            self.settle();
            if let Some(m) = self.marker.take() {
                self.column += m.chars().count();
                self.out.push_str(&m);
            }
            let kept: String = line.chars().filter(|c| *c != '\0' && !is_invisible(*c)).collect();
            self.column += kept.chars().count();
            self.out.push_str(&kept);
            self.line_used = true;
        }
    }

    /// Ends the open link: its address follows its words, unless they say it already.
    fn close_link(&mut self) {
        let Some(link) = self.link.take() else { return };
        let href = link.href.trim();
        let has = |scheme: &str| strip_prefix_ignore_case(href, scheme).is_some();
        if href.is_empty() || href.starts_with('#') || has("javascript:") || has("cid:") {
            return;
        }
        // A mail or phone link whose words are its address or number says it already.
        let shown = ["mailto:", "tel:"].into_iter().find_map(|s| strip_prefix_ignore_case(href, s)).unwrap_or(href);
        let shown = shown.split('?').next().unwrap_or_default();
        let words = bare(&link.words);
        if !words.is_empty() && (words.eq_ignore_ascii_case(bare(href)) || words.eq_ignore_ascii_case(bare(shown))) {
            return;
        }
        // An address with white space in it (a template's mistake) is still one word here.
        let address: String = href.chars().filter(|c| !c.is_whitespace()).collect();
        // A space owed before the link's end is still owed after its address.
        let owed = self.space;
        self.space = true;
        self.word(&format!("[{address}]"));
        self.space = owed;
    }

    pub(super) fn finish(mut self) -> String {
        self.close_link();
        let mut out = self.out;
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out
    }
}

/// A link's words or address without what readers leave out when they write one: the
/// scheme (`http://`, `https://`), `www.` and a trailing `/`.
fn bare(s: &str) -> &str {
    let s = s.trim_end_matches('/');
    let s = strip_prefix_ignore_case(s, "https://").or_else(|| strip_prefix_ignore_case(s, "http://")).unwrap_or(s);
    strip_prefix_ignore_case(s, "www.").unwrap_or(s)
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes()).then(|| &s[prefix.len()..])
}

/// What an ASCII byte is to the text: white space (1), NUL (2) or part of a word (0).
const BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b' ' as usize] = 1;
    t[b'\t' as usize] = 1;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 1;
    t[0x0c] = 1;
    t[0] = 2;
    t
};

/// [`is_space`] of an ASCII byte.
fn is_ascii_space(b: u8) -> bool {
    BYTES[usize::from(b)] == 1
}

/// White space as HTML collapses it, and the no-break space (email templates space with it).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\u{a0}')
}

/// Characters that show nothing: the padding of hidden preheaders (`&zwnj;&nbsp;&#847;` …),
/// soft hyphens, byte-order marks, and NUL (which the tree builder drops).
fn is_invisible(c: char) -> bool {
    matches!(c, '\0' | '\u{ad}' | '\u{34f}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}')
}

impl<'a> Sink<'a> for Writer<'a> {
    fn wants(&mut self, _kind: Kind, name: &[u8], start: bool) -> Option<&'static [u8]> {
        if !start {
            return None;
        }
        // Kept for `tag`, which follows for this tag unless the input ends inside it.
        let l = layout(name);
        self.wanted = Some(l);
        match l {
            Layout::Link => Some(b"href"),
            Layout::Image => Some(b"alt"),
            _ => None,
        }
    }

    fn tag(&mut self, _kind: Kind, name: &'a [u8], start: bool, attribute: Option<(Cow<'a, str>, Range<usize>)>) {
        self.pre_start = false;
        let layout = match self.wanted.take() {
            Some(l) if start => l,
            _ => layout(name),
        };
        match (layout, start) {
            (Layout::Inline, _) => {}
            (Layout::Block, _) => self.block(1),
            (Layout::Paragraph, _) => self.block(2),
            (Layout::Break, _) => {
                // Each `<br>` ends a line, so two make a blank one (`</br>` is read as `<br>`).
                if self.out.is_empty() {
                    return;
                }
                self.settle();
                self.newline();
                self.space = false;
            }
            (Layout::Cell, true) => self.space = true,
            (Layout::Cell, false) => {}
            (Layout::List { ordered }, true) => {
                self.block(if self.lists.is_empty() { 2 } else { 1 });
                if self.lists.len() < DEPTH {
                    self.lists.push(List { ordered, next: 1 });
                } else {
                    self.lists_beyond += 1;
                }
            }
            (Layout::List { .. }, false) => {
                if self.lists_beyond > 0 {
                    self.lists_beyond -= 1;
                } else {
                    self.lists.pop();
                }
                self.block(if self.lists.is_empty() { 2 } else { 1 });
            }
            (Layout::Item, true) => {
                self.block(1);
                let depth = self.lists.len().max(1);
                let indent = "  ".repeat(depth - 1);
                self.marker = Some(match self.lists.last_mut() {
                    Some(List { ordered: true, next }) => {
                        let n = *next;
                        *next = next.saturating_add(1);
                        format!("{indent}{n}. ")
                    }
                    _ => format!("{indent}* "),
                });
            }
            (Layout::Item, false) => {
                self.marker = None;
                self.block(1);
            }
            (Layout::Quote, true) => {
                self.block(2);
                self.quotes += 1;
            }
            (Layout::Quote, false) => {
                self.block(2);
                self.quotes = self.quotes.saturating_sub(1);
            }
            (Layout::Pre, true) => {
                self.block(2);
                self.pre += 1;
                self.pre_start = true;
            }
            (Layout::Pre, false) => {
                self.block(2);
                self.pre = self.pre.saturating_sub(1);
            }
            (Layout::Rule, _) => {
                self.block(2);
                self.word(&"-".repeat(40));
                self.block(2);
            }
            (Layout::Link, true) => {
                // A link inside a link is closed by it, as the tree builder closes it.
                self.close_link();
                if let Some((href, _)) = attribute {
                    self.link = Some(OpenLink { href: href.into_owned(), words: String::new(), any: false });
                }
            }
            (Layout::Link, false) => self.close_link(),
            (Layout::Image, true) => {
                // Alt text is inline: it flows with the words around it.
                if let Some((alt, _)) = attribute {
                    self.write_text(&alt);
                }
            }
            (Layout::Image, false) => {}
        }
    }

    fn text(&mut self, span: Range<usize>) {
        let src = self.src;
        self.write_text(&src[span]);
        self.pre_start = false;
    }

    fn plaintext(&mut self, span: Range<usize>) {
        // Shown as written: as `pre`, and without decoding references.
        self.block(1);
        self.pre += 1;
        let src = self.src;
        self.write_pre(&src[span]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paragraphs_breaks_and_white_space() {
        assert_eq!(to_text("<p>Hello,\n   world!</p><p>Second   one</p>"), "Hello, world!\n\nSecond one");
        assert_eq!(to_text("one<br>two<br><br>three"), "one\ntwo\n\nthree");
        assert_eq!(to_text("<div>a</div><div>b</div>text"), "a\nb\ntext");
        assert_eq!(to_text("<h1>Title</h1>Body"), "Title\n\nBody");
        assert_eq!(to_text("<b>bold</b> and <i>it</i>alic"), "bold and italic");
        assert_eq!(to_text("  \n <p> </p> "), "");
        assert_eq!(to_text("<hr>after"), format!("{}\n\nafter", "-".repeat(40)));
    }

    #[test]
    fn what_a_browser_does_not_show_is_not_written() {
        let html = "<html><head><title>Subject</title><style>p { color: red }</style>\
                    <script>var x = '<p>no</p>';</script></head><body><!-- a comment <p>no</p> -->\
                    <!--[if mso]><p>outlook only</p><![endif]--><p>Shown</p></body></html>";
        assert_eq!(to_text(html), "Shown");
    }

    #[test]
    fn character_references_are_decoded_and_invisible_padding_dropped() {
        assert_eq!(to_text("Fish &amp; chips &lt;3 &eacute;t&#233; &#x1F600;"), "Fish & chips <3 été 😀");
        assert_eq!(to_text("Preview&nbsp;text &zwnj;&nbsp;&#847;&zwnj;&nbsp;&#847;<p>Hi</p>"), "Preview text\n\nHi");
        assert_eq!(to_text("a&nbsp;&nbsp;b"), "a b");
    }

    #[test]
    fn links_carry_their_address() {
        assert_eq!(
            to_text(r#"<a href="https://acme.test/login?a=1&amp;b=2">Sign in</a> now"#),
            "Sign in [https://acme.test/login?a=1&b=2] now"
        );
        // The words already are the address.
        assert_eq!(to_text(r#"<a href="https://acme.test/">acme.test</a>"#), "acme.test");
        assert_eq!(to_text(r#"<a href="mailto:help@acme.test">help@acme.test</a>"#), "help@acme.test");
        // No words: the address alone; an image's alt text counts as words.
        assert_eq!(to_text(r#"<a href="https://acme.test/"><img src="logo.png"></a>"#), "[https://acme.test/]");
        assert_eq!(
            to_text(r#"<a href="https://acme.test/"><img src="logo.png" alt="Acme"></a>"#),
            "Acme [https://acme.test/]"
        );
        // Links that lead nowhere a reader of text can go add nothing.
        assert_eq!(to_text(r##"<a href="#top">Top</a> <a href="javascript:x()">Run</a>"##), "Top Run");
        // An unclosed link ends where the next begins, or with the document.
        assert_eq!(
            to_text(r#"<a href="https://a.test/1">One <a href="https://a.test/2">Two"#),
            "One [https://a.test/1] Two [https://a.test/2]"
        );
    }

    #[test]
    fn lists_quotes_tables_and_pre() {
        assert_eq!(to_text("<p>Items:</p><ul><li>one</li><li>two</li></ul>done"), "Items:\n\n* one\n* two\n\ndone");
        assert_eq!(to_text("<ol><li>a<li>b<ol><li>c</ol></ol>"), "1. a\n2. b\n  1. c");
        assert_eq!(to_text("<blockquote><p>quoted</p>line</blockquote>after"), "> quoted\n>\n> line\n\nafter");
        assert_eq!(
            to_text("<table><tr><td>Name</td><td>Ada</td></tr><tr><td>Role</td><td>Engineer</td></tr></table>"),
            "Name Ada\nRole Engineer"
        );
        assert_eq!(to_text("<pre>\nline 1\n  indented\n</pre>after"), "line 1\n  indented\n\nafter");
    }

    #[test]
    fn lines_are_wrapped_at_spaces() {
        let words = "word ".repeat(40);
        let text = to_text(&format!("<p>{words}</p>"));
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert_eq!(text.split_whitespace().count(), 40);
        // A word written in pieces (markup inside it) wraps as a whole.
        let text = to_text(&format!("{} tail<b>{}</b>", "a ".repeat(30).trim_end(), "x".repeat(30)));
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(text.ends_with(&format!("\ntail{}", "x".repeat(30))), "{text}");
        // A word that wrapped and then goes on in pieces past the width stays where it is (it
        // begins its line), inside a quotation too.
        let html = format!("<blockquote>{}bbbb<b>{}</b></blockquote>", "a ".repeat(37), "c".repeat(75));
        assert_eq!(to_text(&html), format!("> {}\n> bbbb{}", "a ".repeat(37).trim_end(), "c".repeat(75)));
        // A word longer than a line stands alone, unbroken.
        let long = "x".repeat(100);
        assert_eq!(to_text(&format!("a {long} b")), format!("a\n{long}\nb"));
    }

    #[test]
    fn malformed_markup_keeps_its_words() {
        assert_eq!(to_text("<p>unclosed <b>bold <div>block"), "unclosed bold\nblock");
        assert_eq!(to_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(to_text("cut off <a href=\"x"), "cut off");
        assert_eq!(to_text("</ul></ol></blockquote></pre>text"), "text");
        let deep = "<ul><li>x".repeat(100);
        let text = to_text(&deep);
        assert_eq!(text.lines().count(), 100);
        assert!(text.lines().all(|l| l.len() <= 2 * DEPTH + 3));
    }

    #[test]
    fn text_from_a_password_reset_with_a_button_a_list_and_hidden_parts() {
        let html = r#"<html><head><title>Reset</title><script>track("open")</script>
<style>.btn{background:#000}</style></head><body><!-- preview tracking -->
<table role="presentation" width="100%"><tr><td align="center">
<img src="https://acme.test/logo.png" alt="Acme">
<h2>Reset your password</h2>
<p>Someone asked to reset the password for <strong>ada@example.com</strong>.</p>
<a class="btn" href="https://acme.test/reset?t=abc&amp;u=1">Choose a new password</a>
<p>If it wasn't you:</p><ul><li>ignore this email,</li><li>or <a href="https://acme.test/help">contact us</a>.</li></ul>
<p style="font-size:11px">This link expires in 1&nbsp;hour.</p>
</td></tr></table></body></html>"#;
        let text = to_text(html);
        for want in [
            "Reset your password",
            "ada@example.com",
            "Choose a new password",
            "ignore this email",
            "contact us",
            "1 hour",
            // The links survive, their URLs decoded, after their words.
            "Choose a new password [https://acme.test/reset?t=abc&u=1]",
            "contact us [https://acme.test/help]",
            "* ignore this email,",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        for never in ["track(", "background:", "preview tracking", "<", "&amp;", "&nbsp;"] {
            assert!(!text.contains(never), "{never:?} leaked into:\n{text}");
        }
        assert!(text.lines().all(|l| l.chars().count() <= WIDTH), "prose wrapped at 78 columns:\n{text}");
    }

    #[test]
    fn text_from_a_real_looking_email() {
        let html = r#"<!doctype html><html><head><style>p{color:red}</style></head><body>
<div style="display:none;max-height:0">Your receipt for order 1042</div>
<table><tr><td><h1>Thanks, Ada!</h1><p>We received your payment of <b>$42.00</b>.</p>
<p><a href="https://shop.acme.test/orders/1042">View your order</a></p></td></tr></table>
<p>Acme Inc &middot; 1 Main St</p></body></html>"#;
        let text = to_text(html);
        for want in ["Your receipt for order 1042", "Thanks, Ada!", "$42.00", "View your order", "Acme Inc · 1 Main St"]
        {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("color:red") && !text.contains('<'), "{text}");
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any input: no panic, no line over the width unless it is one word, no trailing
        /// space, and the words of plain text (no markup, no references) come out in order.
        #[test]
        fn words_survive_and_lines_are_bounded(
            html in r#"([a-z]{1,12}|[ \n]|<P>|</P>|<BR>|<LI>|<UL>|</UL>|<TD>|<BLOCKQUOTE>|</BLOCKQUOTE>|<PRE>|</PRE>){0,80}"#
        ) {
            let text = to_text(&html);
            for line in text.lines() {
                prop_assert!(!line.ends_with(' '), "{line:?}");
                prop_assert!(line.chars().count() <= WIDTH || !line.trim_start_matches(['>', ' ', '*']).contains(' '), "{line:?}");
            }
            // Markup is upper case here, words lower case: the letters keep their order.
            let letters = |s: &str| s.chars().filter(char::is_ascii_lowercase).collect::<String>();
            prop_assert_eq!(letters(&html), letters(&text));
        }

        #[test]
        fn any_input_is_read_without_panic_and_bounded(html in ".{0,400}") {
            let text = to_text(&html);
            prop_assert!(text.len() <= 8 * html.len() + 64);
        }
    }
}
