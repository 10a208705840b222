//! DKIM signing (RFC 6376; Ed25519 per RFC 8463) with keys the host configures per domain.
//!
//! Invariants: a message is signed by the key of its From domain, or of a parent domain
//! (relaxed alignment), or not at all; a signing failure never sends the message unsigned
//! silently — it is a transient error with the reason (a broken key is the host's to fix).

use crate::config::ConfigError;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use std::fmt;

/// The headers signed: those a forger would change to make a message mean something else.
/// Absent ones are signed too (as empty), so that they cannot be added later.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A signer built once per key (the header list and the key, ready to sign).
enum Key {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// A signing key for one domain and selector.
pub struct DkimKey {
    domain: String,
    selector: String,
    key: Key,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key material never reaches a log.
        let algorithm = match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        };
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &algorithm)
            .finish()
    }
}

fn names(domain: &str, selector: &str) -> Result<(String, String), ConfigError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || !domain.contains('.') || selector.trim().is_empty() {
        return Err(bad(&domain, "a domain and a selector are required"));
    }
    Ok((domain, selector.trim().to_string()))
}

fn bad(domain: &str, what: impl fmt::Display) -> ConfigError {
    ConfigError::Dkim(format!("{domain}: {what}"))
}

/// The DER inside a PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl DkimKey {
    /// An RSA key (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`), signing
    /// with rsa-sha256.
    pub fn rsa_pem(domain: &str, selector: &str, pem: &str) -> Result<DkimKey, ConfigError> {
        let der = pem_body(pem).ok_or_else(|| bad(domain, "not a PEM block"))?;
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
        let der = if pem.contains("BEGIN RSA PRIVATE KEY") {
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))
        } else {
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))
        };
        let key =
            RsaKey::<Sha256>::from_key_der(der).map_err(|e| bad(domain, format!("not an RSA private key: {e}")))?;
        let (domain, selector) = names(domain, selector)?;
        let signer =
            DkimSigner::from_key(key).domain(&domain).selector(&selector).headers(SIGNED_HEADERS.iter().copied());
        Ok(DkimKey { domain, selector, key: Key::Rsa(signer) })
    }

    /// An Ed25519 key in PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey -algorithm ed25519`
    /// writes it), signing with ed25519-sha256.
    pub fn ed25519_pem(domain: &str, selector: &str, pem: &str) -> Result<DkimKey, ConfigError> {
        let der = pem_body(pem).ok_or_else(|| bad(domain, "not a PEM block"))?;
        DkimKey::ed25519_pkcs8_der(domain, selector, &der)
    }

    /// An Ed25519 key as PKCS#8 DER.
    pub fn ed25519_pkcs8_der(domain: &str, selector: &str, der: &[u8]) -> Result<DkimKey, ConfigError> {
        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(der)
            .map_err(|e| bad(domain, format!("not an Ed25519 private key: {e}")))?;
        let (domain, selector) = names(domain, selector)?;
        let signer =
            DkimSigner::from_key(key).domain(&domain).selector(&selector).headers(SIGNED_HEADERS.iter().copied());
        Ok(DkimKey { domain, selector, key: Key::Ed25519(signer) })
    }

    /// The domain it signs for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The `DKIM-Signature` header (with its CRLF) for `message`.
    pub fn signature(&self, message: &[u8]) -> Result<String, String> {
        let signed = match &self.key {
            Key::Rsa(s) => s.sign(message),
            Key::Ed25519(s) => s.sign(message),
        };
        signed.map(|s| s.to_header()).map_err(|e| format!("DKIM signing for {} failed: {e}", self.domain))
    }

    /// Whether this key may sign for `from_domain` (the same domain or a subdomain of it).
    fn covers(&self, from_domain: &str) -> bool {
        from_domain == self.domain
            || from_domain.strip_suffix(self.domain.as_str()).is_some_and(|rest| rest.ends_with('.'))
    }
}

/// The domain of the message's From header.
pub(crate) fn from_domain(message: &[u8]) -> Option<String> {
    let headers_end = memchr_double_crlf(message).unwrap_or(message.len());
    let headers = String::from_utf8_lossy(&message[..headers_end]);
    let mut lines = headers.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 5 && line[..5].eq_ignore_ascii_case("from:") {
            let mut value = line[5..].to_string();
            while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                value.push_str(lines.next().unwrap_or_default());
            }
            // The address is in angle brackets, or the whole value.
            let addr = match (value.rfind('<'), value.rfind('>')) {
                (Some(a), Some(b)) if b > a => value[a + 1..b].to_string(),
                _ => value.trim().to_string(),
            };
            return addr.rsplit_once('@').map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase());
        }
    }
    None
}

fn memchr_double_crlf(m: &[u8]) -> Option<usize> {
    m.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The most specific key for the From domain of `message`.
pub(crate) fn key_for<'a>(keys: &'a [std::sync::Arc<DkimKey>], message: &[u8]) -> Option<&'a DkimKey> {
    let domain = from_domain(message)?;
    keys.iter().filter(|k| k.covers(&domain)).max_by_key(|k| k.domain.len()).map(|k| &**k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the core generates for a sending domain load here and sign.
    #[test]
    fn generated_domain_keys_sign() {
        use mailroom_core::domains::{DkimAlgorithm, generate_dkim_key};
        let message = b"From: a@acme.test\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n";
        let rsa = generate_dkim_key(DkimAlgorithm::Rsa2048).unwrap_or_else(|e| panic!("{e}"));
        let key = DkimKey::rsa_pem("acme.test", "mailroom", &rsa.private_pem).unwrap_or_else(|e| panic!("{e}"));
        let sig = key.signature(message).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            sig.starts_with("DKIM-Signature:") && sig.contains("a=rsa-sha256") && sig.contains("s=mailroom"),
            "{sig}"
        );
        let ed = generate_dkim_key(DkimAlgorithm::Ed25519).unwrap_or_else(|e| panic!("{e}"));
        let key = DkimKey::ed25519_pem("acme.test", "mailroom", &ed.private_pem).unwrap_or_else(|e| panic!("{e}"));
        assert!(key.signature(message).unwrap_or_else(|e| panic!("{e}")).contains("a=ed25519-sha256"));
    }

    #[test]
    fn the_from_domain_picks_the_most_specific_key() {
        let der = Ed25519Key::generate_pkcs8().unwrap_or_default();
        let k =
            |d: &str| std::sync::Arc::new(DkimKey::ed25519_pkcs8_der(d, "s", &der).unwrap_or_else(|e| panic!("{e}")));
        let keys = vec![k("acme.test"), k("mail.acme.test")];
        let pick = |m: &str| key_for(&keys, m.as_bytes()).map(|k| k.domain().to_string());
        assert_eq!(pick("From: A <a@mail.acme.test>\r\nTo: b@x.test\r\n\r\nhi"), Some("mail.acme.test".into()));
        assert_eq!(pick("To: b@x.test\r\nFrom:\r\n a@news.acme.test\r\n\r\nhi"), Some("acme.test".into()));
        assert_eq!(pick("From: a@notacme.test\r\n\r\nhi"), None);
        assert_eq!(pick("Subject: no from\r\n\r\nFrom: a@acme.test"), None);
    }

    #[test]
    fn bad_keys_name_the_domain() {
        let e =
            DkimKey::rsa_pem("acme.test", "s", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").err();
        assert!(e.is_some_and(|e| e.to_string().contains("acme.test")));
        assert!(DkimKey::ed25519_pem("acme.test", "", "x").is_err());
    }
}
