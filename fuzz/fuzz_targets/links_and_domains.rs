//! What clients and readers send to the tracking, share and domain code: tracking tokens
//! (heads and escaped targets in link paths), HTML to rewrite, share tokens, `expires_in`
//! durations and domain names. Any input gives an answer, never a panic; a token verifies
//! only if the key made it, and then carries what was signed; a rewrite keeps every link a
//! standard tokenizer sees, each tracked one leading back to the URL it replaced; an accepted
//! duration is at most 48 hours; an accepted domain name is lower-case ASCII with a
//! registrable part.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_core::email::{AccountId, EmailId};
use mailroom_core::tracking::{Kind, LinkKey, Token, Tracking, anchor_hrefs, escape, rewrite_html, unescape};

fuzz_target!(|data: &[u8]| {
    let key = LinkKey::new(&[5; 32]);
    let text = String::from_utf8_lossy(data);

    // Tokens: anything a client puts in a path.
    let _ = key.verify(&text);
    let t =
        Token { kind: Kind::Click, email: EmailId::from_u128(7), account: AccountId::new("a"), rest: text.to_string() };
    if let Some(signed) = key.sign(&t) {
        assert_eq!(key.verify(&signed), Some(t));
    }
    let mut e = String::new();
    escape(&text, &mut e);
    assert_eq!(unescape(&e).as_deref(), Some(&*text));

    // HTML: spans are real slices; the rewrite keeps the links a tokenizer sees.
    for (span, _) in anchor_hrefs(&text) {
        assert!(text.get(span).is_some());
    }
    let tracking = Tracking { base: "https://l.test".into(), open: false, click: true };
    let out = rewrite_html(&text, &tracking, &key, EmailId::from_u128(7), &AccountId::new("a"));
    // The pixel only adds its image: without it, the same output.
    let with_pixel = rewrite_html(
        &text,
        &Tracking { open: true, ..tracking.clone() },
        &key,
        EmailId::from_u128(7),
        &AccountId::new("a"),
    );
    let img_start = with_pixel.rfind("<img src=\"https://l.test/t/o/").unwrap();
    let img_end = img_start + with_pixel[img_start..].find('>').unwrap() + 1;
    assert_eq!(format!("{}{}", &with_pixel[..img_start], &with_pixel[img_end..]), out);
    let before: Vec<String> =
        mailroom_core::html::links(&text).into_iter().map(|l| l.href.trim().to_string()).collect();
    let after: Vec<String> = mailroom_core::html::links(&out)
        .into_iter()
        .map(|l| match l.href.strip_prefix("https://l.test/t/c/") {
            Some(tok) => key.verify(tok).map(|t| t.rest).unwrap_or_else(|| format!("unverified {tok}")),
            None => l.href.trim().to_string(),
        })
        .collect();
    assert_eq!(before, after);

    // Share tokens and durations.
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
    let _ = mailroom_core::share::verify(&key, &text, now);
    if let Ok(d) = mailroom_core::share::parse_expires_in(&text) {
        assert!(d > chrono::Duration::zero() && d <= mailroom_core::share::MAX_SHARE);
    }

    // Domain names.
    if let Ok(name) = mailroom_core::domains::normalize_name(&text) {
        assert!(name.is_ascii() && name == name.to_ascii_lowercase() && !name.ends_with('.'));
        assert!(psl::domain_str(&name).is_some());
    }
});
