//! The `mailroom` binary's commands, run as real processes on a real redb file.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailroom"))
}

/// `args` with `--db db` where the command takes it: after the (sub)command's words, as clap
/// wants options of subcommands.
fn with_db(db: &Path, args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if !matches!(args.first(), Some(&"when" | &"classify" | &"config")) {
        out.push("--db".into());
        out.push(db.display().to_string());
    }
    out
}

/// The `(email, origin)` of each suppression entry in `list`, as the command line prints them.
fn entries(list: &Value) -> Vec<(&str, &str)> {
    list.as_array().unwrap().iter().map(|e| (e["email"].as_str().unwrap(), e["origin"].as_str().unwrap())).collect()
}

struct Out {
    ok: bool,
    json: Value,
}

fn run(db: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(binary());
    cmd.args(with_db(db, args)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
    Out { ok: out.status.success(), json }
}

fn email(to: &str) -> String {
    format!(r#"{{"from":"Acme <hi@acme.test>","to":"{to}","subject":"Hi","html":"<p>hi</p>"}}"#)
}

#[test]
fn send_work_get_for_every_test_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let cases = [
        ("delivered@resend.dev", "delivered"),
        ("bounced+x@resend.dev", "bounced"),
        ("complained@resend.dev", "complained"),
        ("suppressed@resend.dev", "suppressed"),
        ("person@example.com", "delivered"),
    ];
    let mut ids = vec![];
    for (to, _) in cases {
        let out = run(&db, &["send"], Some(&email(to)));
        assert!(out.ok, "{}", out.json);
        ids.push(out.json["id"].as_str().unwrap().to_string());
    }
    let before = run(&db, &["get", &ids[0]], None);
    assert_eq!(before.json["last_event"], "queued");
    let work = run(&db, &["work", "--until-idle"], None);
    assert!(work.ok, "{}", work.json);
    assert_eq!(work.json["processed"], 5);
    for ((_, want), id) in cases.iter().zip(&ids) {
        let got = run(&db, &["get", id], None);
        assert_eq!(got.json["last_event"], *want, "{}", got.json);
        assert_eq!(got.json["object"], "email");
    }
    // The ordinary recipient's message is in the outbox directory.
    let outbox = dir.path().join("m.redb.outbox").join(format!("{}.eml", ids[4]));
    let eml = std::fs::read_to_string(outbox).unwrap();
    assert!(eml.contains("Subject: Hi"));
    let sup = run(&db, &["suppressions", "list"], None);
    assert_eq!(
        entries(&sup.json["data"]),
        [("bounced+x@resend.dev", "bounce"), ("complained@resend.dev", "complaint")]
    );
}

/// `suppressions list` answers one page, as `GET /suppressions` does: a list of any length is
/// never read whole into one answer.
#[test]
fn the_suppression_list_is_printed_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    for a in ["d@example.com", "a@example.com", "c@example.com", "b@example.com"] {
        assert!(run(&db, &["suppressions", "add", a], None).ok);
    }
    let emails = |out: &Out| -> Vec<String> {
        out.json["data"].as_array().unwrap().iter().map(|e| e["email"].as_str().unwrap().to_string()).collect()
    };
    let first = run(&db, &["suppressions", "list", "--limit", "2"], None);
    assert!(first.ok, "{}", first.json);
    assert_eq!(emails(&first), ["a@example.com", "b@example.com"]);
    assert_eq!(first.json["has_more"], true);
    let cursor = first.json["data"][1]["id"].as_str().unwrap().to_string();
    let rest = run(&db, &["suppressions", "list", "--limit", "2", "--after", &cursor], None);
    assert_eq!(emails(&rest), ["c@example.com", "d@example.com"]);
    assert_eq!(rest.json["has_more"], false);
    let back = run(&db, &["suppressions", "list", "--before", rest.json["data"][0]["id"].as_str().unwrap()], None);
    assert_eq!(emails(&back), ["a@example.com", "b@example.com"]);
    // The default page is the API's (20); every entry here is a manual one.
    assert_eq!(emails(&run(&db, &["suppressions", "list", "--origin", "manual"], None)).len(), 4);
    assert!(emails(&run(&db, &["suppressions", "list", "--origin", "bounce"], None)).is_empty());
    // Refusals name their field.
    let big = run(&db, &["suppressions", "list", "--limit", "101"], None);
    assert!(!big.ok && big.json["message"].as_str().unwrap().contains("`limit`"), "{}", big.json);
    let unknown = run(&db, &["suppressions", "list", "--after", "00000000-0000-0000-0000-000000000000"], None);
    assert!(!unknown.ok && unknown.json["message"].as_str().unwrap().contains("`after`"), "{}", unknown.json);
}

