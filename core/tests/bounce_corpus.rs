//! Scores the bounce reader on the labelled corpus in the workspace's `tests/corpus/bounces` (real messages
//! from about 90 MTAs; see its README for the source and licence): recipient precision and
//! recall, type accuracy, type+subtype accuracy, status accuracy and complaint detection.
//! `cargo test --release -p mailroom-core --test bounce_corpus -- --nocapture` prints the figures and every miss.
#![allow(clippy::unwrap_used, clippy::panic)]

use mailroom_core::bounce::codes::{Provider, codes};
use mailroom_core::bounce::reason::{Basis, Rules};
use mailroom_core::bounce::{EnhancedStatus, SmtpReply, classify_at};
use mailroom_core::inbound::{Family, MessageKind, Parsed, parse, parse_with, parse_without_reader};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Default, Debug)]
struct Score {
    gold: usize,
    predicted: usize,
    matched: usize,
    type_ok: usize,
    subtype_ok: usize,
    status_ok: usize,
    complaints: usize,
    complaints_found: usize,
    false_complaints: usize,
    /// Complaints whose labelled recipients (every one, in order) are the ones read.
    complainants_ok: usize,
    /// Recipients suppressed whose label is not a permanent failure: the error that costs a
    /// sender a good address.
    wrongly_suppressed: usize,
    misses: Vec<String>,
}

fn labels(dir: &Path) -> Vec<serde_json::Value> {
    let labels = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    labels.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn score(dir: &Path) -> Score {
    score_with(dir, &labels(dir), |_, raw| parse(raw))
}

/// `a / b`, and 1 when there is nothing to count.
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Scores the messages of `labels` as `read` reads them (given the label and the bytes).
fn score_with(dir: &Path, labels: &[serde_json::Value], read: impl Fn(&serde_json::Value, &[u8]) -> Parsed) -> Score {
    let mut s = Score::default();
    for l in labels {
        let file = l["file"].as_str().unwrap();
        let raw = std::fs::read(dir.join(file)).unwrap();
        let p = read(l, &raw);
        let gold_complaint = l["complaint"].as_bool().unwrap_or(false);
        s.complaints += usize::from(gold_complaint);
        s.complaints_found += usize::from(gold_complaint && p.complaint);
        s.false_complaints += usize::from(!gold_complaint && p.complaint);
        if gold_complaint != p.complaint {
            s.misses.push(format!("{file}: complaint {gold_complaint} vs {}", p.complaint));
        }
        if gold_complaint {
            let want: Vec<&str> =
                l["complaints"].as_array().unwrap().iter().filter_map(|c| c["recipient"].as_str()).collect();
            if p.complainants == want {
                s.complainants_ok += 1;
            } else {
                s.misses.push(format!("{file}: complaint about {want:?} vs {:?}", p.complainants));
            }
        }
        let got: HashMap<&str, _> = p.bounces.iter().map(|b| (b.recipient.as_str(), b)).collect();
        s.predicted += got.len();
        for g in l["bounces"].as_array().unwrap() {
            s.gold += 1;
            let rcpt = g["recipient"].as_str().unwrap();
            let Some(b) = got.get(rcpt) else {
                s.misses.push(format!(
                    "{file}: missed {rcpt} (found {:?}, kind {:?})",
                    got.keys().collect::<Vec<_>>(),
                    p.kind
                ));
                continue;
            };
            s.matched += 1;
            let gt = g["type"].as_str().unwrap();
            let gs = g["subtype"].as_str().unwrap();
            s.wrongly_suppressed += usize::from(b.suppress && gt != "Permanent");
            let kt = format!("{:?}", b.kind);
            let ks = format!("{:?}", b.subtype);
            if kt == gt {
                s.type_ok += 1;
                s.subtype_ok += usize::from(ks == gs);
            } else {
                s.misses.push(format!(
                    "{file}: {rcpt} type {gt}/{} vs {kt}/{:?} [{}] {}",
                    g["sisimai_reason"].as_str().unwrap_or(""),
                    b.reason,
                    b.status,
                    b.diagnostic.chars().take(140).collect::<String>()
                ));
            }
            s.status_ok += usize::from(g["status"].as_str() == Some(b.status.as_str()));
        }
        let gold_rcpts: Vec<&str> =
            l["bounces"].as_array().unwrap().iter().filter_map(|g| g["recipient"].as_str()).collect();
        for extra in got.keys().filter(|r| !gold_rcpts.contains(r)) {
            s.misses.push(format!("{file}: extra recipient {extra}"));
        }
        if matches!(l["kind"].as_str(), Some("auto_reply" | "delivered" | "not_bounce" | "complaint"))
            && !p.bounces.is_empty()
        {
            s.misses.push(format!("{file}: {} reported as a bounce ({:?})", l["kind"], p.kind == MessageKind::Bounce));
        }
    }
    s
}

#[test]
fn corpus_scores() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bounces");
    let s = score(&dir);
    let precision = ratio(s.matched, s.predicted);
    let recall = ratio(s.matched, s.gold);
    let type_acc = ratio(s.type_ok, s.gold);
    println!("bounce corpus: {} gold recipients", s.gold);
    println!("  recipient precision {precision:.3}, recall {recall:.3}");
    println!(
        "  type accuracy {type_acc:.3}, type+subtype {:.3}, status {:.3}",
        ratio(s.subtype_ok, s.gold),
        ratio(s.status_ok, s.gold)
    );
    println!(
        "  complaints {}/{} found, {} false, {} with their recipients",
        s.complaints_found, s.complaints, s.false_complaints, s.complainants_ok
    );
    for m in &s.misses {
        println!("  miss: {m}");
    }
    // Floors that keep what works working. The goals (type ≥ 0.95, recall ≥ 0.99 on unseen
    // mail) are not met yet; the README gives the current figures and what the misses are.
    // (Type 0.909 → 0.895 when a 5xx whose words say nothing known became Permanent, as
    // `bounce::reason::verdict` explains: these labels call most of those Transient.)
    // (0.893 → 0.907 and recall 0.988 → 0.990 with the family readers.)
    assert!(recall >= 0.989, "recipient recall fell to {recall:.3}");
    assert!(precision >= 0.985, "recipient precision fell to {precision:.3}");
    assert!(type_acc >= 0.915, "type accuracy fell to {type_acc:.3}");
    assert_eq!(s.complaints_found, s.complaints, "every complaint is detected");
    // The one complaint whose recipient is not read is a placeholder the labels made up
    // (`undisclosed-recipient-in-headers@….invalid`, for a quoted `To: "undisclosed"`).
    assert!(s.complainants_ok + 1 >= s.complaints, "complaints about the wrong recipients: {}", s.complainants_ok);
}

