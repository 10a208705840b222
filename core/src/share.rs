//! Share links: a signed, expiring token that shows one email to whoever holds it, without
//! signing in (`POST /emails/{id}/share`). The token is a JWT signed with HS256, as the hosted
//! service's are, carrying the account, the email and the expiry; its key is derived from the
//! server's link key, so a share token and a tracking token can never stand for each other.

use crate::email::{AccountId, EmailId, EmailRecord};
use crate::error::{Error, FieldError, Rule};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The longest a share link lives, and how long when not told.
pub const MAX_SHARE: Duration = Duration::hours(48);
/// Tokens longer than this are refused unread.
const MAX_TOKEN: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The account.
    acc: String,
    /// The email id.
    sub: String,
    /// What the token is: always `share`.
    kind: String,
    /// Expiry, seconds since the epoch.
    exp: i64,
}

/// Why a share token shows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareError {
    /// Not a token this server signed (or altered).
    Invalid,
    /// Signed, but past its expiry.
    Expired,
}

/// Reads `10m`, `2 hours`, `1 day`, `1h30m`, `48h`: one or more numbers, each with a unit
/// (`s`, `m`, `h`, `d`, with or without their long forms and plurals). At most 48 hours, more
/// than none.
pub fn parse_expires_in(input: &str) -> Result<Duration, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            "expires_in",
            Rule::Shape(format!(
                "{:?} is not a duration such as `10m`, `2 hours` or `1 day` ({why})",
                input.chars().take(64).collect::<String>()
            )),
        )
    };
    if input.len() > 64 {
        return Err(bad("too long"));
    }
    let mut total = Duration::zero();
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("a number must come first"));
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = rest[..unit_len].to_ascii_lowercase();
        rest = rest[unit_len..].trim_start().trim_start_matches(',').trim_start();
        let seconds = match unit.as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "" => return Err(bad("a unit must follow the number")),
            _ => return Err(bad("the unit is not one of s, m, h, d")),
        };
        total += Duration::seconds(n.checked_mul(seconds).filter(|s| *s <= 1_000_000).ok_or_else(|| bad("too long"))?);
    }
    if total <= Duration::zero() {
        return Err(bad("it must be more than none"));
    }
    if total > MAX_SHARE {
        return Err(FieldError::new("expires_in", Rule::Shape("a share link lives at most 48 hours".into())));
    }
    Ok(total)
}

fn share_key(link: &crate::tracking::LinkKey) -> Hmac<Sha256> {
    let derived = link.derive(b"mailroom share links v1");
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(&derived).expect("HMAC takes keys of any length")
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token showing email `id` of `account` until `exp`.
pub fn sign(link: &crate::tracking::LinkKey, account: &AccountId, id: EmailId, exp: DateTime<Utc>) -> String {
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims =
        Claims { acc: account.as_str().to_string(), sub: id.to_string(), kind: "share".into(), exp: exp.timestamp() };
    let payload = b64(&serde_json::to_vec(&claims).unwrap_or_default());
    let mut mac = share_key(link);
    mac.update(format!("{header}.{payload}").as_bytes());
    format!("{header}.{payload}.{}", b64(&mac.finalize().into_bytes()))
}

/// The account and email a token shows, if this server signed it and it has not expired.
pub fn verify(
    link: &crate::tracking::LinkKey,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(AccountId, EmailId), ShareError> {
    if token.len() > MAX_TOKEN {
        return Err(ShareError::Invalid);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ShareError::Invalid);
    };
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).map_err(|_| ShareError::Invalid)?;
    let mut mac = share_key(link);
    mac.update(format!("{header}.{payload}").as_bytes());
    mac.verify_slice(&tag).map_err(|_| ShareError::Invalid)?;
    // Signed by us (so `alg` is ours too): the claims are read only now.
    let claims: Claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(ShareError::Invalid)?;
    if claims.kind != "share" {
        return Err(ShareError::Invalid);
    }
    if now.timestamp() >= claims.exp {
        return Err(ShareError::Expired);
    }
    let id = claims.sub.parse::<EmailId>().map_err(|_| ShareError::Invalid)?;
    Ok((AccountId::new(claims.acc), id))
}

impl crate::Engine {
    /// A share token for email `id` of this account, valid for `expires_in` (default and
    /// at most 48 hours); and when it expires.
    pub async fn share(&self, id: EmailId, expires_in: Option<&str>) -> Result<(String, DateTime<Utc>), Error> {
        let life = match expires_in {
            Some(e) => parse_expires_in(e)?,
            None => MAX_SHARE,
        };
        self.get_record(id).await?;
        let exp = self.clock().now() + life;
        Ok((sign(self.link_key(), self.account(), id, exp), exp))
    }

    /// The email a share token shows.
    pub async fn shared(&self, token: &str) -> Result<EmailRecord, ShareError> {
        let (account, id) = verify(self.link_key(), token, self.clock().now())?;
        match self.storage().get_email(&account, id).await {
            Ok(Some(r)) => Ok(r),
            _ => Err(ShareError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tracking::LinkKey;

    #[test]
    fn durations_as_people_write_them() {
        let m = |s: &str| parse_expires_in(s).map(|d| d.num_seconds());
        assert_eq!(m("10m"), Ok(600));
        assert_eq!(m("2 hours"), Ok(7200));
        assert_eq!(m("1 day"), Ok(86_400));
        assert_eq!(m("1h30m"), Ok(5400));
        assert_eq!(m("48h"), Ok(172_800));
        assert_eq!(m(" 1 hour, 30 minutes "), Ok(5400));
        for bad in [
            "",
            "0m",
            "49h",
            "3 days",
            "10",
            "ten minutes",
            "5 fortnights",
            "-1h",
            "99999999999999999999h",
            &"1m".repeat(40),
        ] {
            let e = parse_expires_in(bad).unwrap_err();
            assert_eq!(e.path, "expires_in", "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_hs256_jwts_that_expire_and_cannot_be_altered() {
        let key = LinkKey::new(&[3; 32]);
        let t0 = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let id = EmailId::from_u128(77);
        let token = sign(&key, &AccountId::new("a"), id, t0 + Duration::hours(1));
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(verify(&key, &token, t0), Ok((AccountId::new("a"), id)));
        assert_eq!(verify(&key, &token, t0 + Duration::hours(1)), Err(ShareError::Expired));
        assert_eq!(verify(&LinkKey::new(&[4; 32]), &token, t0), Err(ShareError::Invalid));
        // A payload changed to another email, even re-encoded, fails the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let other = b64(br#"{"acc":"a","sub":"019e830e-1a00-72a8-9674-b51bcdf3b531","kind":"share","exp":9999999999}"#);
        assert_eq!(verify(&key, &format!("{}.{other}.{}", parts[0], parts[2]), t0), Err(ShareError::Invalid));
        // `alg: none` and a missing signature are refused.
        let none = b64(br#"{"alg":"none"}"#);
        assert_eq!(verify(&key, &format!("{none}.{}.", parts[1]), t0), Err(ShareError::Invalid));
        for junk in ["", "a.b", "a.b.c.d", "...", &"x".repeat(2000)] {
            assert_eq!(verify(&key, junk, t0), Err(ShareError::Invalid), "{junk:?}");
        }
    }
}