#[test]
fn batches_strict_and_permissive_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let bad = format!("[{},{},{}]", email("a@example.com"), email("nope"), email("c@example.com"));
    // The database exists first (a refusal on a new path leaves none), so the list below shows
    // that the strict refusal kept none of the batch's emails.
    assert!(run(&db, &["keys", "create", "cli"], None).ok);
    let strict = run(&db, &["batch"], Some(&bad));
    assert!(!strict.ok);
    assert_eq!(strict.json["statusCode"], 422);
    assert_eq!(strict.json["name"], "validation_error");
    assert!(strict.json["message"].as_str().unwrap().contains("emails[1].to"));
    assert_eq!(run(&db, &["list"], None).json["data"].as_array().unwrap().len(), 0);

    let permissive = run(&db, &["batch", "--permissive"], Some(&bad));
    assert!(permissive.ok);
    assert_eq!(permissive.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(permissive.json["errors"][0]["index"], 1);

    let good = format!("[{},{}]", email("a@example.com"), email("b@example.com"));
    let first = run(&db, &["batch", "--idempotency-key", "batch-1"], Some(&good));
    let replay = run(&db, &["batch", "--idempotency-key", "batch-1"], Some(&good));
    assert_eq!(first.json, replay.json);
    assert!(first.json.get("errors").is_none(), "strict answers carry no errors field");
    let conflict = run(&db, &["batch", "--idempotency-key", "batch-1"], Some(&format!("[{}]", email("z@example.com"))));
    assert_eq!(conflict.json["statusCode"], 409);
    assert_eq!(conflict.json["name"], "invalid_idempotent_request");
    let long = "k".repeat(257);
    let bad_key = run(&db, &["send", "--idempotency-key", &long], Some(&email("a@example.com")));
    assert_eq!(bad_key.json["name"], "invalid_idempotency_key");
    assert_eq!(bad_key.json["statusCode"], 400);
    assert_eq!(run(&db, &["list", "--limit", "100"], None).json["data"].as_array().unwrap().len(), 4);
}

