//! The process's Prometheus metrics: counters and a histogram that the listeners and the model
//! and agent calls add to, and gauges set just before each scrape, encoded in the text format
//! (OpenMetrics) through `prometheus-client`. Labels are few and bounded: a role, an outcome, a
//! model name, a token kind; never a message or experiment id.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every series fullsend exports.
struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    decision_seconds: Histogram,
    tokens: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
    agent_runs: Family<Labels, Counter>,
    pending: Family<Labels, Gauge>,
    dead_letters: Family<Labels, Gauge>,
    listeners_alive: Family<Labels, Gauge>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let messages = Family::<Labels, Counter>::default();
        registry.register(
            "fullsend_messages",
            "Messages handled, by role and outcome",
            messages.clone(),
        );
        let decision_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "fullsend_decision_seconds",
            "Time from a message to its decision",
            decision_seconds.clone(),
        );
        let tokens = Family::<Labels, Counter>::default();
        registry.register(
            "fullsend_model_tokens",
            "Model tokens, by role, model and kind (input, output, cache_read, cache_write)",
            tokens.clone(),
        );
        let cost = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "fullsend_cost_usd",
            "Model and agent spend in USD, by role and model",
            cost.clone(),
        );
        let agent_runs = Family::<Labels, Counter>::default();
        registry.register(
            "fullsend_agent_runs",
            "Coding-agent calls, by outcome",
            agent_runs.clone(),
        );
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "fullsend_stream_pending",
            "Entries delivered and not yet acknowledged, by role",
            pending.clone(),
        );
        let dead_letters = Family::<Labels, Gauge>::default();
        registry.register(
            "fullsend_dead_letters",
            "Entries in the dead-letter stream, by role",
            dead_letters.clone(),
        );
        let listeners_alive = Family::<Labels, Gauge>::default();
        registry.register(
            "fullsend_listeners_alive",
            "Listeners with a fresh heartbeat, by role",
            listeners_alive.clone(),
        );
        Metrics {
            registry,
            messages,
            decision_seconds,
            tokens,
            cost,
            agent_runs,
            pending,
            dead_letters,
            listeners_alive,
        }
    })
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// One message handled by `role`, ending in `outcome` (`processed`, `failed`, `dead_lettered`, ...).
pub fn message(role: &str, outcome: &str) {
    metrics()
        .messages
        .get_or_create(&labels(&[("role", role), ("outcome", outcome)]))
        .inc();
}

/// How long one decision took.
pub fn decision_seconds(seconds: f64) {
    metrics().decision_seconds.observe(seconds);
}

/// Tokens of one model call.
pub fn tokens(role: &str, model: &str, kind: &str, n: u64) {
    if n > 0 {
        metrics()
            .tokens
            .get_or_create(&labels(&[("role", role), ("model", model), ("kind", kind)]))
            .inc_by(n);
    }
}

/// The cost of one model or agent call.
pub fn cost(role: &str, model: &str, usd: f64) {
    if usd.is_finite() && usd > 0.0 {
        metrics()
            .cost
            .get_or_create(&labels(&[("role", role), ("model", model)]))
            .inc_by(usd);
    }
}

/// One coding-agent call ending in `outcome` (`ok`, `error`, `timeout`, `stalled`, ...).
pub fn agent_run(outcome: &str) {
    metrics()
        .agent_runs
        .get_or_create(&labels(&[("outcome", outcome)]))
        .inc();
}

/// The queue gauges of one role, read from Redis just before a scrape.
pub fn queue(role: &str, pending: i64, dead_letters: i64, listeners_alive: i64) {
    let m = metrics();
    let role = labels(&[("role", role)]);
    m.pending.get_or_create(&role).set(pending);
    m.dead_letters.get_or_create(&role).set(dead_letters);
    m.listeners_alive.get_or_create(&role).set(listeners_alive);
}

/// The content type of [`render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series in the text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_are_named_and_labelled_as_documented() {
        // Other unit tests add to the same process-wide series: unique labels here.
        message("unit-test-role", "processed");
        decision_seconds(0.3);
        tokens("unit-test-role", "unit-test-model", "input", 1000);
        cost("unit-test-role", "unit-test-model", 0.25);
        agent_run("ok");
        queue("unit-test-role", 2, 1, 1);
        let text = render();
        for expected in [
            "fullsend_messages_total{role=\"unit-test-role\",outcome=\"processed\"} 1",
            "fullsend_decision_seconds_bucket",
            "fullsend_model_tokens_total{role=\"unit-test-role\",model=\"unit-test-model\",kind=\"input\"} 1000",
            "fullsend_cost_usd_total{role=\"unit-test-role\",model=\"unit-test-model\"} 0.25",
            "fullsend_agent_runs_total{outcome=\"ok\"}",
            "fullsend_stream_pending{role=\"unit-test-role\"} 2",
            "fullsend_dead_letters{role=\"unit-test-role\"} 1",
            "fullsend_listeners_alive{role=\"unit-test-role\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
