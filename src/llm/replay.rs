//! Recorded model replies from a file, for hosts without an API key (the demo,
//! CI smoke tests). Each record may name a `match` substring of the prompt's
//! last block; the first matching record answers, else the first without one.
//! [`Recorder`] captures a real provider's answers, to be written as such a file.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{LlmError, ModelRequest, ModelResponse, Usage};
use crate::support::exit::Fail;

/// One recorded reply.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// Answer only when the prompt's last block contains this text.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    matches: Option<String>,
    /// The reply text.
    text: String,
    /// The thinking text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    /// Reported usage.
    #[serde(default)]
    usage: Usage,
}

/// A provider that answers from recorded replies.
#[derive(Debug, Clone)]
pub struct Replay {
    path: PathBuf,
    records: Vec<Record>,
}

impl Replay {
    /// Loads a JSON Lines file (or a JSON array) of records.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading replay file {}", path.display()))?;
        let records: Vec<Record> = if text.trim_start().starts_with('[') {
            serde_json::from_str(&text)
                .map_err(|e| Fail::usage(format!("replay file {}: {e}", path.display())))?
        } else {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
                .map(|(n, l)| {
                    serde_json::from_str(l).map_err(|e| {
                        Fail::usage(format!(
                            "replay file {} line {}: {e}",
                            path.display(),
                            n + 1
                        ))
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        if records.is_empty() {
            return Err(Fail::usage(format!(
                "replay file {} has no records",
                path.display()
            )));
        }
        Ok(Replay {
            path: path.to_path_buf(),
            records,
        })
    }

    /// The file the replies come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers from the first matching record.
    pub fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let last = request.user.last().map(|b| b.text.as_str()).unwrap_or("");
        let record = self
            .records
            .iter()
            .find(|r| r.matches.as_deref().is_some_and(|m| last.contains(m)))
            .or_else(|| self.records.iter().find(|r| r.matches.is_none()))
            .ok_or_else(|| {
                LlmError::Protocol(format!(
                    "no recorded reply in {} matches this prompt",
                    self.path.display()
                ))
            })?;
        Ok(ModelResponse {
            text: record.text.clone(),
            thinking: record.thinking.clone(),
            usage: record.usage,
            model: request.model.clone(),
            stop_reason: Some("end_turn".into()),
            request_id: None,
            attempts: 1,
            provider: format!("replay:{}", self.path.display()),
        })
    }
}

/// A provider that passes every request on and keeps each answer, so that a run against a
/// real model can be saved as a replay file ([`Recorder::take`], [`replay_line`]).
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Box<super::Provider>,
    answers: std::sync::Arc<std::sync::Mutex<Vec<ModelResponse>>>,
}

impl Recorder {
    /// Records what `inner` answers.
    pub fn new(inner: super::Provider) -> Recorder {
        Recorder {
            inner: Box::new(inner),
            answers: Default::default(),
        }
    }

    /// Whether the recorded provider can be called.
    pub fn ready(&self) -> Result<(), LlmError> {
        self.inner.ready()
    }

    /// The recorded provider's name.
    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Asks the recorded provider and keeps its answer.
    pub async fn complete(
        &self,
        request: &ModelRequest,
        progress: Option<&super::ProgressFn>,
    ) -> Result<ModelResponse, LlmError> {
        let response = Box::pin(self.inner.complete(request, progress)).await?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.push(response.clone());
        }
        Ok(response)
    }

    /// The answers recorded since the last call, oldest first.
    pub fn take(&self) -> Vec<ModelResponse> {
        self.answers
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }
}

/// One line of a replay file: `response`, answering prompts whose last block contains
/// `matches`.
pub fn replay_line(matches: Option<&str>, response: &ModelResponse) -> String {
    serde_json::to_string(&Record {
        matches: matches.map(str::to_string),
        text: response.text.clone(),
        thinking: response.thinking.clone(),
        usage: response.usage,
    })
    .unwrap_or_default()
}