/// A command that reads what a database holds, pointed at a file that does not exist, says
/// so and leaves no file behind; a send creates the database.
#[test]
fn reading_a_database_that_does_not_exist_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.redb");
    for args in [
        &["list"][..],
        &["list", "--after", "xyz"],
        &["get", "01900000-0000-7000-8000-000000000000"],
        &["suppressions", "list"],
        &["events", "tail"],
    ] {
        let out = run(&db, args, None);
        assert!(!out.ok, "{args:?}");
        let message = out.json["message"].as_str().unwrap();
        assert!(
            message.starts_with("there is no database at ") && message.contains("typo.redb"),
            "{args:?}: {message}"
        );
        assert!(!db.exists(), "{args:?} created the file");
    }
    // A command that adds, refused for its input, leaves no file either.
    let refused =
        run(&db, &["send"], Some(r#"{"from":"a@example.com","to":"not an address","subject":"s","text":"t"}"#));
    assert!(!refused.ok && refused.json["message"].as_str().unwrap().contains("`to`"), "{}", refused.json);
    assert!(!db.exists(), "a refused send created the file");
    let refused = run(&db, &["batch"], Some("[{}]"));
    assert!(!refused.ok, "{}", refused.json);
    assert!(!db.exists(), "a refused batch created the file");
    assert!(run(&db, &["send"], Some(&email("a@example.com"))).ok);
    assert!(db.exists());
    // On a database that exists, a refusal leaves it where it is.
    assert!(!run(&db, &["send"], Some("{}")).ok);
    assert!(db.exists());
    assert!(run(&db, &["list"], None).ok);
}

#[test]
fn list_pages_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let items: Vec<String> = (0..5).map(|i| email(&format!("u{i}@example.com"))).collect();
    let ids: Vec<String> = run(&db, &["batch"], Some(&format!("[{}]", items.join(",")))).json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let page = run(&db, &["list", "--limit", "2"], None).json;
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    let got: Vec<&str> = page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()], "newest first");
    assert!(page["data"][0].get("html").is_none(), "list items carry no html");
    let next = run(&db, &["list", "--limit", "2", "--after", &ids[3]], None).json;
    let got: Vec<&str> = next["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let back = run(&db, &["list", "--before", &ids[1]], None).json;
    assert_eq!(back["data"].as_array().unwrap().len(), 3);

    let bad_limit = run(&db, &["list", "--limit", "101"], None);
    assert_eq!((bad_limit.ok, bad_limit.json["statusCode"].as_u64()), (false, Some(422)));
    let bad_id = run(&db, &["get", "xyz"], None);
    assert_eq!(bad_id.json["name"], "invalid_parameter");
    let bad_cursor = run(&db, &["list", "--after", "xyz"], None);
    assert_eq!(bad_cursor.json["message"], "Invalid `after` field: must be a valid UUID.", "{}", bad_cursor.json);
    let unknown = run(&db, &["get", "01900000-0000-7000-8000-000000000000"], None);
    assert_eq!(unknown.json, serde_json::json!({"statusCode": 404, "name": "not_found", "message": "Email not found"}));
    let garbage = run(&db, &["send"], Some("{not json"));
    assert_eq!((garbage.ok, garbage.json["statusCode"].as_u64()), (false, Some(422)));
    let wrong_type = run(&db, &["send"], Some(r#"{"from":"a@b.test","to":5}"#));
    assert!(wrong_type.json["message"].as_str().unwrap().contains("`to`"), "{}", wrong_type.json);
}

#[test]
fn metrics_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    for to in ["delivered@resend.dev", "delivered+2@resend.dev", "bounced@resend.dev", "suppressed@resend.dev"] {
        assert!(run(&db, &["send"], Some(&email(to))).ok);
    }
    assert!(run(&db, &["work", "--until-idle"], None).ok);
    let m = run(&db, &["metrics", "--metrics", "received,sent,bounced,suppressed,bounce_rate"], None);
    assert!(m.ok, "{}", m.json);
    assert_eq!(m.json["object"], "metrics");
    assert_eq!(
        m.json["totals"],
        serde_json::json!({"received": 4, "sent": 3, "bounced": 1, "suppressed": 1, "bounce_rate": 33.33})
    );
    // By the hour in a zone half an hour off UTC: the rows' periods say so.
    let hours = run(
        &db,
        &[
            "metrics",
            "--by",
            "period",
            "--granularity",
            "hourly",
            "--timezone",
            "Asia/Kolkata",
            "--metrics",
            "received",
        ],
        None,
    );
    let rows = hours.json["data"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["period"].as_str().unwrap().ends_with(":00:00+05:30")), "{}", hours.json);
    assert_eq!(rows.iter().map(|r| r["received"].as_u64().unwrap()).sum::<u64>(), 4);
    let by_email = run(&db, &["metrics", "--by", "email", "--metrics", "bounced"], None);
    assert_eq!(by_email.json["data"].as_array().unwrap().len(), 4);
    // Refusals name the parameter, as the API's do.
    let both = run(&db, &["metrics", "--by", "domain", "--by", "email"], None);
    assert!(!both.ok && both.json["message"].as_str().unwrap().contains("dimensions"), "{}", both.json);
    let bad = run(&db, &["metrics", "--start", "last tuesday"], None);
    assert!(!bad.ok && bad.json["message"].as_str().unwrap().contains("start_date"), "{}", bad.json);
}

