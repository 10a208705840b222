//! Whole SMTP sessions from arbitrary bytes, through the inbound listener's state machine over
//! an in-memory stream: never a panic; every reply line is `DDD ` or `DDD-` followed by text
//! and CRLF; the session always ends. The command reader alone is checked too: an address
//! it takes has no white space, control characters or angle brackets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_core::Engine;
use mailroom_core::memory::MemoryStorage;
use mailroom_inbound::{Command, Inbound, InboundConfig, parse_command};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Command::Rcpt(a) | Command::Mail { from: a, .. } = parse_command(line) {
            assert!(!a.chars().any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>'));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    rt.block_on(async {
        let engine = Engine::builder(Arc::new(MemoryStorage::new())).bounce_domain("bounces.test").build();
        let config = InboundConfig {
            max_message_size: 4096,
            command_timeout: std::time::Duration::from_millis(200),
            data_timeout: std::time::Duration::from_millis(200),
            // Every input arrives in one write, so with the synchronization check on most
            // sessions end at their first command: half the inputs (by their first byte) run
            // with it off, to reach the states behind it.
            enforce_sync: data.first().is_some_and(|b| b & 1 == 1),
            ..InboundConfig::default()
        };
        let inbound = Inbound::new(engine, config);
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let peer = "127.0.0.1:2525".parse().expect("an address");
        let run = tokio::spawn(async move { inbound.session(server, peer).await });
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        run.await.expect("the session ends without a panic");
        for line in out.split_inclusive(|b| *b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "{line:?}");
            assert!(line.len() >= 6 && line[..3].iter().all(u8::is_ascii_digit), "{line:?}");
            assert!(line[3] == b' ' || line[3] == b'-', "{line:?}");
        }
    });
});
