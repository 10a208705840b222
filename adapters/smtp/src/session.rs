//! One SMTP session: connect, greet, EHLO, STARTTLS, AUTH, and transactions on it, each step
//! under its own deadline.
//!
//! Invariant: an error says whether the end-of-data dot may have reached the server. Only
//! after it may a message have been accepted, so only then is a failure ambiguous; before it,
//! nothing was handed over and the message may be tried again.

use crate::config::{Security, Timeouts};
use mail_send::SmtpClient;
use mailroom_core::bounce::{EnhancedStatus, SmtpReply};
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, EXT_PIPELINING, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A byte stream a session runs on: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a step failed.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The server answered with a reply that ends the step (kept exactly).
    Reply(SmtpReply),
    /// No usable answer: the connection failed, timed out, or spoke nonsense. `after_dot`:
    /// the end of data may have reached the server.
    Lost { what: String, after_dot: bool },
}

impl StepError {
    fn lost(what: impl Into<String>) -> StepError {
        StepError::Lost { what: what.into(), after_dot: false }
    }
}

pub(crate) fn reply_of(r: &Response<String>) -> SmtpReply {
    let enhanced = (r.esc[0] != 0).then(|| EnhancedStatus {
        class: r.esc[0],
        subject: u16::from(r.esc[1]),
        detail: u16::from(r.esc[2]),
    });
    // mail-send hands the text back with the enhanced code already split off.
    SmtpReply { code: r.code, enhanced, text: r.message.trim().to_string() }
}

/// Runs `step` under `limit`; a timeout or an I/O error is a lost connection.
async fn within<T>(
    limit: Duration,
    what: &str,
    step: impl Future<Output = mail_send::Result<T>>,
) -> Result<T, StepError> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StepError::lost(format!("{what}: {e}"))),
        Err(_) => Err(StepError::lost(format!("{what}: no answer within {} s", limit.as_secs_f32()))),
    }
}

/// What a transaction got back.
pub(crate) struct Exchange {
    /// One reply per recipient, in order.
    pub rcpt: Vec<SmtpReply>,
    pub data: DataOutcome,
}

pub(crate) enum DataOutcome {
    /// No recipient was accepted: no message was sent.
    NotSent,
    /// DATA itself was refused.
    Refused(SmtpReply),
    /// The reply to the end of data.
    Final(SmtpReply),
}

/// An open, greeted session.
pub(crate) struct Session {
    client: SmtpClient<Box<dyn Io>>,
    pipelining: bool,
    /// The server offers SMTPUTF8 (RFC 6531).
    pub(crate) smtputf8: bool,
    /// Transactions completed on this session.
    pub(crate) messages: usize,
    pub(crate) last_used: Instant,
    /// The last transaction ended without DATA's final reply: RSET before the next.
    dirty: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("pipelining", &self.pipelining).field("messages", &self.messages).finish()
    }
}

/// What opening a session needs.
pub(crate) struct Open<'a> {
    pub addr: SocketAddr,
    /// The name the server's certificate must carry.
    pub tls_name: &'a str,
    pub helo: &'a str,
    pub security: Security,
    pub credentials: Option<&'a (String, String)>,
    pub timeouts: &'a Timeouts,
    pub tls: &'a TlsConnector,
}

