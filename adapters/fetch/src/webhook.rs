//! The [`WebhookSender`]: webhook deliveries over HTTP(S), under the same address policy as
//! attachment URLs but with its own default. Receivers of a self-hosted engine usually live next
//! to it, and only full-access keys create endpoints, so private and loopback addresses are
//! allowed unless the operator restricts deliveries to public ones.
//!
//! Invariants: one POST per attempt, never redirected (a 3xx is the answer, and a failure);
//! the whole attempt — connecting, sending, the answer's head and the kept part of its body —
//! within the timeout; at most [`RESPONSE_KEPT`] bytes of an answer read; connections pooled per
//! endpoint by the client (keep-alive), so a busy endpoint is not reconnected per event.

use crate::{Blocked, Policy, PolicyResolver, literal_ip};
use async_trait::async_trait;
use ipnet::IpNet;
use mailroom_core::webhooks::{RESPONSE_KEPT, WebhookReply, WebhookSender};
use std::sync::Arc;
use std::time::Duration;

/// Where webhooks may go. Change fields of [`WebhookConfig::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `true` (the default): loopback and private addresses are allowed.
    pub allow_private: bool,
    /// Non-public networks allowed even when `allow_private` is off.
    pub allow_networks: Vec<IpNet>,
    /// Connecting to a receiver.
    pub connect_timeout: Duration,
    /// Idle pooled connections per endpoint host, at most.
    pub pool_per_host: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: true,
            allow_networks: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            pool_per_host: 64,
        }
    }
}

/// The sender.
#[derive(Debug, Clone)]
pub struct WebhookPoster {
    client: reqwest::Client,
    policy: Policy,
}

impl WebhookPoster {
    /// A sender with `config`.
    pub fn new(config: WebhookConfig) -> Result<WebhookPoster, String> {
        let policy = Policy { allow_private: config.allow_private, allow: config.allow_networks };
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_per_host)
            .tcp_nodelay(true)
            .user_agent(concat!("mailroom-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WebhookPoster { client, policy })
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<WebhookReply, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if let Some(ip) = literal_ip(&url)
            && !self.policy.allows(ip)
        {
            return Err(format!("{ip} is an address this server does not deliver webhooks to"));
        }
        let mut req = self.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let mut response = req.body(body.to_vec()).send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_KEPT {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_KEPT - kept.len())]),
                // The status is the answer; a body cut short does not change it.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(WebhookReply { status, body: String::from_utf8_lossy(&kept).into_owned() })
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return b.0.clone();
        }
        source = s.source();
    }
    if e.is_connect() {
        return "could not connect to the endpoint".into();
    }
    if e.is_timeout() {
        return "the endpoint did not answer in time".into();
    }
    format!("the request failed: {e}")
}

#[async_trait]
impl WebhookSender for WebhookPoster {
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<WebhookReply, String> {
        match tokio::time::timeout(timeout, self.attempt(url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on loopback answering `answer` (or never, when `None`).
    async fn server(answer: Option<&'static str>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 65536];
            let n = s.read(&mut got).await.unwrap();
            got.truncate(n);
            match answer {
                Some(a) => s.write_all(a.as_bytes()).await.unwrap(),
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            got
        });
        (url, task)
    }

    #[tokio::test]
    async fn posts_with_the_headers_and_reads_the_answer() {
        let (url, task) = server(Some("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")).await;
        let p = WebhookPoster::new(WebhookConfig::default()).unwrap();
        let r = p.post(&url, &[("svix-id", "msg_1".into())], b"{}", Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, 204);
        let req = String::from_utf8(task.await.unwrap()).unwrap().to_ascii_lowercase();
        assert!(req.starts_with("post /hook"), "{req}");
        assert!(req.contains("svix-id: msg_1") && req.contains("content-type: application/json"), "{req}");
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_not_followed() {
        let (url, _task) =
            server(Some("HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n")).await;
        let p = WebhookPoster::new(WebhookConfig::default()).unwrap();
        assert_eq!(p.post(&url, &[], b"{}", Duration::from_secs(5)).await.unwrap().status, 302);
    }

    #[tokio::test]
    async fn a_hanging_receiver_times_out() {
        let (url, _task) = server(None).await;
        let p = WebhookPoster::new(WebhookConfig::default()).unwrap();
        let e = p.post(&url, &[], b"{}", Duration::from_millis(300)).await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
    }

    #[tokio::test]
    async fn the_operator_can_keep_webhooks_off_private_addresses() {
        let p = WebhookPoster::new(WebhookConfig { allow_private: false, ..WebhookConfig::default() }).unwrap();
        let e = p.post("http://127.0.0.1:9/x", &[], b"{}", Duration::from_secs(5)).await.unwrap_err();
        assert!(e.contains("does not deliver"), "{e}");
        let e = p.post("http://localhost:9/x", &[], b"{}", Duration::from_secs(5)).await.unwrap_err();
        assert!(e.contains("does not"), "{e}");
    }
}
