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
    /// The message was written but not its end-of-data dot, as the caller asked: the session
    /// is to be handed to the next transaction with the dot owed ([`Session::owe`]).
    Held,
}

/// What a session owes an earlier transaction whose message it carries: the end-of-data dot,
/// which the session's next transaction writes in one segment with its own MAIL FROM, RCPT TO
/// and DATA (RFC 2920 §3.1: message content may open a group), and the final reply to it,
/// read in the same call as the replies to those commands.
struct Owed {
    /// Where the final reply (or why there is none) goes.
    to: tokio::sync::oneshot::Sender<Result<SmtpReply, String>>,
    /// Which hand-off this is (see [`crate::pool::Pool::take_back`]).
    token: u64,
    /// How long the final reply may take.
    limit: Duration,
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
    /// An earlier transaction's dot and final reply, when it handed the session off.
    owed: Option<Owed>,
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
            owed: None,
        })
    }

    /// NOOP: is the session still alive?
    pub(crate) async fn healthy(&mut self, limit: Duration) -> bool {
        if self.settle_owed().await.is_err() {
            return false;
        }
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
        hold_dot: &(dyn Fn(&Session) -> bool + Sync),
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
            // An earlier transaction's dot goes first, in the same segment as our commands.
            let owed = self.owed.take();
            if owed.is_some() {
                group.push_str(".\r\n");
            }
            if reset {
                group.push_str("RSET\r\n");
            }
            group.push_str(&mail_from);
            for r in to {
                group.push_str(&format!("RCPT TO:<{r}>\r\n"));
            }
            group.push_str("DATA\r\n");
            let n = to.len() + 2 + usize::from(reset) + usize::from(owed.is_some());
            let limit = owed.as_ref().map_or(t.command, |o| o.limit + t.command);
            let stream = &mut self.client;
            // One read for every reply, the dot's first: a server may answer them all in one
            // segment, and a reply read on its own would take the next ones' bytes with it.
            let read = within(limit, "MAIL/RCPT/DATA", async move {
                stream.stream.write_all(group.as_bytes()).await?;
                stream.stream.flush().await?;
                stream.read_many(n).await
            })
            .await;
            replies = match (read, owed) {
                (Ok(mut r), Some(owed)) => {
                    let _ = owed.to.send(Ok(reply_of(&r.remove(0))));
                    r
                }
                (Ok(r), None) => r,
                (Err(e), owed) => {
                    // The dot may have reached the server: the earlier message is in doubt.
                    if let Some(owed) = owed {
                        let what = match &e {
                            StepError::Lost { what, .. } => what.clone(),
                            StepError::Reply(r) => r.to_string(),
                        };
                        let _ = owed.to.send(Err(format!("after the end of data: {what}")));
                    }
                    return Err(e);
                }
            };
            if reset && replies.first().is_none_or(|r| r.code / 100 != 2) {
                return Err(StepError::lost("RSET was refused"));
            }
            if reset {
                replies.remove(0);
            }
        } else {
            // (Only a pipelining session is handed off with a dot owed; settled all the same.)
            self.settle_owed().await?;
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
            Some(_) => self.data(message, t, hold_dot).await?,
        };
        Ok(Exchange { rcpt, data })
    }

    /// The message and the end-of-data dot, then its reply.
    async fn data(
        &mut self,
        message: &[u8],
        t: &Timeouts,
        hold_dot: &(dyn Fn(&Session) -> bool + Sync),
    ) -> Result<DataOutcome, StepError> {
        // Message and terminator go out in one write. If that write fails, its last bytes —
        // the terminator's final LF — never reached the socket, so the server cannot have
        // accepted the message: nothing was handed over. Once it succeeded, a failure to
        // flush, a lost connection or a late reply is ambiguous.
        let mut out = stuffed(message);
        if !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        // Without its dot the message is not handed over yet, whatever happens to the write.
        if self.pipelining && hold_dot(self) {
            return match tokio::time::timeout(t.data_body, self.client.stream.write_all(&out)).await {
                Ok(Ok(())) => Ok(DataOutcome::Held),
                Ok(Err(e)) => Err(StepError::lost(format!("writing the message: {e}"))),
                Err(_) => Err(StepError::lost("writing the message: timed out")),
            };
        }
        out.extend_from_slice(b".\r\n");
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
        Ok(DataOutcome::Final(reply_of(&reply)))
    }

    /// Whether this session may carry a held dot to the next transaction: it will be reused
    /// (not closed for having done its share of `max_messages`) and owes nothing yet.
    pub(crate) fn can_owe(&self, max_messages: usize) -> bool {
        self.pipelining && self.owed.is_none() && self.messages + 1 < max_messages
    }

    /// After [`DataOutcome::Held`]: whoever uses the session next writes the dot and sends
    /// the final reply to `to`. The transaction is over once that reply is read (RFC 5321
    /// §4.1.1.4), so the session counts it as done.
    pub(crate) fn owe(
        &mut self,
        to: tokio::sync::oneshot::Sender<Result<SmtpReply, String>>,
        token: u64,
        t: &Timeouts,
    ) {
        self.owed = Some(Owed { to, token, limit: t.final_reply });
        self.dirty = false;
        self.messages += 1;
        self.last_used = Instant::now();
    }

    /// The token of the hand-off whose dot this session owes, if any.
    pub(crate) fn owed_token(&self) -> Option<u64> {
        self.owed.as_ref().map(|o| o.token)
    }

    /// Writes the dot this session owes (if any), reads its final reply and sends it on.
    /// `Err`: that failed, the session is unusable (and the earlier transaction was told).
    pub(crate) async fn settle_owed(&mut self) -> Result<(), StepError> {
        let Some(owed) = self.owed.take() else { return Ok(()) };
        let read = async {
            let client = &mut self.client;
            let step = async move {
                client.stream.write_all(b".\r\n").await?;
                client.stream.flush().await?;
                client.read().await
            };
            match tokio::time::timeout(owed.limit, step).await {
                Ok(Ok(r)) => Ok(reply_of(&r)),
                Ok(Err(e)) => Err(format!("the end of data: {e}")),
                Err(_) => Err(format!("no reply to the end of data within {} s", owed.limit.as_secs())),
            }
        }
        .await;
        let failed = read.as_ref().err().cloned();
        let _ = owed.to.send(read);
        match failed {
            Some(what) => Err(StepError::lost(format!("an earlier transaction's end of data: {what}"))),
            None => Ok(()),
        }
    }

    /// The transaction ended without DATA (every recipient refused): the next one resets.
    pub(crate) fn aborted(&mut self) {
        self.dirty = true;
        self.last_used = Instant::now();
    }

    /// QUIT, politely and briefly; the connection closes either way.
    pub(crate) async fn quit(mut self) {
        // A dot owed goes out first: the message it ends was held for it.
        if self.settle_owed().await.is_err() {
            return;
        }
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
