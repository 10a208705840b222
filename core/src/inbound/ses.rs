//! Amazon SES event notifications delivered by e-mail: their JSON is the report.

use super::{BounceRecord, Evidence, Links, MessageKind, Parsed, Reason, record, text::clean_address};
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
                .filter(|a| !a.is_empty())
                .collect();
            Some(Parsed { complaint: true, complainants, ..Parsed::empty(MessageKind::Complaint, links) })
        }
        "Bounce" => {
            let bounce = v.get("bounce")?;
            let undetermined = bounce.get("bounceType").and_then(|t| t.as_str()) == Some("Undetermined");
            let bounces: Vec<BounceRecord> = bounce
                .get("bouncedRecipients")?
                .as_array()?
                .iter()
                .filter_map(|r| {
                    let rcpt = clean_address(r.get("emailAddress")?.as_str()?);
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
            (!bounces.is_empty()).then(|| Parsed { bounces, ..Parsed::empty(MessageKind::Bounce, links) })
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
        let mut stream = serde_json::Deserializer::from_str(&text[at..]).into_iter::<serde_json::Value>();
        let Some(Ok(v)) = stream.next() else { continue };
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