/// One reason function for both paths: every recipient a report gives with a reply code, read
/// again as the live SMTP reply it quotes (same code, status, words and step), gets the same
/// reason, type, subtype and suppression — except where the report's verdict came from the
/// rest of the report ([`Basis::Context`]), which a live reply does not have.
#[test]
fn smtp_replies_and_reports_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bounces");
    let (mut compared, mut context, mut disagree) = (0, 0, Vec::new());
    for l in labels(&dir) {
        let file = l["file"].as_str().unwrap();
        let p = parse(&std::fs::read(dir.join(file)).unwrap());
        for b in &p.bounces {
            let Some(code) = b.reply_code else { continue };
            if b.basis == Basis::Context || b.diagnostic.chars().count() >= 2000 {
                context += 1;
                continue;
            }
            let status = (!b.status_inferred).then(|| EnhancedStatus::parse(&b.status)).flatten();
            let reply = SmtpReply { code, enhanced: status, text: b.diagnostic.clone() };
            let c = classify_at(&reply, b.stage);
            compared += 1;
            // A status whose class disagrees with the code is ignored by the live path (it
            // never suppresses on one); the report keeps it. Both must still agree on the rest.
            let agrees = status.is_none_or(|s| u16::from(s.class) == code / 100);
            if agrees && (c.kind, c.subtype, c.suppress, c.reason) != (b.kind, b.subtype, b.suppress, b.reason) {
                disagree.push(format!(
                    "{file}: {} {reply} -> {c:?} vs {:?}",
                    b.recipient,
                    (b.kind, b.subtype, b.suppress, b.reason)
                ));
            }
        }
    }
    println!("{compared} recipients compared, {context} decided by the rest of their report");
    assert!(compared > 300, "the corpus gives reply codes for most recipients ({compared})");
    assert!(disagree.is_empty(), "the two paths disagree:\n{}", disagree.join("\n"));
}