#[test]
fn usage_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let none = run(&db, &["usage"], None);
    assert!(!none.ok && none.json["message"].as_str().unwrap().contains("no database"), "{}", none.json);
    for to in ["delivered@resend.dev", "bounced@resend.dev"] {
        assert!(run(&db, &["send"], Some(&email(to))).ok);
    }
    let u = run(&db, &["usage"], None);
    assert!(u.ok, "{}", u.json);
    assert_eq!(u.json["object"], "usage");
    assert_eq!(
        (&u.json["emails"]["daily"]["sent"], &u.json["emails"]["monthly"]["used"]),
        (&2.into(), &2.into()),
        "{}",
        u.json
    );
    // The default rate limits: 10 requests a second per key and per account.
    assert_eq!(u.json["rate_limit"], serde_json::json!({"limit": 10, "duration": "1000ms"}));
}

#[test]
fn suppression_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let added = run(&db, &["suppressions", "add", "Person@Example.com", "--reason", "complained"], None);
    assert_eq!(added.json["email"], "person@example.com");
    assert_eq!(added.json["origin"], "complaint");
    let listed = run(&db, &["suppressions", "list"], None);
    assert_eq!(listed.json["data"][0]["id"], added.json["id"], "{}", listed.json);
    let id = run(&db, &["send"], Some(&email("person@example.com"))).json["id"].as_str().unwrap().to_string();
    run(&db, &["work", "--until-idle"], None);
    assert_eq!(run(&db, &["get", &id], None).json["last_event"], "suppressed");
    let removed = run(&db, &["suppressions", "remove", "Person@example.com"], None);
    assert_eq!(
        (removed.json["id"].as_str(), removed.json["deleted"].as_bool()),
        (added.json["id"].as_str(), Some(true))
    );
    let again = run(&db, &["suppressions", "remove", "person@example.com"], None);
    assert_eq!((again.ok, again.json["statusCode"].as_u64()), (false, Some(404)));
    let bad = run(&db, &["suppressions", "add", "not an address"], None);
    assert_eq!(bad.json["statusCode"], 422);
}

#[test]
fn demo_shows_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.redb");
    let out = run(&db, &["demo"], None);
    assert!(out.ok);
    let last: Vec<&str> =
        out.json["emails"].as_array().unwrap().iter().map(|e| e["last_event"].as_str().unwrap()).collect();
    assert_eq!(last, ["delivered", "bounced", "complained", "suppressed"]);
    // The list the bounce and the complaint made, as `suppressions list` shows entries.
    assert_eq!(
        entries(&out.json["suppressions"]),
        [("bounced+demo@resend.dev", "bounce"), ("complained+demo@resend.dev", "complaint")]
    );
}

#[test]
fn prune_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let id = run(&db, &["send"], Some(&email("delivered@resend.dev"))).json["id"].as_str().unwrap().to_string();
    let pending = run(&db, &["send"], Some(&email("later@example.com")));
    assert!(pending.ok);
    assert_eq!(run(&db, &["prune", "--older-than-days", "0"], None).json["pruned"], 0, "nothing finished yet");
    run(&db, &["work", "--until-idle"], None);
    assert_eq!(run(&db, &["prune", "--older-than-days", "30"], None).json["pruned"], 0, "too recent");
    assert_eq!(run(&db, &["prune", "--older-than-days", "0"], None).json["pruned"], 2);
    let got = run(&db, &["get", &id], None).json;
    assert_eq!((got["html"].is_null(), got["last_event"].as_str()), (true, Some("delivered")));
    let compact = run(&db, &["compact"], None);
    assert!(compact.ok && compact.json["bytes_after"].as_u64().unwrap() > 0, "{}", compact.json);
}