impl Session {
    pub(crate) async fn open(o: Open<'_>) -> Result<Session, StepError> {
        let t = o.timeouts;
        let tcp = tokio::time::timeout(t.connect, TcpStream::connect(o.addr))
            .await
            .map_err(|_| StepError::lost(format!("connect to {}: no answer within {} s", o.addr, t.connect.as_secs())))?
            .map_err(|e| StepError::lost(format!("connect to {}: {e}", o.addr)))?;
        // Without TCP_NODELAY, Nagle's algorithm holds each small command until the previous
        // segment is acknowledged, and the peer delays that ACK: ~40 ms lost per message.
        tcp.set_nodelay(true).map_err(|e| StepError::lost(format!("TCP_NODELAY: {e}")))?;

        let mut tls = false;
        let mut client: SmtpClient<TcpStream> = SmtpClient { stream: tcp, timeout: t.command };
        let mut boxed: SmtpClient<Box<dyn Io>> = if o.security == Security::Implicit {
            let c = within(t.starttls, "TLS handshake", client.into_tls(o.tls, o.tls_name)).await?;
            tls = true;
            SmtpClient { stream: Box::new(c.stream), timeout: t.command }
        } else {
            greet(&mut client, t.greeting).await?;
            let ehlo = within(t.ehlo, "EHLO", client.ehlo(o.helo)).await?;
            let starttls = ehlo.has_capability(EXT_START_TLS);
            match o.security {
                Security::StartTlsRequired if !starttls => {
                    return Err(StepError::lost("the server does not offer STARTTLS, which is required"));
                }
                Security::Opportunistic | Security::StartTlsRequired if starttls => {
                    let c = within(t.starttls, "STARTTLS", client.start_tls(o.tls, o.tls_name)).await?;
                    tls = true;
                    SmtpClient { stream: Box::new(c.stream), timeout: t.command }
                }
                _ => SmtpClient { stream: Box::new(client.stream), timeout: t.command },
            }
        };
        if o.security == Security::Implicit {
            greet(&mut boxed, t.greeting).await?;
        }
        // EHLO again after TLS (RFC 3207 §4.2: the earlier answer is void); once otherwise.
        let ehlo: EhloResponse<String> = within(t.ehlo, "EHLO", boxed.ehlo(o.helo)).await?;
        if let Some((user, pass)) = o.credentials {
            let offered = ehlo.auth_mechanisms & (AUTH_PLAIN | AUTH_LOGIN);
            if offered == 0 {
                return Err(StepError::lost("the server offers neither AUTH PLAIN nor AUTH LOGIN"));
            }
            auth(&mut boxed, offered, user, pass, t.command).await?;
        }
        tracing::debug!(addr = %o.addr, tls, pipelining = ehlo.has_capability(EXT_PIPELINING), "SMTP session opened");
        Ok(Session {
            client: boxed,
            pipelining: ehlo.has_capability(EXT_PIPELINING),
            smtputf8: ehlo.has_capability(EXT_SMTP_UTF8),
            messages: 0,
            last_used: Instant::now(),
            dirty: false,
        })
    }