/// The family of a corpus file: the MTA or provider that wrote it (`lhost-postfix`,
/// `rhost-google`, `rfc3464`, `arf`...), its copies with other line endings included.
fn family(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap().trim_end_matches(".eml");
    match name.rsplit_once('-') {
        Some((f, n)) if n.chars().all(|c| c.is_ascii_digit()) => f.to_string(),
        _ => name.to_string(),
    }
}

/// Guards against fitting the rules to the corpus: leave-one-family-out. For each family,
/// every rule word that occurs in no message of another family — a word only that family
/// supports, which could only have been written from it — is taken out, and the family is
/// read with what is left. The held-out figures pool every family read that way; a word
/// that only helps in-sample shows as the gap between the two. The status table, the
/// policy and the readers are RFC-based and stay.
/// `cargo test --release -p mailroom-core --test bounce_corpus -- --nocapture` prints both sets of figures.
#[test]
fn cross_validated_by_family() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bounces");
    let all = labels(&dir);
    // Which families each rule word occurs in (case-insensitively, anywhere in the message).
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &all {
        let file = l["file"].as_str().unwrap();
        let raw = std::fs::read(dir.join(file)).unwrap();
        texts.entry(family(file)).or_default().push(String::from_utf8_lossy(&raw).to_ascii_lowercase());
    }
    // A phrase rule's pairings count as one rule: its support is every family any pairing
    // occurs in.
    let unit = |word: &str| Rules::phrase_of(word).map_or_else(|| word.to_string(), |i| format!("phrase rule {i}"));
    let mut support: HashMap<String, BTreeSet<&str>> = HashMap::new();
    for (_, word, _) in Rules::words() {
        let w = word.to_ascii_lowercase();
        let fams = texts.iter().filter(|(_, ts)| ts.iter().any(|t| t.contains(&w))).map(|(f, _)| f.as_str());
        support.entry(unit(word)).or_default().extend(fams);
    }
    // Which families each provider's reason codes occur in: a provider's table counts as
    // fitted to a family, like a word, when only that family has its codes.
    let mut code_support: HashMap<Provider, BTreeSet<&str>> = HashMap::new();
    for (f, ts) in &texts {
        for t in ts {
            for (p, _) in codes(t) {
                code_support.entry(p).or_default().insert(f.as_str());
            }
        }
    }
    println!("  provider codes by family: {code_support:?}");
    let mut pooled = Score::default();
    let mut only_one = BTreeSet::new();
    for f in texts.keys() {
        let held: Vec<serde_json::Value> =
            all.iter().filter(|l| family(l["file"].as_str().unwrap()) == *f).cloned().collect();
        let fitted = |w: &str| support.get(&unit(w)).is_some_and(|s| s.len() == 1 && s.contains(f.as_str()));
        only_one.extend(Rules::words().filter(|(_, w, _)| fitted(w)).map(|(_, w, _)| w));
        let own_codes = |p: Provider| code_support.get(&p).is_some_and(|s| s.len() == 1 && s.contains(f.as_str()));
        let rules = Rules::without(|_, w| fitted(w)).without_codes_of(own_codes);
        // A family's own reader was written from its mail: it is left out too.
        let own = file_family(f).filter(|r| Family::WITH_READERS.contains(r));
        let s = score_with(&dir, &held, |_, raw| match own {
            Some(fam) => parse_without_reader(raw, &rules, fam),
            None => parse_with(raw, &rules),
        });
        if std::env::var_os("HELD_MISSES").is_some() {
            for m in &s.misses {
                println!("  held: {m}");
            }
        }
        pooled.gold += s.gold;
        pooled.predicted += s.predicted;
        pooled.matched += s.matched;
        pooled.type_ok += s.type_ok;
        pooled.subtype_ok += s.subtype_ok;
        pooled.wrongly_suppressed += s.wrongly_suppressed;
    }
    let in_sample = score(&dir);
    let row = |name: &str, s: &Score| {
        println!(
            "  {name}: type accuracy {:.3}, type+subtype {:.3}, recall {:.3}, precision {:.3}, suppressed though not permanent {}",
            ratio(s.type_ok, s.gold),
            ratio(s.subtype_ok, s.gold),
            ratio(s.matched, s.gold),
            ratio(s.matched, s.predicted),
            s.wrongly_suppressed
        );
    };
    println!("{} families, {} rule words supported by one family only: {only_one:?}", texts.len(), only_one.len());
    row("in-sample", &in_sample);
    row("held-out families", &pooled);
    // What the reader keeps when a family is new to it: the fallback, the statuses and the
    // words other families support. A floor, so that rules fitted to one family show.
    assert!(
        ratio(pooled.type_ok, pooled.gold) >= 0.87,
        "held-out type accuracy {:.3}",
        ratio(pooled.type_ok, pooled.gold)
    );
    assert!(ratio(pooled.matched, pooled.gold) >= 0.98, "held-out recall {:.3}", ratio(pooled.matched, pooled.gold));
}

