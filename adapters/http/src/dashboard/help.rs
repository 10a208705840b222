//! "Help me fix": what an error in the request logs means and what to change, for every error
//! name in the hosted service's catalogue (and the HTTP layer's own).

/// Guidance for one error name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Help {
    /// The name, as the error body's `name`.
    pub(crate) name: &'static str,
    /// What happened, in a sentence.
    pub(crate) cause: &'static str,
    /// What to do about it, step by step.
    pub(crate) steps: &'static [&'static str],
}

const fn h(name: &'static str, cause: &'static str, steps: &'static [&'static str]) -> Help {
    Help { name, cause, steps }
}

/// Every error name of the catalogue, with its guidance.
pub(crate) const CATALOGUE: &[Help] = &[
    h(
        "validation_error",
        "A field of the request broke a rule; the message names the field and the rule.",
        &[
            "Read the message: it names the field (`to[3]`, `emails[7].tags[0].name`) and what is wrong with it.",
            "Addresses must look like `email@example.com` or `Name <email@example.com>`; `to` takes at most 50.",
            "A 403 with this name means the sender's domain is not verified: verify it on the Domains page or send from a verified one.",
        ],
    ),
    h(
        "missing_required_field",
        "A field the endpoint needs was absent or null.",
        &[
            "Emails need `from`, `to` and `subject`, and one of `html`, `text` or a template.",
            "Check that your code does not send `undefined` or `None` where it meant a value.",
        ],
    ),
    h(
        "missing_required_parameter",
        "A query or path parameter the endpoint needs was absent.",
        &["Compare the URL with the endpoint's documented parameters."],
    ),
    h(
        "invalid_parameter",
        "A parameter had the wrong shape, such as an id that is not a UUID.",
        &["Use the id exactly as the API returned it.", "Check the parameter's documented format."],
    ),
    h(
        "invalid_attachment",
        "An attachment had neither `content` nor `path`, or its content was not valid base64.",
        &[
            "Give each attachment `content` (base64) or a `path` (a URL the server may fetch).",
            "Inline images also need `content_id`, referenced as `cid:` in the html.",
        ],
    ),
    h(
        "invalid_from_address",
        "The `from` address could not be used.",
        &["Write it as `email@example.com` or `Name <email@example.com>`, on a domain you verified."],
    ),
    h(
        "invalid_access",
        "The key's access level does not allow this.",
        &["Create a key with the access you need on the API Keys page."],
    ),
    h(
        "invalid_region",
        "The domain's region is not one the service knows.",
        &["Use one of `us-east-1`, `eu-west-1`, `sa-east-1`, `ap-northeast-1`."],
    ),
    h(
        "invalid_idempotency_key",
        "The `Idempotency-Key` header was empty or longer than 256 characters.",
        &["Send a key of 1 to 256 characters, unique per logical request (a UUID works)."],
    ),
    h(
        "invalid_idempotent_request",
        "The idempotency key was used in the last 24 hours with a different payload.",
        &[
            "A key stands for one request: send a new key for new content.",
            "To retry, send exactly the same body with the same key.",
        ],
    ),
    h(
        "concurrent_idempotent_requests",
        "A request with the same idempotency key is still being processed.",
        &["Wait for the first request to finish, then retry: you will get its result."],
    ),
    h("resource_locked", "Another change to the same resource is in progress.", &["Retry after a moment."]),
    h(
        "missing_api_key",
        "The request had no `Authorization: Bearer …` header.",
        &[
            "Pass your key to the SDK (`new Resend('re_…')` or `resend.api_key = 're_…'`).",
            "Check that the environment variable holding the key is set where the code runs.",
        ],
    ),
    h(
        "invalid_api_key",
        "The key is not one this server knows, or it was revoked.",
        &["Copy the key again (it is shown once, when created), or create a new one on the API Keys page."],
    ),
    h(
        "restricted_api_key",
        "A sending-only key was used on an endpoint other than sending.",
        &["Use a full-access key for this endpoint, or keep the sending key for `POST /emails` and `/emails/batch`."],
    ),
    h("suspended_api_key", "The key was suspended.", &["Create a new key, or ask the operator why it was suspended."]),
    h(
        "invalid_permission",
        "The key's permission is not one of `full_access` or `sending_access`.",
        &["Create the key again with a valid permission."],
    ),
    h(
        "email_above_quota",
        "Sending this email would go past the account's quota.",
        &["Wait for the quota to reset, or raise it."],
    ),
    h(
        "not_found",
        "No such endpoint, or no such email, domain, webhook or key in this account.",
        &[
            "Check the id: it must come from this account (each key sees its own account only).",
            "Check the method and path against the API reference.",
        ],
    ),
    h(
        "method_not_allowed",
        "The endpoint exists but not with this HTTP method.",
        &["Check the method (GET, POST, PATCH, DELETE) against the API reference."],
    ),
    h(
        "rate_limit_exceeded",
        "Too many requests per second for this key or account.",
        &[
            "Slow down: wait for the number of seconds in the `retry-after` header.",
            "Send many emails in one `POST /emails/batch` (up to 100) instead of one request each.",
        ],
    ),
    h(
        "daily_quota_exceeded",
        "The account sent as many emails today as its daily quota allows.",
        &["Wait until the quota resets, or raise it."],
    ),
    h(
        "monthly_quota_exceeded",
        "The account sent as many emails this month as its quota allows.",
        &["Wait until the quota resets, or raise it."],
    ),
    h(
        "security_error",
        "The request was refused for a security reason.",
        &["Read the message; check the content you are sending and the key you use."],
    ),
    h(
        "application_error",
        "Something went wrong on the server's side.",
        &[
            "Retry with the same idempotency key: the request is not applied twice.",
            "If it persists, check the server's log.",
        ],
    ),
    h(
        "internal_server_error",
        "Something went wrong on the server's side.",
        &["Retry with the same idempotency key; if it persists, check the server's log."],
    ),
    h(
        "service_unavailable",
        "The server was too busy to take the request, or is starting or stopping.",
        &["Retry after the `retry-after` header's seconds, with the same idempotency key."],
    ),
];