    /// NOOP: is the session still alive?
    pub(crate) async fn healthy(&mut self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.client.cmd(b"NOOP\r\n")).await, Ok(Ok(r)) if r.code / 100 == 2)
    }

    /// One transaction: MAIL FROM, every RCPT TO and DATA — pipelined in one write when
    /// the server offers PIPELINING (RFC 2920 lets DATA end the group), one by one otherwise
    /// — then the message and the end-of-data dot in one write, and the final reply.
    /// `Err(Reply)` is MAIL FROM's refusal.
    ///
    /// `utf8`: the envelope or the headers hold UTF-8 (RFC 6531): MAIL FROM declares
    /// `SMTPUTF8` (the caller has checked that the server offers it).
    pub(crate) async fn transaction(
        &mut self,
        from: &str,
        to: &[String],
        message: &[u8],
        t: &Timeouts,
        utf8: bool,
    ) -> Result<Exchange, StepError> {
        let mail_from =
            if utf8 { format!("MAIL FROM:<{from}> SMTPUTF8\r\n") } else { format!("MAIL FROM:<{from}>\r\n") };
        // A transaction that ended with its final reply leaves the session reset (RFC 5321
        // §4.1.1.4); only one that stopped half way needs an RSET.
        let reset = self.dirty;
        self.dirty = true;
        let mut replies: Vec<Response<String>>;
        if self.pipelining {
            // A pipelined RSET costs no round trip.
            let mut group = String::with_capacity(64 + 40 * to.len());
            if reset {
                group.push_str("RSET\r\n");
            }
            group.push_str(&mail_from);
            for r in to {
                group.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            group.push_str("DATA\r\n");
            let n = to.len() + 2 + usize::from(reset);
            let stream = &mut self.client;
            replies = within(t.command, "MAIL/RCPT/DATA", async move {
                stream.stream.write_all(group.as_bytes()).await?;
                stream.stream.flush().await?;
                stream.read_many(n).await
            })
            .await?;
            if reset && replies.first().is_none_or(|r| r.code / 100 != 2) {
                return Err(StepError::lost("RSET was refused"));
            }
            if reset {
                replies.remove(0);
            }
        } else {
            replies = Vec::with_capacity(to.len() + 2);
            if reset {
                let r = within(t.command, "RSET", self.client.cmd(b"RSET\r\n")).await?;
                if r.code / 100 != 2 {
                    return Err(StepError::lost("RSET was refused"));
                }
            }
            let mail = within(t.command, "MAIL FROM", self.client.cmd(mail_from)).await?;
            let refused = mail.code / 100 != 2;
            replies.push(mail);
            if !refused {
                let mut any = false;
                for r in to {
                    let reply = within(t.command, "RCPT TO", self.client.cmd(format!("RCPT TO:<{r}>\r\n"))).await?;
                    any |= reply.code / 100 == 2;
                    replies.push(reply);
                }
                // Without pipelining, DATA is only worth sending for someone.
                if any {
                    replies.push(within(t.command, "DATA", self.client.cmd(b"DATA\r\n")).await?);
                }
            }
        }
        let mut it = replies.into_iter();
        let mail = it.next().ok_or_else(|| StepError::lost("no reply to MAIL FROM"))?;
        if mail.code / 100 != 2 {
            return Err(StepError::Reply(reply_of(&mail)));
        }
        let rcpt: Vec<SmtpReply> = it.by_ref().take(to.len()).map(|r| reply_of(&r)).collect();
        if rcpt.len() != to.len() {
            return Err(StepError::lost("fewer RCPT replies than recipients"));
        }
        let accepted = rcpt.iter().any(|r| r.code / 100 == 2);
        let data = match it.next() {
            None => return Ok(Exchange { rcpt, data: DataOutcome::NotSent }),
            Some(go) if go.code != 354 => {
                // Refused DATA (every recipient refused, or the server will not take it now).
                let outcome = if accepted { DataOutcome::Refused(reply_of(&go)) } else { DataOutcome::NotSent };
                return Ok(Exchange { rcpt, data: outcome });
            }
            Some(_) if !accepted => {
                // A server that opened DATA for no recipient: end it empty, hand nothing over.
                let _ = within(t.command, "empty DATA", self.client.cmd(b".\r\n")).await?;
                return Ok(Exchange { rcpt, data: DataOutcome::NotSent });
            }
            Some(_) => self.data(message, t).await?,
        };
        Ok(Exchange { rcpt, data: DataOutcome::Final(data) })
    }

    /// The message and the end-of-data dot, then its reply.
    async fn data(&mut self, message: &[u8], t: &Timeouts) -> Result<SmtpReply, StepError> {
        // Message and terminator go out in one write. If that write fails, its last bytes —
        // the terminator's final LF — never reached the socket, so the server cannot have
        // accepted the message: nothing was handed over. Once it succeeded, a failure to
        // flush, a lost connection or a late reply is ambiguous.
        let mut out = stuffed(message);
        out.extend_from_slice(if message.ends_with(b"\r\n") { b".\r\n" } else { b"\r\n.\r\n" });
        match tokio::time::timeout(t.data_body, self.client.stream.write_all(&out)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StepError::lost(format!("writing the message: {e}"))),
            Err(_) => return Err(StepError::lost("writing the message: timed out")),
        }
        let lost_after_dot = |what: String| StepError::Lost { what, after_dot: true };
        match tokio::time::timeout(t.command, self.client.stream.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(lost_after_dot(format!("writing the end of data: {e}"))),
            Err(_) => return Err(lost_after_dot("writing the end of data: timed out".into())),
        }
        let reply = match tokio::time::timeout(t.final_reply, self.client.read()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(lost_after_dot(format!("the reply to the end of data: {e}"))),
            Err(_) => {
                return Err(lost_after_dot(format!(
                    "no reply to the end of data within {} s",
                    t.final_reply.as_secs()
                )));
            }
        };
        self.dirty = false;
        self.messages += 1;
        self.last_used = Instant::now();
        Ok(reply_of(&reply))
    }

    /// The transaction ended without DATA (every recipient refused): the next one resets.
    pub(crate) fn aborted(&mut self) {
        self.dirty = true;
        self.last_used = Instant::now();
    }

    /// QUIT, politely and briefly; the connection closes either way.
    pub(crate) async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.cmd(b"QUIT\r\n")).await;
    }
}