/// The reader's family of a corpus family (`lhost-exchange2003`: Exchange).
fn file_family(f: &str) -> Option<Family> {
    let name = f.trim_start_matches("lhost-").trim_start_matches("rhost-");
    Some(match name {
        "exchange2003" | "exchange2007" | "office365" | "outlook" => Family::Exchange,
        "domino" | "notes" => Family::Domino,
        "exim" => Family::Exim,
        "imailserver" => Family::IMailServer,
        "qmail" => Family::Qmail,
        "aol" => Family::Aol,
        "gmail" => Family::Google,
        _ => return None,
    })
}

/// The family Sisimai names (the corpus's `sisimai_smtpagent`), in the reader's terms.
fn sisimai_family(agent: &str) -> Option<Family> {
    Some(match agent {
        "Postfix" => Family::Postfix,
        "Sendmail" | "V5sendmail" => Family::Sendmail,
        "Exim" => Family::Exim,
        "qmail" => Family::Qmail,
        "Courier" => Family::Courier,
        "OpenSMTPD" => Family::OpenSmtpd,
        "Exchange2003" | "Exchange2007" | "Office365" | "Outlook" => Family::Exchange,
        "Domino" | "Notes" => Family::Domino,
        "IMailServer" => Family::IMailServer,
        "Gmail" | "GSuite" | "GoogleGroups" => Family::Google,
        _ => return None,
    })
}

/// The fingerprints name the family Sisimai names: of the messages whose family has a
/// fingerprint here, how many are told right (recall), and of those given a family, how many
/// are given the right one (precision). A reader applied to another family's mail misreads
/// it, so precision is what the readers stand on. Sisimai names some messages by the
/// provider that sent them (Mail.ru, GMX, MX Logic), not by the software that wrote them;
/// a provider running Exim writes Exim's notice, so those count in neither figure (they
/// are printed apart).
/// `cargo test --release -p mailroom-core --test bounce_corpus -- --nocapture families` prints both.
#[test]
fn families_are_told_by_their_fingerprints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bounces");
    let (mut known, mut told, mut named, mut right) = (0, 0, 0, 0);
    let (mut wrong, mut providers) = (Vec::new(), Vec::new());
    for l in labels(&dir) {
        let file = l["file"].as_str().unwrap();
        let raw = std::fs::read(dir.join(file)).unwrap();
        let got = parse(&raw).reporter;
        let agents: Vec<&str> =
            l["sisimai_smtpagent"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let want = agents.iter().find_map(|a| sisimai_family(a));
        known += usize::from(want.is_some());
        told += usize::from(want.is_some() && want == Some(got));
        if got != Family::Unknown && want.is_none() {
            providers.push(format!("{file}: {got:?} for {agents:?}"));
        } else if got != Family::Unknown {
            named += 1;
            right += usize::from(want == Some(got));
            if want != Some(got) {
                wrong.push(format!("{file}: {got:?} for {agents:?}"));
            }
        }
    }
    println!(
        "families: recall {:.3} ({told}/{known}), precision {:.3} ({right}/{named})",
        ratio(told, known),
        ratio(right, named)
    );
    for w in &wrong {
        println!("  wrong: {w}");
    }
    for p in &providers {
        println!("  named by provider: {p}");
    }
    assert!(ratio(right, named) >= 0.98, "family precision {:.3}", ratio(right, named));
    assert!(ratio(told, known) >= 0.9, "family recall {:.3}", ratio(told, known));
}

