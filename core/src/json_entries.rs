//! How many entries a JSON request body's arrays and objects may hold, checked before the
//! body is deserialized.
//!
//! Why: deserializing takes far more memory per entry than the entry takes in the body. An
//! item `{}` of a batch is 3 bytes of JSON and an `EmailRequest` of about 500 bytes; a 45 MB
//! batch of them took the server to 8 GB, past any bound the body-size limit was meant to
//! give. An address in `to` (`"a@b.c",`) grows about five times, a tag or an attachment `{}`
//! 15 to 40 times. The limits on lists (50 recipients, 100 emails a batch) are checked only
//! after the whole body is read into values; this scan, one pass without allocating, refuses
//! first a body whose lists could not be within any limit:
//!
//! - one array or object holds at most [`MAX_ENTRIES`] entries (refused naming its path);
//! - the body holds at most [`MAX_TOTAL_ENTRIES`] in all (refused as the body's).
//!
//! An attachment's `content` given as an array of byte values (as the Python SDK sends it)
//! is not counted: each entry becomes one byte, and the size limit bounds them.
//!
//! The scan reads what is well-formed; where the body is not (an unmatched bracket, nesting
//! past [`MAX_DEPTH`]) it stops and leaves the error to the parser.

use crate::error::{FieldError, Rule};

/// The most entries one array or object of a request body may hold: twenty times the largest
/// list limit of the hosted service (50 recipients), ten times the largest batch (100).
pub const MAX_ENTRIES: usize = 1_000;

/// The most entries all the arrays and objects of a request body may hold together: a full
/// batch of 100 emails with 1,000 entries to each.
pub const MAX_TOTAL_ENTRIES: usize = 100_000;

/// Past this depth the scan stops (the parser refuses nesting past 128 levels).
pub const MAX_DEPTH: usize = 256;

/// One open array or object.
#[derive(Debug)]
struct Frame {
    array: bool,
    /// Entries so far (for an array, the index of the current one once it has begun).
    entries: usize,
    /// No entry has begun since the opening bracket or the last comma: an array's next value,
    /// or an object's next string (its key), begins one.
    fresh: bool,
    /// An object: where its current key's text stands (without the quotes).
    key: (usize, usize),
    /// An attachment's `content`: its entries are not counted.
    exempt: bool,
}

/// Checks `json` against [`MAX_ENTRIES`] and [`MAX_TOTAL_ENTRIES`]. The error's path is the
/// parser's (`to`, `[3].tags`, `headers`; empty for the body itself), and the total's is
/// `body`.
pub fn check(json: &[u8]) -> Result<(), FieldError> {
    check_within(json, MAX_ENTRIES, MAX_TOTAL_ENTRIES)
}

/// [`check`] with other limits: `entries` per array or object, `total` in all.
fn check_within(json: &[u8], entries: usize, max_total: usize) -> Result<(), FieldError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut total = 0usize;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        match b {
            b'"' => {
                let Some(end) = string_end(json, i + 1) else { break };
                if let Some(top) = stack.last_mut() {
                    if !top.array && top.fresh {
                        top.fresh = false;
                        top.key = (i + 1, end);
                        top.entries += 1;
                        total += 1;
                    } else {
                        begin_value(top, &mut total);
                    }
                }
                i = end + 1;
                continue;
            }
            b'[' | b'{' => {
                if stack.len() >= MAX_DEPTH {
                    break;
                }
                let exempt = b == b'[' && is_attachment_content(json, &stack);
                if let Some(top) = stack.last_mut() {
                    begin_value(top, &mut total);
                }
                stack.push(Frame { array: b == b'[', entries: 0, fresh: true, key: (0, 0), exempt });
            }
            b']' | b'}' => {
                let Some(frame) = stack.pop() else { break };
                if frame.array != (b == b']') {
                    break;
                }
                if !frame.exempt && frame.entries > entries {
                    return Err(FieldError::new(
                        path(json, &stack),
                        Rule::TooManyEntries { max: entries, got: frame.entries },
                    ));
                }
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.fresh = true;
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' | b':' => {}
            // The first byte of a number or a literal.
            _ => {
                if let Some(top) = stack.last_mut() {
                    begin_value(top, &mut total);
                }
                // The rest of the token: nothing in it is structural.
                while i + 1 < json.len() && !matches!(json[i + 1], b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                    i += 1;
                }
            }
        }
        i += 1;
    }
    if total > max_total {
        return Err(FieldError::new("body", Rule::TooManyValues { max: max_total, got: total }));
    }
    Ok(())
}