fn run_raw(db: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).args(with_db(db, args)).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn when_reschedule_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let (ok, out) = run_raw(&db, &["when", "Friday at 3pm ET", "--now", "2026-08-05T11:52:01Z"]);
    assert_eq!((ok, out.as_str()), (true, "2026-08-07T19:00:00.000Z"));
    let (ok, out) = run_raw(&db, &["when", "tomorrow", "at", "9am", "--now", "2026-03-07T12:00:00Z"]);
    assert_eq!((ok, out.as_str()), (true, "2026-03-08T09:00:00.000Z"), "several words make one phrase");
    let bad = run(&db, &["when", "tomorrow at 9am please"], None);
    assert!(!bad.ok);
    assert!(bad.json["message"].as_str().unwrap().contains("tomorrow at 9am please"));

    let scheduled =
        r#"{"from":"a@acme.test","to":"delivered@resend.dev","subject":"s","text":"t","scheduled_at":"in 1 hour"}"#;
    let id = run(&db, &["send"], Some(scheduled)).json["id"].as_str().unwrap().to_string();
    let got = run(&db, &["get", &id], None).json;
    assert_eq!(got["last_event"], "scheduled");
    let moved = run(&db, &["reschedule", &id, "in", "2", "hours"], None);
    assert_eq!(moved.json, serde_json::json!({"object": "email", "id": id}));
    let canceled = run(&db, &["cancel", &id], None);
    assert!(canceled.ok);
    assert_eq!(run(&db, &["get", &id], None).json["last_event"], "canceled");
    let again = run(&db, &["reschedule", &id, "in 3 hours"], None);
    assert_eq!((again.ok, again.json["statusCode"].as_u64()), (false, Some(422)));
    let twice = run(&db, &["cancel", &id], None);
    assert!(twice.json["message"].as_str().unwrap().contains("canceled"));
}