/// A second source the rules were not written from: flufl.bounce's test messages (GNU
/// Mailman's bounce detectors; `tests/corpus/flufl/README.md`), with the addresses its own
/// suite expects. It labels which addresses failed and which were only delayed, not why, so
/// it scores recipients: a failure must be read as a failure, a warning as a delay.
#[test]
fn second_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/flufl");
    let (mut gold, mut found, mut warned, mut warned_found, mut predicted, mut extra) = (0, 0, 0, 0, 0, 0);
    for l in labels(&dir) {
        let file = l["file"].as_str().unwrap();
        let p = parse(&std::fs::read(dir.join(file)).unwrap());
        let expect = |k: &str| -> Vec<String> {
            l[k].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
        };
        let (failed, delayed) = (expect("failed"), expect("warned"));
        // A record names its failed address and, when the report gives it apart, the address
        // the sender gave (a DSN's Original-Recipient before an alias): the one the engine
        // matches against the email's recipients, and the one flufl.bounce reports.
        let names = |b: &mailroom_core::inbound::BounceRecord, a: &String| {
            &b.recipient == a || b.original_recipient.as_ref() == Some(a)
        };
        predicted += p.bounces.len();
        for a in &failed {
            gold += 1;
            match p.bounces.iter().find(|b| names(b, a)) {
                Some(b) if !b.delayed => found += 1,
                other => println!("  miss: {file}: failure {a} read as {:?}", other.map(|b| b.delayed)),
            }
        }
        for a in &delayed {
            warned += 1;
            match p.bounces.iter().find(|b| names(b, a)) {
                Some(b) if b.delayed => warned_found += 1,
                other => println!("  miss: {file}: warning {a} read as {:?}", other.map(|b| b.delayed)),
            }
        }
        for b in p.bounces.iter().filter(|b| !failed.iter().chain(&delayed).any(|a| names(b, a))) {
            extra += 1;
            println!("  extra: {file}: {}", b.recipient);
        }
    }
    println!(
        "flufl.bounce: failures {found}/{gold} (recall {:.3}), warnings read as delays {warned_found}/{warned}, \
         precision {:.3} ({extra} of {predicted} read are not expected)",
        ratio(found, gold),
        ratio(predicted - extra, predicted)
    );
    // Floors at this reader's figures, so that a change that loses mail it has never seen shows.
    assert!(ratio(found, gold) >= 0.97, "recall {:.3}", ratio(found, gold));
    // No delay notice read as a failure (the goal): every one.
    assert_eq!(warned_found, warned, "warnings read as delays: {warned_found}/{warned}");
    assert!(ratio(predicted - extra, predicted) >= 0.94, "precision {:.3}", ratio(predicted - extra, predicted));
}