/// A value begins in `top`: for an array, its next entry (counted unless exempt).
fn begin_value(top: &mut Frame, total: &mut usize) {
    if top.array && top.fresh {
        top.fresh = false;
        top.entries += 1;
        if !top.exempt {
            *total += 1;
        }
    }
}

/// Where the string whose text begins at `from` ends (its closing quote), past escapes.
fn string_end(json: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        if json[at] == b'"' {
            return Some(at);
        }
        from = at + 2;
    }
}

/// Whether an array opening under `stack` is an attachment's `content`: the value of key
/// `content` in an object that is an entry of the array under key `attachments`.
fn is_attachment_content(json: &[u8], stack: &[Frame]) -> bool {
    let key = |f: &Frame| json.get(f.key.0..f.key.1).unwrap_or_default();
    match stack {
        [.., holder, list, item] => {
            !item.array && key(item) == b"content" && list.array && !holder.array && key(holder) == b"attachments"
        }
        _ => false,
    }
}

/// The path of the value the top of `stack` is at, as the parser writes paths: `a.b[2].c`.
fn path(json: &[u8], stack: &[Frame]) -> String {
    let mut out = String::new();
    for f in stack {
        if f.array {
            out.push_str(&format!("[{}]", f.entries.saturating_sub(1)));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            let raw = json.get(f.key.0..f.key.1).unwrap_or_default();
            // A key with an escape is decoded as the parser decodes it.
            let mut quoted = Vec::with_capacity(raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(raw);
            quoted.push(b'"');
            match serde_json::from_slice::<String>(&quoted) {
                Ok(k) => out.push_str(&k),
                Err(_) => out.push_str(&String::from_utf8_lossy(raw)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn list(n: usize, item: &str) -> String {
        format!("[{}]", vec![item; n].join(","))
    }

    fn refused(json: &str) -> (String, Rule) {
        let e = check(json.as_bytes()).unwrap_err();
        (e.path, e.rule)
    }

    #[test]
    fn a_list_past_the_limit_is_refused_by_its_path_with_its_count() {
        assert!(check(format!(r#"{{"to":{}}}"#, list(MAX_ENTRIES, r#""a@b.c""#)).as_bytes()).is_ok());
        let json = format!(r#"{{"from":"a@b.c","to":{}}}"#, list(MAX_ENTRIES + 5, r#""a@b.c""#));
        assert_eq!(refused(&json), ("to".into(), Rule::TooManyEntries { max: MAX_ENTRIES, got: MAX_ENTRIES + 5 }));
        // A batch of empty objects, and a list inside one of its items.
        assert_eq!(refused(&list(MAX_ENTRIES + 1, "{}")).0, "");
        let item = format!(r#"{{"tags":{}}}"#, list(MAX_ENTRIES + 1, r#"{"name":"a","value":"b"}"#));
        assert_eq!(refused(&format!("[{{}},{{}},{item}]")).0, "[2].tags");
        // Objects count their members.
        let headers: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!(r#""X-{i}":"v""#)).collect();
        assert_eq!(refused(&format!(r#"{{"headers":{{{}}}}}"#, headers.join(","))).0, "headers");
        // Numbers and literals are entries too; an escaped key is named as the parser names it.
        assert_eq!(refused(&format!(r#"{{"t\u0065mplate":{}}}"#, list(MAX_ENTRIES + 1, "0"))).0, "template");
        assert_eq!(refused(&format!(r#"{{"a":{{"b":{}}}}}"#, list(MAX_ENTRIES + 1, "null"))).0, "a.b");
    }

    #[test]
    fn all_lists_together_are_bounded() {
        let per = list(MAX_ENTRIES, "1");
        let n = MAX_TOTAL_ENTRIES / MAX_ENTRIES;
        // `n` full lists and the outer one's `n` entries: over by `n`.
        let json = format!("[{}]", vec![per.as_str(); n].join(","));
        assert_eq!(
            refused(&json),
            ("body".into(), Rule::TooManyValues { max: MAX_TOTAL_ENTRIES, got: n * MAX_ENTRIES + n })
        );
        let json = format!("[{}]", vec![per.as_str(); n - 1].join(","));
        assert!(check(json.as_bytes()).is_ok());
    }

    #[test]
    fn an_attachment_content_of_byte_values_is_not_counted() {
        let bytes = list(MAX_ENTRIES * 200, "255");
        let json = format!(r#"{{"attachments":[{{"filename":"a"}},{{"content":{bytes}}}]}}"#);
        assert!(check(json.as_bytes()).is_ok());
        // Elsewhere the same key is no exemption.
        let json = format!(r#"{{"headers":{{"content":{bytes}}}}}"#);
        assert_eq!(refused(&json).0, "headers.content");
        let json = format!(r#"{{"content":{bytes}}}"#);
        assert_eq!(refused(&json).0, "content");
    }

    #[test]
    fn strings_hide_their_brackets_and_commas() {
        let tricky = r#""a,b]}[{\"\\,""#;
        let json = format!(r#"{{"to":{},"html":"<p>,,,[[[</p>"}}"#, list(MAX_ENTRIES, tricky));
        assert!(check(json.as_bytes()).is_ok());
        let json = format!(r#"{{"to":{}}}"#, list(MAX_ENTRIES + 1, tricky));
        assert_eq!(refused(&json), ("to".into(), Rule::TooManyEntries { max: MAX_ENTRIES, got: MAX_ENTRIES + 1 }));
    }

    #[test]
    fn malformed_bodies_are_left_to_the_parser() {
        for json in ["", "]", "}", "[}", "{\"a\":[1,2", "\"open", "[[[[", "{\"a\"", &"[".repeat(10_000)] {
            assert!(check(json.as_bytes()).is_ok(), "{json:?}");
        }
    }

    /// What the scan must answer for `v` under the limits: the first array or object to close
    /// (children before their parent, in document order) with more than `entries` entries,
    /// by its path; else the total when it is over `total`. An attachment's `content` array
    /// is not counted.
    fn model(v: &serde_json::Value, entries: usize, total: usize) -> Result<(), (String, Rule)> {
        fn walk(
            v: &serde_json::Value,
            path: &str,
            content: bool,
            entries: usize,
            count: &mut usize,
        ) -> Result<(), (String, Rule)> {
            let n = match v {
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        walk(x, &format!("{path}[{i}]"), false, entries, count)?;
                    }
                    a.len()
                }
                serde_json::Value::Object(o) => {
                    for (k, x) in o {
                        let at = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                        // `attachments[i].content`: the parent is an item of `attachments`.
                        let item_of_attachments = path.ends_with(']')
                            && path[..path.rfind('[').unwrap_or(0)].rsplit('.').next() == Some("attachments");
                        walk(x, &at, k == "content" && item_of_attachments && x.is_array(), entries, count)?;
                    }
                    o.len()
                }
                _ => return Ok(()),
            };
            if content {
                return Ok(());
            }
            *count += n;
            if n > entries {
                return Err((path.to_string(), Rule::TooManyEntries { max: entries, got: n }));
            }
            Ok(())
        }
        let mut count = 0;
        walk(v, "", false, entries, &mut count)?;
        if count > total {
            return Err(("body".into(), Rule::TooManyValues { max: total, got: count }));
        }
        Ok(())
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            r#"[a-z,\[\]{}"\\: ]{0,8}"#.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 12, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..12).prop_map(serde_json::Value::from),
                prop::collection::btree_map(
                    prop_oneof![Just("attachments".to_string()), Just("content".to_string()), r#"[a-z\[\]{},"]{0,4}"#],
                    inner,
                    0..12
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On any JSON, compact or pretty, under small limits, the scan answers what the
        /// parsed value holds: the same list refused by the same path and count, or the same
        /// total, or nothing.
        #[test]
        fn the_scan_counts_what_the_parser_reads(
            v in value(),
            as_content in any::<bool>(),
            pretty in any::<bool>(),
            entries in 0usize..12,
            total in 0usize..80,
        ) {
            // Half the time the value stands where an attachment's bytes do.
            let v = if as_content { serde_json::json!({"attachments": [{"content": v}]}) } else { v };
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let got = check_within(text.as_bytes(), entries, total).map_err(|e| (e.path, e.rule));
            prop_assert_eq!(got, model(&v, entries, total), "{}", text);
        }
    }
}
