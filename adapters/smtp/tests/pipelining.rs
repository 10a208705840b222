//! Messages queued for one destination go out one round trip each: the end-of-data dot of
//! one is written with the next one's MAIL FROM, RCPT TO and DATA (RFC 2920 §3.1), against
//! aiosmtpd offering PIPELINING, seen through a TCP relay started here that counts the
//! client's turns (runs of client bytes with a server reply before them).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod peers;

use mailroom_core::email::EmailId;
use mailroom_core::ports::{Envelope, RecipientStatus, Transport};
use mailroom_smtp::{RelayTarget, SmtpConfig, SmtpTransport};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on its port to `target`, counting the client's turns.
async fn relay(target: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let turns = Arc::new(AtomicUsize::new(0));
    let counted = turns.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            // Who spoke last on this connection: 0 nobody, 1 the client, 2 the server.
            let last = Arc::new(AtomicUsize::new(0));
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (l, turns) = (last.clone(), counted.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    if l.swap(1, Ordering::SeqCst) != 1 {
                        turns.fetch_add(1, Ordering::SeqCst);
                    }
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    last.store(2, Ordering::SeqCst);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, turns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_take_one_round_trip_each() {
    const N: usize = 10;
    let peer = peers::smtpd(&["--pipelining"]);
    let (port, turns) = relay(peer.port).await;
    let mut cfg = SmtpConfig::relay(RelayTarget::parse(&format!("smtp://127.0.0.1:{port}?tls=none")).unwrap());
    cfg.max_connections = 1;
    let t = Arc::new(SmtpTransport::new(cfg).unwrap());
    let sends: Vec<_> = (0..N)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move {
                let envelope = Envelope::new(
                    EmailId::from_u128(i as u128 + 1),
                    "bounces@bounce.test",
                    vec![format!("r{i}@example.test"), format!("s{i}@example.test")],
                );
                let message = format!("From: a@sender.test\r\nSubject: {i}\r\n\r\n.dotted\r\nbody {i}\r\n");
                t.send_raw(&envelope, message.as_bytes()).await
            })
        })
        .collect();
    for s in sends {
        let r = s.await.unwrap().unwrap();
        for x in &r.recipients {
            assert_eq!(x.status, RecipientStatus::Relayed, "{x:?}");
            assert_eq!(x.reply.as_ref().map(|r| r.code), Some(250), "{x:?}");
        }
    }
    // EHLO, the first envelope, then one turn per message: its dot with the next envelope (the
    // last one's dot alone). Each message apart would be two turns: envelope, then content.
    let turns = turns.load(Ordering::SeqCst);
    assert!(turns <= N + 3, "{turns} client turns for {N} messages");
    drop(t);
    let printed = peer.stop();
    assert!(printed.contains(&format!("accepted={N}")) && printed.contains("resets=0"), "{printed}");
}
