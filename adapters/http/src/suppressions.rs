//! `/suppressions`: the suppression list as the official SDKs' `suppressions.*` call it —
//! add, list (by `origin`, with cursors), get and remove by id or address, and the batch add
//! and remove. The rules (ids, origins, pages) are the engine's (`mailroom_core::suppressions`).

use crate::{ApiError, ApiResult, Auth, PathParam, QueryParam, json_object, ok, page_limit, path, query};
use axum::body::Bytes;
use axum::http::HeaderMap;
use mailroom_core::error::{Error, FieldError, Rule};
use mailroom_core::ports::SuppressionEntry;
use mailroom_core::suppressions::{Cursor, Origin, PageQuery, id};
use serde::Deserialize;
use serde_json::{Value, json};

/// The most addresses one batch call may name (the email batch's bound: one call's work and
/// answer stay small).
pub(crate) const MAX_BATCH: usize = 100;

/// An entry as `GET /suppressions/{id}` shows it (the list leaves out `object`).
fn entry_json(auth: &Auth, e: &SuppressionEntry, object: bool) -> Value {
    let mut v = mailroom_core::suppressions::json(auth.engine.account(), e);
    if object {
        v["object"] = json!("suppression");
    }
    v
}

/// `email` (or `emails[i]`) as the list keys it: an address that parses, normalised.
fn address(field: String, value: &str) -> Result<String, FieldError> {
    mailroom_core::address::normalize(value).map_err(|e| FieldError::new(field, Rule::Address(e)))
}

#[derive(Deserialize)]
pub(crate) struct Add {
    email: Option<String>,
}

pub(crate) async fn add(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let a: Add = json_object(&headers, body)?;
    let email = a.email.ok_or_else(|| Error::from(FieldError::new("email", Rule::Required)))?;
    let email = address("email".into(), &email).map_err(Error::from)?;
    let entry = auth.engine.suppress_by_hand(&email).await?;
    ok(json!({"object": "suppression", "id": id(auth.engine.account(), &entry.address)}))
}

pub(crate) async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    let limit = page_limit(&q)?;
    let cursor = match (q.get("after"), q.get("before")) {
        (Some(_), Some(_)) => return Err(ApiError::new(422, "validation_error", "Use `after` or `before`, not both.")),
        (Some(a), None) => Cursor::After(a.clone()),
        (None, Some(b)) => Cursor::Before(b.clone()),
        (None, None) => Cursor::Start,
    };
    let origin = match q.get("origin") {
        None => None,
        Some(o) => Some(Origin::parse(o).ok_or_else(|| {
            ApiError::new(
                422,
                "validation_error",
                format!("The `origin` parameter must be `bounce`, `complaint`, `manual` or `unsubscribe`, not {o:?}."),
            )
        })?),
    };
    let page = auth.engine.suppressions_page(&PageQuery { limit, cursor, origin }).await?;
    let data: Vec<Value> = page.data.iter().map(|e| entry_json(&auth, e, false)).collect();
    ok(json!({"object": "list", "has_more": page.has_more, "data": data}))
}

pub(crate) async fn get(auth: Auth, id_or_email: PathParam<String>) -> ApiResult {
    let named = path(id_or_email)?;
    match auth.engine.suppression_named(&named).await? {
        Some(e) => ok(entry_json(&auth, &e, true)),
        None => Err(Error::NotFound { what: "Suppression" }.into()),
    }
}

pub(crate) async fn remove(auth: Auth, id_or_email: PathParam<String>) -> ApiResult {
    let e = auth.engine.unsuppress_named(&path(id_or_email)?).await?;
    ok(json!({"object": "suppression", "id": id(auth.engine.account(), &e.address), "deleted": true}))
}

/// A batch call's list: `field` of the body, present (not `null`) and an array of strings.
fn named_list(body: &serde_json::Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, Error> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    Error::from(FieldError::new(format!("{field}[{i}]"), Rule::Shape("it must be a string".into())))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(FieldError::new(field, Rule::Shape("it must be an array of strings".into())).into()),
    }
}

/// The list named by a batch call: 1 to [`MAX_BATCH`] items.
fn batch_list(field: &str, items: Vec<String>) -> Result<Vec<String>, Error> {
    if items.is_empty() {
        return Err(FieldError::new(field, Rule::TooFew { min: 1, got: 0 }).into());
    }
    if items.len() > MAX_BATCH {
        return Err(FieldError::new(field, Rule::TooMany { max: MAX_BATCH, got: items.len() }).into());
    }
    Ok(items)
}

/// The addresses of a batch call, normalised and without repeats (the first stands): every
/// invalid one is reported, and nothing is done unless all are valid.
fn emails(items: Vec<String>) -> Result<Vec<String>, Error> {
    let items = batch_list("emails", items)?;
    let mut bad = Vec::new();
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, e) in items.iter().enumerate() {
        match address(format!("emails[{i}]"), e) {
            Ok(a) if !out.contains(&a) => out.push(a),
            Ok(_) => {}
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() { Ok(out) } else { Err(Error::Invalid(bad)) }
}

/// The ids of a batch call: each an id's form (a UUID), without repeats.
fn ids(items: Vec<String>) -> Result<Vec<String>, Error> {
    let items = batch_list("ids", items)?;
    let bad: Vec<FieldError> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| uuid::Uuid::try_parse(i).is_err())
        .map(|(i, _)| FieldError::new(format!("ids[{i}]"), Rule::InvalidId))
        .collect();
    if !bad.is_empty() {
        return Err(Error::Invalid(bad));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        let i = i.to_ascii_lowercase();
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

pub(crate) async fn batch_add(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let body: serde_json::Map<String, Value> = json_object(&headers, body)?;
    if body.contains_key("ids") {
        return Err(Error::from(FieldError::new("ids", Rule::Shape("adding takes `emails`, not ids".into()))).into());
    }
    let list =
        emails(named_list(&body, "emails")?.ok_or_else(|| Error::from(FieldError::new("emails", Rule::Required)))?)?;
    // Together, not one after another: the store's group commit then makes one write of them.
    let added = futures::future::join_all(list.iter().map(|email| auth.engine.suppress_by_hand(email))).await;
    let mut data = Vec::with_capacity(list.len());
    for a in added {
        let entry = a?;
        data.push(json!({"object": "suppression", "id": id(auth.engine.account(), &entry.address)}));
    }
    ok(json!({"data": data}))
}

pub(crate) async fn batch_remove(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let body: serde_json::Map<String, Value> = json_object(&headers, body)?;
    let named = match (named_list(&body, "emails")?, named_list(&body, "ids")?) {
        (Some(_), Some(_)) => return Err(Error::from(FieldError::new("emails", Rule::Exclusive("ids"))).into()),
        (Some(e), None) => emails(e)?,
        (None, Some(i)) => ids(i)?,
        (None, None) => return Err(Error::from(FieldError::new("emails", Rule::Required)).into()),
    };
    let removed = futures::future::join_all(named.iter().map(|n| auth.engine.unsuppress_named(n))).await;
    let mut data = Vec::with_capacity(named.len());
    for r in removed {
        // One not on the list is left out of the answer, not an error: the others still go.
        match r {
            Ok(e) => data
                .push(json!({"object": "suppression", "id": id(auth.engine.account(), &e.address), "deleted": true})),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ok(json!({"data": data}))
}