/// A third source, from which no rule was written before it was scored: the test messages of
/// Mail::DeliveryStatus::BounceParser (Perl), with the reasons its own suite expects in its
/// own vocabulary (`tests/corpus/bounceparser/README.md`). Its reasons are coarser than ours,
/// so a reading agrees when it falls within the reason's family. Also checked: nothing it
/// calls spam, a full mailbox or too large a message is ever suppressed, whatever we read.
#[test]
fn third_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bounceparser");
    let (mut judged, mut agreed, mut addressed, mut addressed_found) = (0, 0, 0, 0);
    let mut wrongly_suppressed = Vec::new();
    for l in labels(&dir) {
        let file = l["file"].as_str().unwrap();
        let expected = l["std_reason"].as_str().unwrap();
        let p = parse(&std::fs::read(dir.join(file)).unwrap());
        let failed: Vec<_> = p.bounces.iter().filter(|b| !b.delayed).collect();
        // The serde names, as `mailroom classify` prints them.
        let reasons: Vec<String> =
            failed.iter().map(|b| serde_json::to_value(b.reason).unwrap().as_str().unwrap().to_string()).collect();
        let family: &[&str] = match expected {
            "user_unknown" => &["userunknown", "hasmoved", "suspend"],
            "user_disabled" => &["suspend", "userunknown"],
            "over_quota" => &["mailboxfull", "exceedlimit"],
            "domain_error" => &["hostunknown", "norelaying", "notaccept"],
            "message_too_large" => &["mesgtoobig", "exceedlimit"],
            "spam" => &["spamdetected", "blocked", "policyviolation", "contenterror", "filtered", "rejected"],
            _ => &[],
        };
        let agrees = match expected {
            "not_bounce" => p.kind != MessageKind::Bounce,
            "bounce" | "bounce_no_report" | "unknown" => {
                p.kind == MessageKind::Bounce || expected == "bounce_no_report"
            }
            _ => !reasons.is_empty() && reasons.iter().all(|r| family.contains(&r.as_str())),
        };
        judged += 1;
        if agrees {
            agreed += 1;
        } else {
            println!("  differs: {file}: {expected} read as {:?} {reasons:?}", p.kind);
        }
        if matches!(expected, "spam" | "over_quota" | "message_too_large") && failed.iter().any(|b| b.suppress) {
            wrongly_suppressed.push(file.to_string());
        }
        for a in l["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()) {
            addressed += 1;
            if failed.iter().any(|b| b.recipient == a || b.original_recipient.as_deref() == Some(a)) {
                addressed_found += 1;
            } else {
                println!("  miss: {file}: {a}");
            }
        }
    }
    println!(
        "BounceParser: reasons agree {agreed}/{judged} ({:.3}), failed addresses found {addressed_found}/{addressed} ({:.3}), \
         suppressed on spam, quota or size: {}",
        ratio(agreed, judged),
        ratio(addressed_found, addressed),
        wrongly_suppressed.len()
    );
    assert!(wrongly_suppressed.is_empty(), "suppressed on a refusal that is no evidence: {wrongly_suppressed:?}");
    // Floors at this reader's figures, so that a change that loses mail it has never seen shows.
    assert!(ratio(agreed, judged) >= 0.92, "agreement {:.3}", ratio(agreed, judged));
    assert!(ratio(addressed_found, addressed) >= 0.97, "addresses {:.3}", ratio(addressed_found, addressed));
}

/// The fourth source: Google's, Exchange Online's, Mimecast's and GoDaddy's documented replies, with the reasons of
/// Sisimai 4.25's host tables (`tests/corpus/providers`). What must hold: nothing the tables
/// call a block, a limit, a policy, a protocol or a system error is suppressed — only what
/// they call a missing mailbox or domain, a moved or disabled one, or a domain taking no mail
/// may be. The reasons' agreement is printed; its floor is this reader's figure.
#[test]
fn provider_replies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/providers/replies.jsonl");
    let (mut judged, mut agreed) = (0, 0);
    let mut wrongly_suppressed = Vec::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let (reply, expected) = (l["reply"].as_str().unwrap(), l["reason"].as_str().unwrap());
        let c = classify_at(&SmtpReply::parse(reply).unwrap(), mailroom_core::bounce::reason::Stage::Recipient);
        let read = serde_json::to_value(c.reason).unwrap().as_str().unwrap().to_string();
        judged += 1;
        if read == expected {
            agreed += 1;
        } else {
            println!("  differs: {expected} read as {read}: {reply}");
        }
        if c.suppress && !matches!(expected, "userunknown" | "hostunknown" | "hasmoved" | "notaccept" | "suspend") {
            // Exchange's "5.4.310 … does not exist" names a destination that does not exist,
            // whatever the table calls it; 5.4.4 is "unable to route", which RFC 3463 §3.5
            // exemplifies by a domain whose lookup returns no route (the reader's policy, see
            // `reason::verdict`).
            let gone = reply.contains("does not exist") || reply.starts_with("550 5.4.4 ");
            if !gone {
                wrongly_suppressed.push(reply.to_string());
            }
        }
    }
    println!(
        "providers: reasons agree {agreed}/{judged} ({:.3}), wrongly suppressed {}",
        ratio(agreed, judged),
        wrongly_suppressed.len()
    );
    assert!(wrongly_suppressed.is_empty(), "suppressed on a refusal that is no evidence: {wrongly_suppressed:#?}");
    assert!(agreed >= 142, "agreement {agreed}/{judged}");
}

/// What a source of other bounce handlers' test messages says of the reader: each message's
/// kind (a failure, a delay warning, a complaint, something else) as labelled, the recipients
/// the handler's own tests assert, found with their action (a delay is never read as a
/// failure, asserted), and Sisimai 4.25's reading of the same messages. Nothing read from a
/// delay warning is suppressed (asserted).
struct OtherSource {
    judged: usize,
    kinds_agree: usize,
    asserted: usize,
    found: usize,
    sisimai: usize,
    sisimai_found: usize,
    sisimai_same: usize,
}

