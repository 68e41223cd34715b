//! Web research as a skill: one page fetched through Browserbase's Fetch API and handed back
//! as markdown, bounded, and marked as untrusted text.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{ToolError, cut, required_text};

/// Browserbase's API.
pub const BROWSERBASE_URL: &str = "https://api.browserbase.com";

/// The most page text handed to the agent.
const MAX_PAGE_BYTES: usize = 24 * 1024;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured Browserbase account (the key never reaches the agent).
#[derive(Clone)]
pub struct Research {
    key: String,
    base_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Research {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Research")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Research {
    /// Research through `base_url` with `key`.
    pub fn new(key: String, base_url: &str) -> anyhow::Result<Research> {
        Ok(Research {
            key,
            base_url: base_url.trim_end_matches('/').to_string(),
            http: crate::llm::http_client()?,
        })
    }

    /// `web_fetch`: `POST /v1/fetch` with `format: markdown`.
    pub(super) async fn fetch(&self, args: &Map<String, Value>) -> Result<Value, ToolError> {
        let url = required_text(args, "url", 2000)?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ToolError::Refused(
                "only http(s) URLs can be fetched".into(),
            ));
        }
        let body =
            json!({"url": url, "format": "markdown", "allowRedirects": true, "proxies": false});
        let response = self
            .http
            .post(format!("{}/v1/fetch", self.base_url))
            .header("X-BB-API-Key", &self.key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| ToolError::Failed(format!("the fetch did not complete: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ToolError::Failed(format!("the fetch answer was cut off: {e}")))?;
        if status != 200 {
            let why = match status {
                429 => "too many fetches at once; try again in a moment".to_string(),
                502 => "the page is too large to fetch".to_string(),
                504 => "the page took too long".to_string(),
                _ => format!("Browserbase answered HTTP {status}"),
            };
            return Err(ToolError::Failed(why));
        }
        let answer: Value = serde_json::from_str(&text)
            .map_err(|_| ToolError::Failed("Browserbase's answer was not JSON".into()))?;
        let content = answer
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (content, truncated) = cut(content, MAX_PAGE_BYTES);
        Ok(json!({
            "url": url,
            "status_code": answer.get("statusCode"),
            "content_type": answer.get("contentType"),
            "untrusted_content": content,
            "truncated": truncated,
        }))
    }
}
