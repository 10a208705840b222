//! Amazon SES event notifications delivered by e-mail: their JSON is the report.

use super::text::{clean_address, is_mailbox};
use super::{BounceRecord, Evidence, Links, MessageKind, Parsed, Reason, feedback_token, record};
use crate::bounce::reason::{Head, Rules};

/// An Amazon SES event notification (`{"notificationType": "Bounce" | "Complaint" |
/// "Delivery", ...}`) sent by e-mail through SNS: its JSON is the report.
pub(super) fn ses_notification(human: &str, links: &Links, rules: &Rules) -> Option<Parsed> {
    let v = ses_json(human)?;
    let links = links.clone();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let kind = v.get("notificationType").or_else(|| v.get("eventType"))?.as_str()?;
    match kind {
        "Delivery" => Some(Parsed::empty(MessageKind::Delivered, links)),
        "Complaint" => {
            let complainants = v
                .pointer("/complaint/complainedRecipients")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("emailAddress")?.as_str().map(clean_address))
                .filter(|a| is_mailbox(a))
                .collect();
            let feedback_type =
                v.pointer("/complaint/complaintFeedbackType").and_then(|t| t.as_str()).and_then(feedback_token);
            Some(Parsed {
                complaint: true,
                complainants,
                feedback_type,
                ..Parsed::empty(MessageKind::Complaint, links)
            })
        }
        "Bounce" => {
            let bounce = v.get("bounce")?;
            let undetermined = bounce.get("bounceType").and_then(|t| t.as_str()) == Some("Undetermined");
            let bounces: Vec<BounceRecord> = bounce
                .get("bouncedRecipients")?
                .as_array()?
                .iter()
                .filter_map(|r| {
                    // (The notification is the sender's word: an "address" that is none is
                    // no recipient.)
                    let rcpt = Some(clean_address(r.get("emailAddress")?.as_str()?)).filter(|a| is_mailbox(a))?;
                    let diag = r.get("diagnosticCode").map(text).unwrap_or_default();
                    let status = r.get("status").map(text);
                    let mut b = record(
                        &rcpt,
                        &Evidence {
                            status: status.as_deref(),
                            diag: &diag,
                            account: "",
                            head: &Head::new(""),
                            rules,
                            delayed: false,
                            only_recipient: false,
                            stage: None,
                        },
                    );
                    // SES could not tell either: keep its verdict rather than guess one.
                    if undetermined && diag.is_empty() {
                        b.reason = Reason::Undefined;
                        (b.kind, b.subtype) = Reason::Undefined.classify(None, "");
                        b.suppress = false;
                    }
                    Some(b)
                })
                .collect();
            // A notification whose recipients are none is no bounce, and not free text either:
            // read as text, its JSON names the sender.
            let kind = if bounces.is_empty() { MessageKind::NotBounce } else { MessageKind::Bounce };
            Some(Parsed { bounces, ..Parsed::empty(kind, links) })
        }
        _ => None,
    }
}

/// The SES notification in `text`: the first JSON object whose first key is
/// `notificationType` (SNS to e-mail) or `eventType` (configuration-set event publishing),
/// compact or pretty-printed, or an SNS envelope (`"Type": "Notification"`) whose `Message`
/// string holds one. Only objects that open with one of those keys are parsed, so a bounce
/// quoting other JSON costs nothing.
pub(super) fn ses_json(text: &str) -> Option<serde_json::Value> {
    // At most a few objects are parsed: a message stuffed with `{"Type": …` objects (anyone
    // may mail a bounce address) costs a few parses of at most the 1 MB input, not one each.
    let mut parsed = 0;
    for (at, _) in text.match_indices('{').take(64) {
        let rest = text[at + 1..].trim_start();
        let key = ["\"notificationType\"", "\"eventType\"", "\"Type\""].into_iter().find(|k| rest.starts_with(k));
        let Some(key) = key else { continue };
        parsed += 1;
        if parsed > 4 {
            return None;
        }
        let first = |t: &str| serde_json::Deserializer::from_str(t).into_iter::<serde_json::Value>().next();
        let v = match first(&text[at..]) {
            Some(Ok(v)) => v,
            // A relay broke a line of the body that was too long for it, inside a string.
            _ => match first(&unwrapped(&text[at..])) {
                Some(Ok(v)) => v,
                _ => continue,
            },
        };
        if key == "\"Type\"" {
            let inner = v
                .get("Message")
                .and_then(|m| m.as_str())
                .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
            if let Some(inner) = inner.filter(|i| i.get("notificationType").or_else(|| i.get("eventType")).is_some()) {
                return Some(inner);
            }
            continue;
        }
        return Some(v);
    }
    None
}

