//! Test addresses and the sandbox transport: every outcome, simulated, without any network.
//!
//! At the test domain (default `resend.dev`, so examples written for the hosted service work
//! unchanged), `delivered@` is delivered, `bounced@` bounces with `550 5.1.1` (and lands on
//! the suppression list), `complained@` is delivered then complained about (and lands on the
//! list), `suppressed@` is treated as already on the list: the engine never hands it over.
//! Each may carry a `+label`. Every other recipient is delivered into an outbox that tests
//! and the command line can read, like lettre's `StubTransport`.

use crate::address::Mailbox;
use crate::bounce::SmtpReply;
use crate::ports::{DeliveryReport, Envelope, Feedback, RecipientReport, RecipientStatus, Transport, TransportError};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// The test addresses' domain by default (the hosted service's own).
pub const DEFAULT_TEST_DOMAIN: &str = "resend.dev";

/// What a test address simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestAddress {
    /// `delivered@`: delivered.
    Delivered,
    /// `bounced@`: a permanent bounce (550 5.1.1).
    Bounced,
    /// `complained@`: delivered, then marked as spam.
    Complained,
    /// `suppressed@`: treated as already on the suppression list.
    Suppressed,
}

impl TestAddress {
    /// Recognises `kind(+label)@test_domain` (case-insensitive).
    pub fn parse(address: &str, test_domain: &str) -> Option<TestAddress> {
        let m = Mailbox::parse(address).ok()?;
        if !m.domain.eq_ignore_ascii_case(test_domain) {
            return None;
        }
        let local = m.local_unquoted().to_ascii_lowercase();
        let base = local.split_once('+').map_or(local.as_str(), |(b, _)| b);
        match base {
            "delivered" => Some(TestAddress::Delivered),
            "bounced" => Some(TestAddress::Bounced),
            "complained" => Some(TestAddress::Complained),
            "suppressed" => Some(TestAddress::Suppressed),
            _ => None,
        }
    }
}

/// One message the sandbox accepted for an ordinary recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The envelope it was handed over with.
    pub envelope: Envelope,
    /// The rendered message.
    pub message: Vec<u8>,
}

type Hook = Arc<dyn Fn(&OutboxMessage) + Send + Sync>;

/// The sandbox transport. Clones share the outbox.
#[derive(Clone)]
pub struct SandboxTransport {
    test_domain: String,
    outbox: Arc<Mutex<Vec<OutboxMessage>>>,
    hook: Option<Hook>,
}

impl std::fmt::Debug for SandboxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxTransport")
            .field("test_domain", &self.test_domain)
            .field("outbox", &self.outbox.lock().map(|o| o.len()).unwrap_or(0))
            .finish()
    }
}

impl Default for SandboxTransport {
    fn default() -> Self {
        Self::new(DEFAULT_TEST_DOMAIN)
    }
}

impl SandboxTransport {
    /// A sandbox whose test addresses are at `test_domain`.
    pub fn new(test_domain: &str) -> Self {
        SandboxTransport { test_domain: test_domain.to_ascii_lowercase(), outbox: Arc::default(), hook: None }
    }