#[test]
fn classify_files_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces");
    let qmail = corpus.join("bsd/lhost-qmail-01.eml");
    let out = run(&db, &["classify", qmail.to_str().unwrap()], None);
    assert!(out.ok);
    let b = &out.json["bounces"][0];
    assert_eq!((b["recipient"].as_str(), b["type"].as_str()), (Some("kijitora@example.ne.jp"), Some("Permanent")));
    assert_eq!(out.json["complaint"], false);
    assert_eq!(
        (out.json["kind"].as_str(), b["delayed"].as_bool(), b["suppress"].as_bool()),
        (Some("bounce"), Some(false), Some(true))
    );
    // A delay notice lists its recipient, as still being tried: the kind and the flag say so.
    let delay = dir.path().join("delay.eml");
    std::fs::write(
        &delay,
        "From: MAILER-DAEMON@mx.example.com\nTo: sender@acme.test\nSubject: Delivery Status Notification (Delay)\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\n\
--b1\nContent-Type: text/plain\n\nThis is a warning only. Your message has not yet been delivered.\n\n\
--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n\
Final-Recipient: rfc822; carol@example.com\nOriginal-Recipient: rfc822; info@acme.example\n\
Action: delayed\nStatus: 4.2.2\nDiagnostic-Code: smtp; 452 4.2.2 Mailbox full\n\n--b1--\n",
    )
    .unwrap();
    let out = run(&db, &["classify", delay.to_str().unwrap()], None);
    let b = &out.json["bounces"][0];
    assert_eq!(out.json["kind"].as_str(), Some("delayed"), "{}", out.json);
    assert_eq!(
        (b["recipient"].as_str(), b["delayed"].as_bool(), b["suppress"].as_bool()),
        (Some("carol@example.com"), Some(true), Some(false))
    );
    // The address as sent, which an alias turned into carol's.
    assert_eq!(b["original_recipient"].as_str(), Some("info@acme.example"), "{}", out.json);
    let arf = corpus.join("bsd/arf-01.eml");
    let input = format!("{}\n{}\n", arf.display(), qmail.display());
    let mut child = Command::new(binary())
        .args(["classify", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let text = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["file"], arf.display().to_string());
    assert_eq!((lines[0]["complaint"].as_bool(), lines[0]["bounces"].as_array().map(Vec::len)), (Some(true), Some(0)));
    assert_eq!(
        (lines[0]["kind"].as_str(), lines[0]["complainants"][0].as_str()),
        (Some("complaint"), Some("redacted@example.net"))
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_command_without_a_panic() {
    // `mailroom classify --batch … | head -1`: the reader closes the pipe after one line.
    use std::io::{BufRead, BufReader};
    let qmail = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces/bsd/lhost-qmail-01.eml");
    let input = format!("{}\n", qmail.display()).repeat(3_000);
    let mut child = Command::new(binary())
        .args(["classify", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("kijitora@example.ne.jp"), "{first}");
    // (The reader is dropped here: the pipe is closed with about 1.7 MB still to write.)
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn ingest_bounce_links_to_the_email_by_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let id = run(&db, &["send"], Some(&email("someone@example.org"))).json["id"].as_str().unwrap().to_string();
    run(&db, &["work", "--until-idle"], None);
    let mid = run(&db, &["get", &id], None).json["message_id"].as_str().unwrap().to_string();
    let bounce = format!(
        "From: MAILER-DAEMON@mx.example.org\nTo: hi@acme.test\nSubject: failure notice\n\n\
Hi. This is the qmail-send program at mx.example.org.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n<someone@example.org>:\nRemote host said: 550 5.1.1 User unknown\n\n\
--- Below this line is a copy of the message.\n\nMessage-ID: <{mid}>\nFrom: hi@acme.test\nTo: someone@example.org\n\nhi\n"
    );
    let out = run(&db, &["ingest-bounce"], Some(&bounce));
    assert!(out.ok, "{}", out.json);
    assert_eq!(out.json["email"], id);
    assert_eq!(out.json["suppressed"][0], "someone@example.org");
    assert_eq!(run(&db, &["get", &id], None).json["last_event"], "bounced");
}

#[test]
fn work_relays_through_smtp_and_keeps_test_addresses_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let sink = common::peers::smtp_sink(&[]);
    let real = run(&db, &["send"], Some(&email("person@example.com"))).json["id"].as_str().unwrap().to_string();
    let test = run(&db, &["send"], Some(&email("bounced@resend.dev"))).json["id"].as_str().unwrap().to_string();
    let url = format!("smtp://127.0.0.1:{}?tls=none", sink.port);
    let work = run(&db, &["work", "--until-idle", "--smtp", &url, "--connections", "2"], None);
    assert!(work.ok, "{}", work.json);
    assert_eq!(work.json["handed_over"], 2);
    // The relay accepted it: sent (the relay's own fate is unknown), with its reply kept.
    let got = run(&db, &["get", &real], None).json;
    assert_eq!(got["last_event"], "sent", "{got}");
    // The test address never reached the relay and bounced as simulated.
    assert_eq!(run(&db, &["get", &test], None).json["last_event"], "bounced");
    // A relay URL that breaks the rules is refused with the rule named.
    let bad = run(&db, &["work", "--until-idle", "--smtp", "smtp://127.0.0.1:99999"], None);
    assert!(!bad.ok && bad.json.to_string().contains("port"), "{}", bad.json);
    // Nothing went to the sandbox's outbox (the relay took the real recipient), so no folder.
    assert!(!dir.path().join("m.redb.outbox").exists(), "an empty outbox folder was left beside the file");
}

/// As on the hosted service, html sent alone reaches the relay with a text part derived from
/// it, and `text: ""` opts an email out; the stored emails keep what the client sent. Read
/// from the messages an SMTP server saved.
#[test]
fn html_sent_alone_reaches_the_relay_with_a_text_part_unless_opted_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    let smtpd = common::peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let html = "<h1>Welcome</h1><p>Thanks for joining &amp; welcome.</p>\
                <p><a href='https://acme.test/start?a=1&amp;b=2'>Get started</a></p>";
    let send = |subject: &str, text: Option<&str>| {
        let mut email = serde_json::json!({"from": "Acme <hi@acme.test>", "to": "person@example.com", "subject": subject, "html": html});
        if let Some(t) = text {
            email["text"] = t.into();
        }
        run(&db, &["send"], Some(&email.to_string())).json["id"].as_str().unwrap().to_string()
    };
    let derived = send("Derived", None);
    let opted_out = send("Opted out", Some(""));
    let written = send("Written", Some("Mine."));
    let url = format!("smtp://127.0.0.1:{}?tls=none", smtpd.port);
    let work = run(&db, &["work", "--until-idle", "--smtp", &url], None);
    assert!(work.ok, "{}", work.json);
    assert!(smtpd.stop().contains("accepted=3"));

    // Each saved message: its subject, and the text of its text/plain part if it has one.
    let mut parts = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&saved).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            let raw = std::fs::read(&path).unwrap();
            use mail_parser::MimeHeaders;
            let m = mail_parser::MessageParser::default().parse(&raw).unwrap();
            let plain = m
                .parts
                .iter()
                .find(|p| p.content_type().is_some_and(|c| c.ctype() == "text" && c.subtype() == Some("plain")));
            let html_parts =
                m.parts.iter().filter(|p| p.content_type().is_some_and(|c| c.subtype() == Some("html"))).count();
            assert_eq!(html_parts, 1);
            parts.insert(m.subject().unwrap().to_string(), plain.map(|p| p.text_contents().unwrap().to_string()));
        }
    }
    assert_eq!(
        parts["Derived"].as_deref(),
        Some("Welcome\r\n\r\nThanks for joining & welcome.\r\n\r\nGet started [https://acme.test/start?a=1&b=2]")
    );
    assert_eq!(parts["Opted out"], None);
    assert_eq!(parts["Written"].as_deref(), Some("Mine."));
    assert_eq!(run(&db, &["get", &derived], None).json["text"], Value::Null);
    assert_eq!(run(&db, &["get", &opted_out], None).json["text"], "");
    assert_eq!(run(&db, &["get", &written], None).json["text"], "Mine.");
}

