//! Finding what the context already knows about an idea, without a model call: past
//! experiments (active and archived) and learnings (strategic and tactical), ranked by BM25
//! against the idea's words.

use std::collections::HashMap;

use bm25::{Embedder, EmbedderBuilder, Scorer, Tokenizer};
use serde::Serialize;

use super::loader::Context;

/// The most similar experiments or relevant learnings a brief carries.
pub const MAX_MATCHES: usize = 5;

/// The least share of the best match's score a match needs to be listed.
const MIN_SHARE_OF_BEST: f32 = 0.25;

/// The longest text of one match, in characters: a brief stays a brief.
const MAX_TEXT_CHARS: usize = 400;

/// A past experiment that resembles the idea.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimilarExperiment {
    /// Its id.
    pub experiment_id: String,
    /// What it tested (its name when it has no hypothesis).
    pub hypothesis: String,
    /// Its lifecycle state (`archived`, `running`, …).
    pub state: String,
    /// Its aggregated metrics, when the Redis Agent recorded any.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub results: HashMap<String, String>,
    /// Why it was archived, when it was.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub archived_reason: String,
    /// The BM25 score (higher is closer), rounded.
    pub score: f64,
}

/// A learning that bears on the idea.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RelevantLearning {
    /// `strategic` (learnings.md) or `tactical` (FULLSEND's, in Redis).
    pub source: &'static str,
    /// The learning.
    pub text: String,
    /// The experiment it came from (tactical learnings).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub experiment_id: String,
    /// The BM25 score (higher is closer), rounded.
    pub score: f64,
}

/// Words, lower-cased, without the commonest English ones and a plural `s`: enough for ideas
/// and hypotheses, which are short and plain.
#[derive(Debug, Default, Clone, Copy)]
struct Words;

const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "are", "was", "were", "will", "what",
    "who", "how", "why", "our", "their", "they", "them", "you", "your", "but", "not", "can",
    "into", "than", "then", "its", "has", "have", "had", "via", "about", "more", "most", "some",
    "any", "all", "each", "per", "out", "over", "get", "try", "use", "using", "test", "testing",
    "if", "we", "a", "an", "of", "to", "in", "on", "or", "is", "be", "it", "by", "as", "at",
];

impl Tokenizer for Words {
    fn tokenize(&self, input_text: &str) -> Vec<String> {
        input_text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 2)
            .map(str::to_lowercase)
            .filter(|w| !STOP_WORDS.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
            .map(|w| match w.strip_suffix('s') {
                Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_string(),
                _ => w,
            })
            .collect()
    }
}

/// Ranks `documents` against `query`: the indices of the best `limit` with a score above 0 and
/// at least a quarter of the best one's, best first, ties in document order (so the same
/// context gives the same brief).
pub fn rank(documents: &[String], query: &str, limit: usize) -> Vec<(usize, f32)> {
    if documents.is_empty() || Words.tokenize(query).is_empty() {
        return Vec::new();
    }
    let corpus: Vec<&str> = documents.iter().map(String::as_str).collect();
    let embedder: Embedder<u32, Words> =
        EmbedderBuilder::with_tokenizer_and_fit_to_corpus(Words, &corpus).build();
    let mut scorer = Scorer::<usize>::new();
    for (i, doc) in documents.iter().enumerate() {
        scorer.upsert(&i, embedder.embed(doc));
    }
    let mut matches: Vec<(usize, f32)> = scorer
        .matches(&embedder.embed(query))
        .into_iter()
        .filter(|m| m.score > 0.0)
        .map(|m| (m.id, m.score))
        .collect();
    matches.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    // A document far below the best shares a common word or two with the query, not its
    // topic: it would only dilute the brief.
    let floor = matches.first().map_or(0.0, |m| m.1 * MIN_SHARE_OF_BEST);
    matches.retain(|m| m.1 >= floor);
    matches.truncate(limit);
    matches
}

fn rounded(score: f32) -> f64 {
    (f64::from(score) * 100.0).round() / 100.0
}

/// The past experiments most like `query`, from the active and the archived ones.
pub fn similar_experiments(ctx: &Context, query: &str) -> Vec<SimilarExperiment> {
    let all: Vec<_> = ctx.experiments.iter().chain(ctx.archived.iter()).collect();
    // The id's words count too: `exp_20260115_github_stargazers` is about GitHub stargazers.
    let documents: Vec<String> = all
        .iter()
        .map(|e| format!("{} {} {}", e.id, e.name, e.hypothesis))
        .collect();
    rank(&documents, query, MAX_MATCHES)
        .into_iter()
        .map(|(i, score)| {
            let e = all[i];
            let results = ctx
                .metrics
                .iter()
                .find(|m| m.experiment_id == e.id)
                .map(|m| {
                    m.fields
                        .iter()
                        .take(12)
                        .map(|(k, v)| (k.clone(), super::prompt::one_line(v, 60)))
                        .collect()
                })
                .unwrap_or_default();
            SimilarExperiment {
                experiment_id: e.id.clone(),
                hypothesis: super::prompt::one_line(
                    if e.hypothesis.is_empty() {
                        &e.name
                    } else {
                        &e.hypothesis
                    },
                    MAX_TEXT_CHARS,
                ),
                state: e.state.clone(),
                results,
                archived_reason: super::prompt::one_line(&e.archived_reason, 200),
                score: rounded(score),
            }
        })
        .collect()
}

