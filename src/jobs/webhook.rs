//! Job webhooks: when a job with a `callback_url` ends, its view is POSTed there,
//! signed as the Standard Webhooks spec describes (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`).
//!
//! Deliveries come from the queue's outbox, so they survive restarts and are retried
//! with backoff. Callbacks may not reach loopback, private, link-local or other
//! internal addresses (unless configured): literal IPs are refused when the job is
//! submitted, and every name is checked again when it is resolved for delivery, so
//! DNS cannot be used to point a callback inside the network. Redirects are not
//! followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::model::JobView;
use super::queue::{DeliveryOutcome, DynQueue};
use crate::config::WebhookConfig;
use crate::config::secret::decode_webhook_secret;

/// Longest delay between two delivery attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// How often an idle deliverer looks for due deliveries.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// `v1,<base64 signature>` for one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Whether an address is one a callback must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // 100.64.0.0/10, carrier-grade NAT
                || (a == 100 && (64..128).contains(&b))
                // 198.18.0.0/15, benchmarking
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
        }
    }
}

/// Checks a callback URL when a job is submitted.
pub fn check_callback_url(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    let literal = match parsed.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(d)) => {
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) {
                return Err("callbacks to loopback hosts are not allowed".into());
            }
            None
        }
    };
    if let Some(ip) = literal
        && !allow_private
        && is_internal(ip)
    {
        return Err(
            "callbacks to loopback, private or link-local addresses are not allowed".into(),
        );
    }
    Ok(parsed)
}

/// Resolves callback hosts and drops internal addresses, so that a public name
/// pointing inside the network cannot be reached.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub struct Deliverer {
    queue: DynQueue,
    client: reqwest::Client,
    key: Vec<u8>,
    config: WebhookConfig,
}

impl Deliverer {
    pub fn new(queue: DynQueue, secret: &str, config: WebhookConfig) -> Result<Self, String> {
        let key = decode_webhook_secret(secret)?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("media-node/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Deliverer {
            queue,
            client,
            key,
            config,
        })
    }

    /// Delivers due webhooks until `stop` fires.
    pub fn spawn(self, wake: Arc<Notify>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(
            async move {
                loop {
                    let delivered = self.deliver_next().await;
                    if delivered {
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = wake.notified() => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
            .instrument(info_span!("webhooks")),
        )
    }

    /// Sends one due delivery, if any. Returns whether there was one.
    async fn deliver_next(&self) -> bool {
        // Long enough to cover one attempt, so that no other node sends it meanwhile.
        let lease = Duration::from_millis(self.config.timeout_ms * 2 + 1000);
        let delivery = match self.queue.claim_webhook(lease).await {
            Ok(Some(d)) => d,
            Ok(None) => return false,
            Err(err) => {
                warn!(error = %err, "cannot read webhook outbox");
                return false;
            }
        };
        let span = info_span!("webhook", job_id = %delivery.job_id, attempt = delivery.attempts);
        let outcome = async {
            let result = self.send(&delivery).await;
            match result {
                Ok(()) => {
                    info!(url = %delivery.url, "webhook delivered");
                    DeliveryOutcome::Delivered
                }
                Err(error) if delivery.attempts >= self.config.max_attempts => {
                    warn!(%error, "webhook delivery failed; giving up");
                    DeliveryOutcome::GaveUp { error }
                }
                Err(error) => {
                    let delay = self.retry_delay(delivery.attempts);
                    warn!(%error, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
                    DeliveryOutcome::RetryAfter { error, delay }
                }
            }
        }
        .instrument(span)
        .await;
        match self.queue.finish_webhook(&delivery, outcome).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(job_id = %delivery.job_id, "webhook attempt outlived its lease; another attempt was made")
            }
            Err(err) => warn!(error = %err, "cannot record webhook outcome"),
        }
        true
    }

    async fn send(&self, delivery: &super::queue::WebhookDelivery) -> Result<(), String> {
        let job = self
            .queue
            .get(delivery.job_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the job no longer exists")?;
        check_callback_url(&delivery.url, self.config.allow_private)?;
        let body = serde_json::to_vec(&JobView::from(&job)).map_err(|e| e.to_string())?;
        let msg_id = format!("msg_{}", delivery.id.simple());
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&self.key, &msg_id, timestamp, &body);
        let response = self
            .client
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered {}", response.status()))
        }
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let factor = 5u64.saturating_pow(attempts.saturating_sub(1));
        Duration::from_millis(self.config.retry_base_ms.saturating_mul(factor)).min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // Test vector from the Standard Webhooks reference implementations.
        let key = decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn callback_urls() {
        assert!(check_callback_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_callback_url("http://169.254.169.254/latest", false).is_err());
        assert!(check_callback_url("http://localhost:8080/", false).is_err());
        assert!(check_callback_url("http://[::1]/", false).is_err());
        assert!(check_callback_url("ftp://example.com/", false).is_err());
        assert!(check_callback_url("https://user:pw@example.com/", false).is_err());
        assert!(check_callback_url("http://127.0.0.1:9/", true).is_ok());
    }
}
