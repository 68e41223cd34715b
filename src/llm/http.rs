//! What every HTTP provider shares: the HTTP client, one deadline-bounded
//! retry loop (the official SDKs' policy: a capped exponential backoff with
//! jitter, or the server's `retry-after`), and error-text helpers.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{LlmError, ModelResponse};

/// A failed attempt and whether to retry it.
pub(crate) struct Failure {
    /// What went wrong.
    pub(crate) error: LlmError,
    /// Whether another attempt may succeed.
    pub(crate) retry: bool,
    /// A server-requested wait before the next attempt.
    pub(crate) retry_after: Option<Duration>,
}

impl Failure {
    /// A failure worth retrying.
    pub(crate) fn retry(error: LlmError, retry_after: Option<Duration>) -> Self {
        Failure {
            error,
            retry: true,
            retry_after,
        }
    }
    /// A failure that will not go away by retrying.
    pub(crate) fn fatal(error: LlmError) -> Self {
        Failure {
            error,
            retry: false,
            retry_after: None,
        }
    }
}

/// The HTTP client every provider uses (rustls, 5 s connect timeout; the
/// overall deadline is the caller's).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    crate::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("fullsend/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Where a provider sends its requests, with which key (never printed).
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The key, if set.
    pub(crate) api_key: Option<String>,
    /// The base URL, without a trailing slash.
    pub(crate) base_url: String,
    /// The HTTP client.
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint at `base_url`.
    pub(crate) fn new(api_key: Option<String>, base_url: &str) -> anyhow::Result<Self> {
        Ok(Endpoint {
            api_key,
            base_url: base_url.trim_end_matches('/').to_string(),
            http: http_client()?,
        })
    }

    /// Whether a (non-empty) key is configured.
    pub(crate) fn has_key(&self) -> bool {
        self.api_key.as_deref().is_some_and(|k| !k.is_empty())
    }
}

/// Runs `attempt` (given the 1-based attempt number) until it succeeds, fails
/// for good, `max_retries` retries are spent, or `timeout` has passed.
pub(crate) async fn with_retries<F, Fut>(
    timeout: Duration,
    max_retries: u32,
    mut attempt: F,
) -> Result<ModelResponse, LlmError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<ModelResponse, Failure>>,
{
    let deadline = Instant::now() + timeout;
    let mut n: u32 = 0;
    loop {
        n += 1;
        let failure = match tokio::time::timeout_at(deadline.into(), attempt(n)).await {
            Err(_) => return Err(LlmError::Timeout(timeout)),
            Ok(Ok(mut response)) => {
                response.attempts = n;
                return Ok(response);
            }
            Ok(Err(failure)) => failure,
        };
        if !failure.retry || n > max_retries {
            return Err(failure.error);
        }
        let delay = failure.retry_after.unwrap_or_else(|| backoff(n));
        if deadline.saturating_duration_since(Instant::now()) <= delay {
            return Err(LlmError::Timeout(timeout));
        }
        tracing::warn!(
            "{}; retry {} of {} in {:.1}s",
            failure.error,
            n,
            max_retries,
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
}

/// `min(0.5 s × 2^n, 8 s)` × jitter in [0.75, 1].
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = (0.5 * 2f64.powi(attempt.saturating_sub(1) as i32)).min(8.0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.75 + 0.25 * (f64::from(nanos % 1000) / 1000.0);
    Duration::from_secs_f64(base * jitter)
}

/// A server-requested wait, honoured when 0 < v ≤ 60 s (so one slow quota
/// cannot stall a decision).
pub(crate) fn within_limit(d: Duration) -> Option<Duration> {
    (d > Duration::ZERO && d <= Duration::from_secs(60)).then_some(d)
}

/// `retry-after-ms`, else `retry-after` (seconds or an HTTP date).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return within_limit(Duration::from_secs_f64((ms / 1000.0).max(0.0)));
    }
    let value = header(headers, "retry-after")?;
    if let Ok(secs) = value.trim().parse::<f64>() {
        return within_limit(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = jiff::fmt::rfc2822::parse(value.trim()).ok()?.timestamp();
    let secs = when.as_second() - jiff::Timestamp::now().as_second();
    within_limit(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// A response header as text.
pub(crate) fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A reqwest error with its causes. The URL it names holds no secret: keys
/// travel in headers.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("600"),
        );
        assert_eq!(retry_after(&h), None);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after-ms",
            reqwest::header::HeaderValue::from_static("1500"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        assert!(backoff(1) <= Duration::from_millis(500));
        assert!(backoff(10) <= Duration::from_secs(8));
    }
}
