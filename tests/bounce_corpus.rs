//! Scores the bounce reader on the labelled corpus in `tests/corpus/bounces` (real messages
//! from about 90 MTAs; see its README for the source and licence): recipient precision and
//! recall, type accuracy, type+subtype accuracy, status accuracy and complaint detection.
//! `cargo test --release --test bounce_corpus -- --nocapture` prints the figures and every miss.
#![allow(clippy::unwrap_used, clippy::panic)]

use mailroom::core::inbound::{MessageKind, parse};
use std::collections::HashMap;
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
    misses: Vec<String>,
}

fn score(dir: &Path) -> Score {
    let mut s = Score::default();
    let labels = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    for line in labels.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = l["file"].as_str().unwrap();
        let raw = std::fs::read(dir.join(file)).unwrap();
        let p = parse(&raw);
        let gold_complaint = l["complaint"].as_bool().unwrap_or(false);
        s.complaints += usize::from(gold_complaint);
        s.complaints_found += usize::from(gold_complaint && p.complaint);
        s.false_complaints += usize::from(!gold_complaint && p.complaint);
        if gold_complaint != p.complaint {
            s.misses.push(format!("{file}: complaint {gold_complaint} vs {}", p.complaint));
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces");
    let s = score(&dir);
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
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
    println!("  complaints {}/{} found, {} false", s.complaints_found, s.complaints, s.false_complaints);
    for m in &s.misses {
        println!("  miss: {m}");
    }
    // Floors that keep what works working. The goals (type ≥ 0.97, recall ≥ 0.99) are not
    // met yet; the README gives the current figures and what the misses are.
    assert!(recall >= 0.985, "recipient recall fell to {recall:.3}");
    assert!(precision >= 0.98, "recipient precision fell to {precision:.3}");
    assert!(type_acc >= 0.90, "type accuracy fell to {type_acc:.3}");
    assert_eq!(s.complaints_found, s.complaints, "every complaint is detected");
}
