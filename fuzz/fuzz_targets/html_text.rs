//! The text reader (`html::to_text`, the text part derived from html sent alone): for any
//! input it ends, its lines carry no trailing space and are no longer than the width unless
//! they hold one word, its output stays linear in the input, and — where no link or image
//! adds an address or alt text — its words are the text html5gum (a spec-conformant
//! tokenizer) reads where a browser shows it, compared by their ASCII letters in order; and
//! the one pass that reads both the text and the links (`html::text_and_links`, a tracked
//! hand-over's) gives what each reader gives alone.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::html::{TEXT_WIDTH, links_with_conditionals, text_and_links, text_by_html5gum, to_text};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let text = to_text(s);
    let (one_pass, links) = text_and_links(s);
    assert_eq!(one_pass, text, "{s:?}");
    assert_eq!(links, links_with_conditionals(s), "{s:?}");
    assert!(text.len() <= 8 * s.len() + 64, "{s:?}");
    let lower = s.to_ascii_lowercase();
    // Preformatted text keeps its lines as written.
    let pre = ["<pre", "<listing", "<plaintext"].iter().any(|t| lower.contains(t));
    for line in text.lines() {
        assert!(!line.ends_with(' '), "{line:?} from {s:?}");
        // One word, perhaps after its list marker: nothing to break it at.
        let words = line.trim_start_matches(['>', ' ']).split(' ').filter(|w| !w.is_empty()).count();
        assert!(pre || line.chars().count() <= TEXT_WIDTH || words <= 2, "{line:?} from {s:?}");
    }
    if !lower.contains("<a") && !lower.contains("<img") {
        let letters = |t: &str| t.chars().filter(char::is_ascii_alphabetic).collect::<String>();
        assert_eq!(letters(&text), letters(&text_by_html5gum(s)), "{s:?}");
    }
});