/// AUTH PLAIN (one round trip) or LOGIN, whichever the server offers, PLAIN first.
async fn auth(
    c: &mut SmtpClient<Box<dyn Io>>,
    offered: u64,
    user: &str,
    pass: &str,
    limit: Duration,
) -> Result<(), StepError> {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut reply = if offered & AUTH_PLAIN != 0 {
        let token = b64(format!("\0{user}\0{pass}").as_bytes());
        within(limit, "AUTH PLAIN", c.cmd(format!("AUTH PLAIN {token}\r\n"))).await?
    } else {
        let r = within(limit, "AUTH LOGIN", c.cmd(b"AUTH LOGIN\r\n")).await?;
        if r.code != 334 {
            return Err(StepError::Reply(reply_of(&r)));
        }
        let r = within(limit, "AUTH LOGIN", c.cmd(format!("{}\r\n", b64(user.as_bytes())))).await?;
        if r.code != 334 {
            return Err(StepError::Reply(reply_of(&r)));
        }
        within(limit, "AUTH LOGIN", c.cmd(format!("{}\r\n", b64(pass.as_bytes())))).await?
    };
    if reply.code == 235 {
        return Ok(());
    }
    reply.message = reply.message.trim().to_string();
    Err(StepError::Reply(reply_of(&reply)))
}

async fn greet<T: AsyncRead + AsyncWrite + Unpin>(c: &mut SmtpClient<T>, limit: Duration) -> Result<(), StepError> {
    let r = within(limit, "greeting", c.read()).await?;
    if r.code / 100 != 2 {
        return Err(StepError::Reply(reply_of(&r)));
    }
    Ok(())
}

/// `message` with dot-stuffing (RFC 5321 §4.5.2): a line that starts with a dot gets
/// another. Bare CR or LF are left as they are (the renderer writes CRLF).
fn stuffed(message: &[u8]) -> Vec<u8> {
    // Room for the stuffing and the terminator; copied in runs between the lines that start
    // with a dot (rare), found by a vectorised search for line ends.
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut copied = 0;
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', message).map(|i| i + 1));
    for start in starts {
        if message.get(start) == Some(&b'.') {
            out.extend_from_slice(&message[copied..start]);
            out.push(b'.');
            copied = start;
        }
    }
    out.extend_from_slice(&message[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(stuffed(b".first\r\nmid.dle\r\n..two\r\n.\r\nend"), b"..first\r\nmid.dle\r\n...two\r\n..\r\nend");
        assert_eq!(stuffed(b""), b"");
        assert_eq!(stuffed(b"."), b"..");
        assert_eq!(stuffed(b"a\n"), b"a\n");
        assert_eq!(stuffed(b"a\n."), b"a\n..");
    }

    proptest::proptest! {
        /// Every line that starts with a dot gets one more; nothing else changes.
        #[test]
        fn dot_stuffing_doubles_leading_dots_only(message in proptest::collection::vec(proptest::sample::select(vec![b'.', b'\r', b'\n', b'a']), 0..200)) {
            let mut expected = Vec::new();
            let mut line_start = true;
            for &b in &message {
                if line_start && b == b'.' {
                    expected.push(b'.');
                }
                expected.push(b);
                line_start = b == b'\n';
            }
            proptest::prop_assert_eq!(stuffed(&message), expected);
        }
    }

    #[test]
    fn replies_keep_code_enhanced_status_and_text() {
        let r = Response { code: 550, esc: [5, 1, 1], message: "User unknown ".to_string() };
        let s = reply_of(&r);
        assert_eq!(
            (s.code, s.enhanced.map(|e| e.to_string()), s.text.as_str()),
            (550, Some("5.1.1".into()), "User unknown")
        );
        let r = Response { code: 250, esc: [0, 0, 0], message: "ok".to_string() };
        assert_eq!(reply_of(&r).enhanced, None);
    }
}
