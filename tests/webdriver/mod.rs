//! The W3C WebDriver protocol, as much of it as the browser tests use, spoken to
//! `chromedriver` over HTTP with reqwest: sessions, navigation, elements, frames, cookies,
//! scripts and screenshots.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session.
pub struct Browser {
    http: reqwest::Client,
    url: String,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// A new session at the WebDriver server `driver` with `capabilities` (W3C `alwaysMatch`).
    pub async fn start(driver: &str, capabilities: Value) -> Browser {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{driver}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": capabilities}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Browser { http, url: format!("{driver}/session/{id}") }
    }

    /// A command; its `value`, or the error WebDriver answered.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        if ok { Ok(v["value"].clone()) } else { Err(v["value"].to_string()) }
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url").await.as_str().unwrap().to_string()
    }

    pub async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_string()
    }

    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching the CSS selector, or why not.
    pub async fn try_find(&self, css: &str) -> Result<Element<'_>, String> {
        let v =
            self.call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(Element { browser: self, id: v[ELEMENT].as_str().ok_or("no element id")?.to_string() })
    }

    pub async fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css).await.unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    /// The first link whose text is `text`.
    pub async fn link(&self, text: &str) -> Element<'_> {
        let v = self.post("/element", json!({"using": "link text", "value": text})).await;
        Element { browser: self, id: v[ELEMENT].as_str().unwrap().to_string() }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.post("/elements", json!({"using": "css selector", "value": css})).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| Element { browser: self, id: e[ELEMENT].as_str().unwrap().to_string() })
            .collect()
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Enters frame number `n` of the current page.
    pub async fn enter_frame(&self, n: u64) {
        self.post("/frame", json!({"id": n})).await;
    }

    pub async fn enter_parent_frame(&self) {
        self.post("/frame/parent", json!({})).await;
    }

    pub async fn cookie(&self, name: &str) -> Option<String> {
        let v = self.call(reqwest::Method::GET, &format!("/cookie/{name}"), None).await.ok()?;
        v["value"].as_str().map(str::to_string)
    }

    pub async fn delete_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await.unwrap();
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height})).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }

    pub async fn close(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    pub async fn click(&self) {
        self.browser.post(&self.path("/click"), json!({})).await;
    }

    pub async fn send_keys(&self, text: &str) {
        self.browser.post(&self.path("/value"), json!({"text": text})).await;
    }

    pub async fn text(&self) -> String {
        self.browser.get(&self.path("/text")).await.as_str().unwrap_or_default().to_string()
    }

    /// The text, or `None` when the element went away (the page changed).
    pub async fn try_text(&self) -> Option<String> {
        let v = self.browser.call(reqwest::Method::GET, &self.path("/text"), None).await.ok()?;
        v.as_str().map(str::to_string)
    }

    pub async fn displayed(&self) -> bool {
        self.browser.get(&self.path("/displayed")).await.as_bool().unwrap_or(false)
    }

    pub async fn attr(&self, name: &str) -> Option<String> {
        self.browser.get(&self.path(&format!("/attribute/{name}"))).await.as_str().map(str::to_string)
    }

    pub async fn prop(&self, name: &str) -> Option<String> {
        self.browser.get(&self.path(&format!("/property/{name}"))).await.as_str().map(str::to_string)
    }
}
