//! The dashboard's session: a cookie the server signed, naming the account and the API key a
//! person signed in with, and the CSRF token of its forms.
//!
//! Why a signed cookie and not a table of sessions: nothing to store or clean up, and it
//! holds across a restart and across processes sharing one database (the key is derived from
//! the link key, which `serve` keeps). What a table would give — ending a session at once —
//! comes from checking, on every request, that the key still exists and is not revoked
//! (revoking the key ends every session made with it), and from a list of signed-out
//! sessions kept until they would have expired anyway.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use ring::hmac;
use std::collections::HashMap;
use std::sync::Mutex;

/// The cookie's name.
pub(crate) const COOKIE: &str = "mailroom_session";

/// How long a session lasts from sign-in, whatever is done with it.
pub(crate) const LIFETIME: Duration = Duration::hours(12);

/// Signed-out sessions remembered at most (each until its expiry): past it the oldest are
/// forgotten — such a session is one whose cookie its browser already deleted.
const MAX_SIGNED_OUT: usize = 100_000;

/// What a session cookie says, once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The account.
    pub(crate) account: String,
    /// The API key signed in with.
    pub(crate) key_id: String,
    /// When it ends.
    pub(crate) expires: DateTime<Utc>,
    /// Random; names the session (sign-out, CSRF).
    pub(crate) nonce: String,
}

/// Signs and checks sessions; remembers signed-out ones.
pub(crate) struct Sessions {
    key: hmac::Key,
    signed_out: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(..)")
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub(crate) fn new(secret: &[u8; 32]) -> Sessions {
        Sessions { key: hmac::Key::new(hmac::HMAC_SHA256, secret), signed_out: Mutex::new(HashMap::new()) }
    }

    /// A new session for `key_id` of `account`, from `now`.
    pub(crate) fn start(&self, account: &str, key_id: &str, now: DateTime<Utc>) -> Session {
        let nonce: [u8; 16] = rand::random();
        Session { account: account.into(), key_id: key_id.into(), expires: now + LIFETIME, nonce: b64(&nonce) }
    }

    /// The cookie's value for `s`: its fields, then their signature.
    pub(crate) fn cookie_value(&self, s: &Session) -> String {
        let fields = format!("{}\n{}\n{}\n{}", s.account, s.key_id, s.expires.timestamp(), s.nonce);
        let payload = b64(fields.as_bytes());
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", b64(tag.as_ref()))
    }

    /// The session a cookie value names, if this server signed it, it has not expired and it
    /// was not signed out.
    pub(crate) fn check(&self, value: &str, now: DateTime<Utc>) -> Option<Session> {
        if value.len() > 1024 {
            return None;
        }
        let (payload, tag) = value.split_once('.')?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant time (ring's verify).
        hmac::verify(&self.key, payload.as_bytes(), &tag).ok()?;
        let fields = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        let fields = String::from_utf8(fields).ok()?;
        let mut parts = fields.split('\n');
        let (account, key_id, expires, nonce) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let expires = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        if parts.next().is_some() || expires <= now {
            return None;
        }
        if self.signed_out.lock().ok()?.contains_key(nonce) {
            return None;
        }
        Some(Session { account: account.into(), key_id: key_id.into(), expires, nonce: nonce.into() })
    }

    /// Ends `s`: its cookie is refused from now on, even if a copy of it is replayed.
    pub(crate) fn sign_out(&self, s: &Session, now: DateTime<Utc>) {
        let Ok(mut out) = self.signed_out.lock() else { return };
        out.retain(|_, expires| *expires > now);
        if out.len() >= MAX_SIGNED_OUT {
            // Forget the ones closest to expiring on their own.
            let mut by_expiry: Vec<(String, DateTime<Utc>)> = out.drain().collect();
            by_expiry.sort_by_key(|(_, e)| std::cmp::Reverse(*e));
            by_expiry.truncate(MAX_SIGNED_OUT / 2);
            out.extend(by_expiry);
        }
        out.insert(s.nonce.clone(), s.expires);
    }

    /// The CSRF token of `s`'s forms: bound to the session, unguessable without the key.
    pub(crate) fn csrf(&self, s: &Session) -> String {
        let tag = hmac::sign(&self.key, format!("csrf\n{}", s.nonce).as_bytes());
        b64(&tag.as_ref()[..16])
    }

    /// Whether `token` is `s`'s CSRF token.
    pub(crate) fn csrf_ok(&self, s: &Session, token: &str) -> bool {
        let want = self.csrf(s);
        want.len() == token.len() && want.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn a_signed_session_is_read_back_until_it_expires() {
        let s = Sessions::new(&[1; 32]);
        let session = s.start("acme", "key-1", now());
        let value = s.cookie_value(&session);
        assert_eq!(s.check(&value, now()), Some(session.clone()));
        assert_eq!(s.check(&value, now() + LIFETIME - Duration::seconds(1)), Some(session));
        assert_eq!(s.check(&value, now() + LIFETIME), None, "expired");
    }

    #[test]
    fn an_altered_or_foreign_cookie_is_refused() {
        let s = Sessions::new(&[1; 32]);
        let value = s.cookie_value(&s.start("acme", "key-1", now()));
        assert_eq!(Sessions::new(&[2; 32]).check(&value, now()), None, "another server's key");
        let forged = format!("{}.{}", b64(format!("other\nkey-1\n{}\nx", now().timestamp() + 99).as_bytes()), {
            let (_, tag) = value.split_once('.').unwrap_or_default();
            tag.to_string()
        });
        assert_eq!(s.check(&forged, now()), None, "fields changed under the old signature");
        assert_eq!(s.check("", now()), None);
        assert_eq!(s.check("a.b.c", now()), None);
        assert_eq!(s.check(&"x".repeat(5000), now()), None);
    }

    #[test]
    fn a_signed_out_session_stays_out_and_csrf_tokens_are_per_session() {
        let s = Sessions::new(&[1; 32]);
        let a = s.start("acme", "key-1", now());
        let b = s.start("acme", "key-1", now());
        assert!(s.csrf_ok(&a, &s.csrf(&a)));
        assert!(!s.csrf_ok(&a, &s.csrf(&b)), "another session's token");
        assert!(!s.csrf_ok(&a, ""));
        let value = s.cookie_value(&a);
        s.sign_out(&a, now());
        assert_eq!(s.check(&value, now()), None);
        assert!(s.check(&s.cookie_value(&b), now()).is_some(), "only that session ends");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(axum::http::header::COOKIE, "a=1; mailroom_session=xyz".parse().unwrap_or_else(|_| unreachable!()));
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