#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use mailroom::core::insights::CHECKS;

/// Every check passes, fails and cannot tell in one of these cases, against a real dnsmasq:
/// a good draft, a bad one, a stored email whose body retention pruned (asked of a nameserver
/// that never answers), and an unfinished draft without a sender.
#[test]
fn insights_and_domains_on_real_dns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let dns = dnsmasq::start(&[
        "--txt-record=_dmarc.acme.test,v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.test".into(),
        "--txt-record=_dmarc.broken.test,v=DMARC1; p=sometimes".into(),
    ]);
    let added = run(&db, &["domains", "add", "mail.acme.test"], None);
    assert!(added.ok && added.json["click_tracking"] == false, "{}", added.json);
    run(&db, &["domains", "add", "broken.test", "--click-tracking", "--open-tracking"], None);
    assert_eq!(run(&db, &["domains", "list"], None).json["data"].as_array().map(Vec::len), Some(2));

    let draft = |name: &str, body: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, body.to_string()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let addr = dns.addr.to_string();
    let good = draft(
        "good.json",
        serde_json::json!({
            "from": "Acme <hello@mail.acme.test>", "to": "a@example.com", "subject": "Hi",
            "html": "<p>Hi <a href=\"https://www.acme.test/x?a=1&amp;b=2\">x</a></p>", "text": "Hi"
        }),
    );
    let bad = draft(
        "bad.json",
        serde_json::json!({
            "from": "no-reply@broken.test", "to": "a@example.com", "subject": "Hi",
            "html": format!("<a href=\"https://bit.ly/x\">x</a><p>{}</p>", "padding ".repeat(14_000)),
            // No text part, not even the one html sent alone gets.
            "text": ""
        }),
    );
    let unfinished = draft("unfinished.json", serde_json::json!({"html": "<p>Hi</p>", "text": "Hi"}));
    let id = run(&db, &["send"], Some(&email("delivered@resend.dev"))).json["id"].as_str().unwrap().to_string();
    assert!(run(&db, &["work", "--until-idle"], None).ok);
    assert_eq!(run(&db, &["prune", "--older-than-days", "0"], None).json["pruned"], 1);
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().unwrap().to_string();

    let cases: [(&str, Vec<&str>, [&str; 8]); 4] = [
        ("good draft", vec!["--json", &good, "--dns", &addr], ["pass"; 8]),
        ("bad draft", vec!["--json", &bad, "--dns", &addr], ["fail"; 8]),
        (
            "pruned email, silent DNS",
            vec![&id, "--dns", &silent],
            ["unknown", "unknown", "unknown", "pass", "unknown", "fail", "unknown", "unknown"],
        ),
        (
            "draft without a sender",
            vec!["--json", &unfinished, "--dns", &addr],
            ["unknown", "unknown", "pass", "unknown", "pass", "unknown", "unknown", "unknown"],
        ),
    ];
    let mut seen: Vec<(String, String)> = Vec::new();
    for (case, args, want) in &cases {
        let out = run(&db, &[&["insights"], args.as_slice()].concat(), None);
        let list = out.json.as_array().unwrap_or_else(|| panic!("{case}: {}", out.json));
        let got: Vec<(&str, &str)> =
            list.iter().map(|i| (i["check"].as_str().unwrap(), i["status"].as_str().unwrap())).collect();
        let expected: Vec<(&str, &str)> = CHECKS.iter().copied().zip(want.iter().copied()).collect();
        assert_eq!(got, expected, "{case}: {}", out.json);
        for i in list {
            assert!(i["group"] == "attention" || i["group"] == "improvement", "{i}");
            assert!(i["advice"].as_str().is_some_and(|a| a.len() > 10), "{case}: advice a person can act on: {i}");
        }
        seen.extend(got.iter().map(|(c, s)| (c.to_string(), s.to_string())));
    }
    for check in CHECKS {
        for status in ["pass", "fail", "unknown"] {
            assert!(seen.contains(&(check.to_string(), status.to_string())), "{check} is never {status}");
        }
    }
}