/// The guidance for error `name`, if the catalogue has it.
pub(crate) fn for_name(name: &str) -> Option<&'static Help> {
    CATALOGUE.iter().find(|h| h.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's names as the wire-format document lists them.
    const NAMES: &[&str] = &[
        "invalid_idempotency_key",
        "validation_error",
        "missing_api_key",
        "restricted_api_key",
        "invalid_api_key",
        "suspended_api_key",
        "invalid_permission",
        "email_above_quota",
        "not_found",
        "method_not_allowed",
        "invalid_idempotent_request",
        "concurrent_idempotent_requests",
        "resource_locked",
        "missing_required_field",
        "invalid_attachment",
        "invalid_parameter",
        "missing_required_parameter",
        "invalid_from_address",
        "invalid_access",
        "invalid_region",
        "rate_limit_exceeded",
        "daily_quota_exceeded",
        "monthly_quota_exceeded",
        "security_error",
        "application_error",
        "internal_server_error",
        "service_unavailable",
    ];

    #[test]
    fn every_name_in_the_catalogue_has_guidance_once() {
        for name in NAMES {
            let h = for_name(name).unwrap_or_else(|| panic!("no help for {name}"));
            assert!(!h.cause.is_empty() && !h.steps.is_empty(), "{name}");
        }
        assert_eq!(CATALOGUE.len(), NAMES.len(), "one entry per name, none extra");
    }

    #[test]
    fn every_name_the_engine_answers_with_has_guidance() {
        use mailroom_core::ErrorName as N;
        for n in [
            N::ValidationError,
            N::MissingRequiredField,
            N::InvalidAttachment,
            N::InvalidParameter,
            N::InvalidRegion,
            N::InvalidIdempotencyKey,
            N::InvalidIdempotentRequest,
            N::ConcurrentIdempotentRequests,
            N::NotFound,
            N::ApplicationError,
        ] {
            assert!(for_name(n.as_str()).is_some(), "{n}");
        }
    }
}