    /// Calls `hook` for every outbox message as it arrives, instead of keeping it in the
    /// in-memory outbox (the command line writes them to files: a server that runs for months
    /// must not hold every message it ever simulated).
    pub fn with_hook(mut self, hook: impl Fn(&OutboxMessage) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The domain of the test addresses.
    pub fn test_domain(&self) -> &str {
        &self.test_domain
    }

    /// Everything handed over for ordinary recipients, in order.
    pub fn outbox(&self) -> Vec<OutboxMessage> {
        self.outbox.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Empties the outbox, returning what it held.
    pub fn take_outbox(&self) -> Vec<OutboxMessage> {
        self.outbox.lock().map(|mut o| std::mem::take(&mut *o)).unwrap_or_default()
    }
}

#[async_trait]
impl Transport for SandboxTransport {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let mut report = DeliveryReport::default();
        let mut ordinary = Vec::new();
        for rcpt in &envelope.to {
            let accepted = || Some(SmtpReply::new(250, "2.0.0", "OK: simulated delivery"));
            let (status, reply, feedback) = match TestAddress::parse(rcpt, &self.test_domain) {
                Some(TestAddress::Delivered) => (RecipientStatus::Delivered, accepted(), None),
                Some(TestAddress::Complained) => (RecipientStatus::Delivered, accepted(), Some(Feedback::Complaint)),
                Some(TestAddress::Bounced) => (
                    RecipientStatus::Rejected,
                    Some(SmtpReply::new(
                        550,
                        "5.1.1",
                        "The email account that you tried to reach does not exist (simulated bounce)",
                    )),
                    None,
                ),
                // The engine filters these out before hand-over; one that arrives anyway (a host
                // calling the transport directly) is refused the way a suppression would.
                Some(TestAddress::Suppressed) => (
                    RecipientStatus::Rejected,
                    Some(SmtpReply::new(550, "5.1.1", "Recipient is on the suppression list (simulated)")),
                    None,
                ),
                None => {
                    ordinary.push(rcpt.clone());
                    (RecipientStatus::Delivered, accepted(), None)
                }
            };
            // (The simulated replies are the ones a receiving server gives at `RCPT TO`.)
            let stage = crate::bounce::Stage::Recipient;
            report.recipients.push(RecipientReport { recipient: rcpt.clone(), status, reply, stage, feedback });
        }
        if !ordinary.is_empty() {
            let msg =
                OutboxMessage { envelope: Envelope { to: ordinary, ..envelope.clone() }, message: message.to_vec() };
            if let Some(h) = &self.hook {
                h(&msg);
            } else if let Ok(mut o) = self.outbox.lock() {
                o.push(msg);
            }
        }
        Ok(report)
    }
}

/// A real transport with the test addresses in front: recipients at the test domain are
/// simulated by the sandbox (never a byte on the network), every other recipient goes to
/// `real`. The report lists recipients in the envelope's order.
#[derive(Debug)]
pub struct WithTestAddresses {
    sandbox: SandboxTransport,
    real: Arc<dyn Transport>,
}

impl WithTestAddresses {
    /// `real` for ordinary recipients, `sandbox` for the test addresses.
    pub fn new(sandbox: SandboxTransport, real: Arc<dyn Transport>) -> Self {
        WithTestAddresses { sandbox, real }
    }
}

#[async_trait]
impl Transport for WithTestAddresses {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let (test, other): (Vec<String>, Vec<String>) =
            envelope.to.iter().cloned().partition(|r| TestAddress::parse(r, &self.sandbox.test_domain).is_some());
        if test.is_empty() {
            return self.real.send_raw(envelope, message).await;
        }
        let part = |to: Vec<String>| Envelope { to, ..envelope.clone() };
        let mut reports = self.sandbox.send_raw(&part(test), message).await?.recipients;
        if !other.is_empty() {
            // A failure of the real part fails the hand-over as a whole; simulating the test
            // addresses again on the retry costs nothing and reaches no one.
            reports.extend(self.real.send_raw(&part(other), message).await?.recipients);
        }
        let position = |r: &RecipientReport| envelope.to.iter().position(|t| *t == r.recipient);
        reports.sort_by_key(position);
        Ok(DeliveryReport { recipients: reports })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_addresses_never_reach_the_real_transport() {
        let real = Arc::new(SandboxTransport::new("elsewhere.test"));
        let t = WithTestAddresses::new(SandboxTransport::default(), real.clone());
        let env = Envelope::new(
            crate::email::EmailId::from_u128(1),
            "a@acme.test",
            vec!["x@example.com".into(), "bounced@resend.dev".into(), "y@example.com".into()],
        );
        let r = t.send_raw(&env, b"m").await.unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(&str, RecipientStatus)> = r.recipients.iter().map(|r| (r.recipient.as_str(), r.status)).collect();
        assert_eq!(
            got,
            [
                ("x@example.com", RecipientStatus::Delivered),
                ("bounced@resend.dev", RecipientStatus::Rejected),
                ("y@example.com", RecipientStatus::Delivered)
            ]
        );
        let reached: Vec<Vec<String>> = real.outbox().into_iter().map(|m| m.envelope.to).collect();
        assert_eq!(reached, [vec!["x@example.com".to_string(), "y@example.com".to_string()]]);
    }

    #[test]
    fn test_addresses_with_labels() {
        let d = DEFAULT_TEST_DOMAIN;
        assert_eq!(TestAddress::parse("delivered@resend.dev", d), Some(TestAddress::Delivered));
        assert_eq!(TestAddress::parse("Bounced+signup-42@Resend.dev", d), Some(TestAddress::Bounced));
        assert_eq!(TestAddress::parse("Name <complained+x@resend.dev>", d), Some(TestAddress::Complained));
        assert_eq!(TestAddress::parse("suppressed+a+b@resend.dev", d), Some(TestAddress::Suppressed));
        assert_eq!(TestAddress::parse("delivered@example.com", d), None);
        assert_eq!(TestAddress::parse("deliveredx@resend.dev", d), None);
        assert_eq!(TestAddress::parse("delivered@sandbox.test", "sandbox.test"), Some(TestAddress::Delivered));
    }
}
