//! The link reader against html5gum, a spec-conformant HTML tokenizer: for any input both find
//! the same `a` / `area` / `base` hrefs, and reading their hosts never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::html::{links, links_by_html5gum};
use mailroom_core::insights::link_hosts;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let ours: Vec<_> = links(s).into_iter().map(|l| (l.kind, l.href.into_owned())).collect();
    assert_eq!(ours, links_by_html5gum(s), "{s:?}");
    let _ = link_hosts(s);
});