/// The entries of learnings.md: each `## ` section, headline and evidence together.
pub fn strategic_entries(learnings: &str) -> Vec<String> {
    learnings
        .split("\n## ")
        .skip(1)
        .map(|e| format!("## {}", e.trim()))
        .filter(|e| e.len() > 3)
        .collect()
}

/// The learnings, strategic and tactical, most relevant to `query`.
pub fn relevant_learnings(ctx: &Context, query: &str) -> Vec<RelevantLearning> {
    let strategic = strategic_entries(&ctx.learnings);
    let mut documents = strategic.clone();
    documents.extend(ctx.tactical_learnings.iter().map(|t| t.text.clone()));
    rank(&documents, query, MAX_MATCHES)
        .into_iter()
        .map(|(i, score)| match i.checked_sub(strategic.len()) {
            None => RelevantLearning {
                source: "strategic",
                text: super::prompt::one_line(&strategic[i], MAX_TEXT_CHARS),
                experiment_id: String::new(),
                score: rounded(score),
            },
            Some(t) => {
                let tactical = &ctx.tactical_learnings[t];
                RelevantLearning {
                    source: "tactical",
                    text: super::prompt::one_line(&tactical.text, MAX_TEXT_CHARS),
                    experiment_id: tactical.experiment_id.clone(),
                    score: rounded(score),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::context::loader::{Experiment, Metrics, Tactical};

    fn experiment(id: &str, hypothesis: &str, state: &str) -> Arc<Experiment> {
        Arc::new(Experiment {
            id: id.into(),
            name: hypothesis.chars().take(30).collect(),
            state: state.into(),
            hypothesis: hypothesis.into(),
            ..Default::default()
        })
    }

    fn context() -> Context {
        Context {
            learnings: Arc::new(
                "# Strategic Learnings\n\n## 2026-01-15\n**Event-based targeting outperforms cold lists**\n- GitHub stargazer campaign: 15% response rate\n\n## 2026-01-14\n**CTOs respond, CFOs ignore**\n- 50 emails to CTOs: 8 responses\n".into(),
            ),
            experiments: Arc::new(vec![
                experiment("exp_1_linkedin", "LinkedIn posts bring CFO demos", "running"),
                experiment("exp_2_yc", "YC founders answer short emails", "ready"),
            ]),
            archived: Arc::new(vec![experiment(
                "exp_0_github_stargazers",
                "Stargazers of competing GitHub repositories reply to a cold email",
                "archived",
            )]),
            metrics: Arc::new(vec![Arc::new(Metrics {
                experiment_id: "exp_0_github_stargazers".into(),
                fields: [("response_rate".to_string(), "0.02".to_string())].into(),
            })]),
            tactical_learnings: Arc::new(vec![Arc::new(Tactical {
                key: "learnings:tactical:1".into(),
                text: "Stargazer lists go stale within a week; scrape on the day of sending".into(),
                experiment_id: "exp_0_github_stargazers".into(),
                created_at: String::new(),
            })]),
            ..Default::default()
        }
    }

    #[test]
    fn the_archived_experiment_on_the_same_topic_comes_first_with_its_results() {
        let ctx = context();
        let found = similar_experiments(&ctx, "Scrape GitHub stargazers of our competitors");
        assert_eq!(
            found[0].experiment_id, "exp_0_github_stargazers",
            "{found:?}"
        );
        assert_eq!(found[0].state, "archived");
        assert_eq!(found[0].results["response_rate"], "0.02");
        assert!(
            found.iter().all(|e| e.experiment_id != "exp_2_yc"),
            "{found:?}"
        );
    }

    #[test]
    fn learnings_of_both_kinds_are_ranked_and_unrelated_ones_left_out() {
        let ctx = context();
        let found = relevant_learnings(&ctx, "GitHub stargazer outreach");
        let sources: Vec<&str> = found.iter().map(|l| l.source).collect();
        assert!(
            sources.contains(&"strategic") && sources.contains(&"tactical"),
            "{found:?}"
        );
        assert!(
            found.iter().all(|l| !l.text.contains("CFOs ignore")),
            "{found:?}"
        );
        assert!(
            relevant_learnings(&ctx, "the and of").is_empty(),
            "stop words match nothing"
        );
        assert!(relevant_learnings(&Context::default(), "github").is_empty());
    }

    #[test]
    fn the_same_context_gives_the_same_order() {
        let ctx = context();
        let first = similar_experiments(&ctx, "email founders cold");
        for _ in 0..5 {
            assert_eq!(similar_experiments(&ctx, "email founders cold"), first);
        }
    }
}