impl OtherSource {
    /// Floors at this reader's figures: so many kinds right, and of the recipients Sisimai
    /// reads (every one found), so many of the same type.
    fn at_least(&self, kinds: usize, sisimai_same: usize) {
        assert!(self.kinds_agree >= kinds, "kinds {}/{}", self.kinds_agree, self.judged);
        assert_eq!(self.sisimai_found, self.sisimai, "recipients Sisimai reads");
        assert!(self.sisimai_same >= sisimai_same, "Sisimai's type {}/{}", self.sisimai_same, self.sisimai_found);
    }
}

fn other_source(name: &str) -> OtherSource {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus").join(name);
    let (mut judged, mut kinds_agree) = (0, 0);
    let (mut asserted, mut found, mut actions_agree) = (0, 0, 0);
    let mut suppressed_on_a_delay = Vec::new();
    for l in labels(&dir) {
        let file = l["file"].as_str().unwrap();
        let expected = l["kind"].as_str().unwrap();
        let p = parse(&std::fs::read(dir.join(file)).unwrap());
        let agrees = match expected {
            "bounce" => p.kind == MessageKind::Bounce,
            "delay" => p.kind == MessageKind::Delayed && p.bounces.iter().all(|b| b.delayed),
            "complaint" => p.complaint,
            _ => !matches!(p.kind, MessageKind::Bounce | MessageKind::Delayed | MessageKind::Complaint),
        };
        judged += 1;
        if agrees {
            kinds_agree += 1;
        } else {
            println!("  differs: {file}: {expected} read as {:?}", p.kind);
        }
        if expected == "delay" && p.bounces.iter().any(|b| b.suppress) {
            suppressed_on_a_delay.push(file.to_string());
        }
        for r in l["recipients"].as_array().unwrap() {
            asserted += 1;
            let rcpt = r["recipient"].as_str().unwrap();
            // The reader gives addresses in lower case (the engine matches them so).
            let Some(b) = p.bounces.iter().find(|b| b.recipient.eq_ignore_ascii_case(rcpt)) else {
                println!("  miss: {file}: {rcpt}");
                continue;
            };
            found += 1;
            if b.delayed == (r["action"].as_str() == Some("delayed")) {
                actions_agree += 1;
            } else {
                println!("  differs: {file}: {rcpt} {} read as delayed: {}", r["action"], b.delayed);
            }
        }
    }
    let (sisimai, sisimai_found, sisimai_same) = against_sisimai(&dir, true);
    println!(
        "{name}: kinds agree {kinds_agree}/{judged} ({:.3}); recipients its tests assert found \
         {found}/{asserted}, action agrees {actions_agree}/{found}; read by Sisimai 4.25: recipients found \
         {sisimai_found}/{sisimai} ({:.3}), type agreement {sisimai_same}/{sisimai_found} ({:.3})",
        ratio(kinds_agree, judged),
        ratio(sisimai_found, sisimai),
        ratio(sisimai_same, sisimai_found)
    );
    assert!(suppressed_on_a_delay.is_empty(), "suppressed on a delay warning: {suppressed_on_a_delay:?}");
    assert_eq!(actions_agree, found, "a failure read as a delay or the reverse");
    OtherSource { judged, kinds_agree, asserted, found, sisimai, sisimai_found, sisimai_same }
}

/// A fifth source, scored before any rule was changed for it: the Ruby `bounce_email` gem's
/// test messages as PyPI's `bounced` ships them, with `bounced`'s own assertions
/// (`tests/corpus/bounce_email/README.md`). (`bounced`'s status is not compared: where a
/// report has a Diagnostic-Code, it takes that line's first number, often the reply code,
/// "550" for a `Status: 5.1.1`.)
///
/// Floors at this reader's figures, so that a change that loses mail it has never seen shows.
/// Scored before any rule was changed for it: kinds 44/45, recipients 23/23, Sisimai's type
/// 26/40; Google's older notices read by a reader of their own since (`inbound::family`),
/// 29/40.
#[test]
fn fifth_source() {
    let s = other_source("bounce_email");
    assert_eq!(s.found, s.asserted, "recipients");
    s.at_least(44, 29);
}