/// The embedding example runs: the library and the nested REST API each send, the worker
/// delivers both.
#[test]
fn the_embedding_example_runs() {
    let out = Command::new(common::example("embed")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("library: ") && text.contains("Some(\"delivered\")"), "{text}");
    assert!(text.contains("REST API: ") && text.contains("Some(\"bounced\")"), "{text}");
}

#[test]
fn webhooks_and_the_event_log_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.redb");
    let hook = run(&db, &["webhooks", "add", "http://127.0.0.1:9/in", "--events", "email.sent,email.delivered"], None);
    assert!(hook.ok, "{}", hook.json);
    assert!(hook.json["signing_secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(hook.json["events"], serde_json::json!(["email.sent", "email.delivered"]));
    let bad = run(&db, &["webhooks", "add", "gopher://x", "--events", "email.sent"], None);
    assert_eq!((bad.ok, bad.json["statusCode"].as_u64()), (false, Some(422)));
    let listed = run(&db, &["webhooks", "list"], None);
    assert_eq!(listed.json["data"][0]["id"], hook.json["id"]);
    assert!(listed.json["data"][0].get("signing_secret").is_none());

    let id = run(&db, &["send"], Some(&email("delivered@resend.dev"))).json["id"].as_str().unwrap().to_string();
    run(&db, &["work", "--until-idle"], None);
    // `events tail` prints JSON lines: queued, sent, delivered, numbered from 1.
    let tail = |after: &str| {
        let out = Command::new(binary()).args(with_db(&db, &["events", "tail", "--after", after])).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let all = tail("0");
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["email.queued", "email.sent", "email.delivered"]);
    assert!(all.iter().all(|e| e["email_id"] == id.as_str()));
    assert_eq!(all.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(tail("2").len(), 1);
}