/// `json` with the line breaks that relays put into over-long lines taken out of its
/// strings, where JSON allows none: sendmail's `!` + newline + space (what it does to a line
/// over its limit), and any other raw line break inside a string. Breaks between tokens stay
/// (they are white space). Why: SNS mails a notification's `Message` as one line of several
/// kilobytes, and a relay on the way may wrap it; the JSON then no longer parses, and the
/// notification would be read as free text (its sender taken for the failed recipient).
fn unwrapped(json: &str) -> String {
    const SENDMAIL_BREAKS: [&str; 2] = ["!\r\n ", "!\n "];
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    // One pass: sendmail's breaks are skipped wherever they stand (a `!` is no JSON outside a
    // string), other line breaks only inside a string.
    let mut skip_to = 0;
    for (i, c) in json.char_indices() {
        if i < skip_to {
            continue;
        }
        if c == '!'
            && let Some(m) = SENDMAIL_BREAKS.iter().find(|m| json[i..].starts_with(**m))
        {
            skip_to = i + m.len();
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if c == '\n' || c == '\r' {
                continue;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_a_relay_wrapped_is_read_whole() {
        // sendmail breaks a line over its limit with "!", a newline and a space; other relays
        // with a bare newline. Either lands inside the SNS envelope's `Message` string.
        let inner = r#"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"bounce@simulator.amazonses.com\",\"status\":\"5.1.1\"}]},\"mail\":{\"source\":\"me@example.org\",\"headers\":[{\"name\":\"Subject\",\"value\":\"Nya<BREAK>aan\"}]}}"#;
        for wrap in ["!\n ", "\n", "\r\n"] {
            let body = format!(
                "{{\n  \"Type\" : \"Notification\",\n  \"Message\" : \"{}\"\n}}\n",
                inner.replace("<BREAK>", wrap)
            );
            let v = ses_json(&body).unwrap_or_default();
            assert_eq!(
                v.pointer("/bounce/bouncedRecipients/0/emailAddress").and_then(|a| a.as_str()),
                Some("bounce@simulator.amazonses.com"),
                "{wrap:?}"
            );
            if wrap.starts_with('!') {
                assert_eq!(v.pointer("/mail/headers/0/value").and_then(|a| a.as_str()), Some("Nyaaan"));
            }
        }
        // An "address" with no `@` is no recipient (the fuzzer's find: it was reported as one).
        let odd = inner.replace("bounce@simulator", "bounce-at-simulator").replace("<BREAK>", "");
        let raw = format!(
            "From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n{{\"Type\": \"Notification\", \"Message\": \"{odd}\"}}\n"
        );
        let p = crate::inbound::parse(raw.as_bytes());
        assert_eq!((p.kind, p.bounces.len()), (MessageKind::NotBounce, 0), "{:?}", p.bounces);
        // Breaks between tokens are white space, and stay.
        assert_eq!(unwrapped("{\n \"a\" :\n \"b\nc\"\n}"), "{\n \"a\" :\n \"bc\"\n}");
        // (An escaped quote does not end the string; an escaped `n` is no break.)
        assert_eq!(unwrapped("{\"a\":\"x\\\"\ny\\n\"}"), "{\"a\":\"x\\\"y\\n\"}");
    }
}