/// A sixth, scored before any rule was changed for it: node `baunsu`'s test messages
/// (`tests/corpus/baunsu/README.md`): 12 it asserts are bounces, an auto-reply and a person's
/// mail it asserts are not. As it came: kinds 14/14, Sisimai's type 11/12.
#[test]
fn sixth_source() {
    other_source("baunsu").at_least(14, 11);
}

/// What Sisimai (the established bounce parser whose 5.1 labels the shared corpus carries)
/// reads in each message of `dir`, as `scripts/label-with-sisimai.pl` wrote it with Debian's
/// Sisimai 4.25: file → [(recipient, type, reason)].
fn sisimai_labels(dir: &Path) -> BTreeMap<String, Vec<(String, String, String)>> {
    let text = std::fs::read_to_string(dir.join("sisimai-4.25.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let l: serde_json::Value = serde_json::from_str(line).unwrap();
            let bounces = l["bounces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let s = |k: &str| b[k].as_str().unwrap().to_string();
                    (s("recipient"), s("type"), s("reason"))
                })
                .collect();
            (l["file"].as_str().unwrap().to_string(), bounces)
        })
        .collect()
}

/// Of the recipients Sisimai reads in `dir`'s messages, how many this reader finds, and of
/// those, how many it gives Sisimai's type: (Sisimai's, found, same type).
fn against_sisimai(dir: &Path, show: bool) -> (usize, usize, usize) {
    let (mut theirs, mut found, mut same) = (0, 0, 0);
    for (file, bounces) in sisimai_labels(dir) {
        let p = parse(&std::fs::read(dir.join(&file)).unwrap());
        for (rcpt, kind, reason) in bounces {
            theirs += 1;
            let Some(b) = p.bounces.iter().find(|b| b.recipient == rcpt) else {
                if show {
                    println!("  missed: {file}: {rcpt} ({reason})");
                }
                continue;
            };
            found += 1;
            if format!("{:?}", b.kind) == kind {
                same += 1;
            } else if show {
                println!("  differs: {file}: {rcpt} Sisimai {kind}/{reason}, read {:?}/{:?}", b.kind, b.reason);
            }
        }
    }
    (theirs, found, same)
}

/// The goal is Sisimai's reading on mail the rules were not written against, from more
/// than one source. The two other sources' messages, labelled by Sisimai 4.25 (Debian's; the
/// shared corpus's labels are 5.1's): how often this reader finds the recipients Sisimai finds
/// and gives them Sisimai's type. The shared corpus read by the same Sisimai 4.25 against its
/// 5.1 labels says how far the two versions themselves agree (the oracle's own noise).
#[test]
fn sisimai_on_the_other_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    // The oracle's noise: Sisimai 4.25 against the 5.1 labels, where it reads the recipient.
    let labelled = sisimai_labels(&root.join("bounces"));
    let (mut both, mut agree) = (0, 0);
    for l in labels(&root.join("bounces")) {
        let theirs = &labelled[l["file"].as_str().unwrap()];
        for g in l["bounces"].as_array().unwrap() {
            if let Some((_, kind, _)) = theirs.iter().find(|(r, _, _)| g["recipient"].as_str() == Some(r.as_str())) {
                both += 1;
                agree += usize::from(g["type"].as_str() == Some(kind.as_str()));
            }
        }
    }
    println!("Sisimai 4.25 against the shared corpus's 5.1 labels: type {agree}/{both} ({:.3})", ratio(agree, both));
    for (name, floor) in [("flufl", 0.86), ("bounceparser", 0.95)] {
        let (theirs, found, same) = against_sisimai(&root.join(name), true);
        println!(
            "{name} read by Sisimai 4.25: recipients found {found}/{theirs} ({:.3}), type agreement {same}/{found} ({:.3})",
            ratio(found, theirs),
            ratio(same, found)
        );
        // Floors at this reader's figures, so that a change that reads unseen mail less as
        // Sisimai does shows.
        assert!(ratio(same, found) >= floor, "{name}: type agreement {:.3}", ratio(same, found));
        assert!(ratio(found, theirs) >= 0.98, "{name}: recall {:.3}", ratio(found, theirs));
    }
}
