//! Traces. Each message is one trace, with the W3C trace id the message carries (or one derived
//! from its id, see `support::msg::trace_id_of`): receiving it, loading the context, the model
//! call, each effect, the design and each coding-agent call are spans of it, and every message
//! it causes carries a `traceparent` naming the span that caused it, so the next service's spans
//! join the same trace. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) set, the
//! spans are exported over OTLP/HTTP (protobuf, or JSON with `OTEL_EXPORTER_OTLP_PROTOCOL=
//! http/json`) by the OpenTelemetry SDK's batch processor, through our own reqwest client;
//! without it every span is a no-op.
//!
//! Span and attribute names follow the OpenTelemetry semantic conventions where they exist
//! (messaging for receiving, GenAI for model and agent calls); the project's own are below.

use std::cell::Cell;
use std::future::Future;

use opentelemetry::trace::{
    FutureExt, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};

/// `gen_ai.operation.name` (GenAI semantic conventions).
pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`.
pub const GEN_AI_PROVIDER: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.usage.input_tokens`.
pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.agent.name`.
pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
/// `gen_ai.conversation.id` (the Claude Code session id).
pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// `messaging.system`.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.destination.name` (the channel).
pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
/// `messaging.operation.type`.
pub const MESSAGING_OPERATION: &str = "messaging.operation.type";
/// `messaging.message.id`.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// The message's `type` (escalation, experiment_request, …).
pub const MESSAGE_TYPE: &str = "fullsend.message.type";
/// The role handling it (orchestrator, fullsend).
pub const ROLE: &str = "fullsend.role";
/// How many times the message was delivered.
pub const DELIVERIES: &str = "fullsend.deliveries";
/// The decision's action.
pub const ACTION: &str = "fullsend.action";
/// An effect's kind (publish, hash_set, append_learning, …) and what it touches.
pub const EFFECT_KIND: &str = "fullsend.effect.kind";
/// An effect's channel, key or file.
pub const EFFECT_TARGET: &str = "fullsend.effect.target";
/// A call's or a design's cost.
pub const COST_USD: &str = "fullsend.cost_usd";
/// A design's mode (single, ralph, direct).
pub const DESIGN_MODE: &str = "fullsend.design.mode";
/// An agent call's label (which task, which attempt).
pub const AGENT_LABEL: &str = "fullsend.agent.label";
/// The experiment a span is about.
pub const EXPERIMENT_ID: &str = "fullsend.experiment.id";

/// Set once an exporter runs: spans whose attributes cost something to build are skipped
/// without it.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when spans are exported (an OTLP endpoint is configured and the exporter started).
pub fn enabled() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    /// The trace id the next root span must have (see [`Ids`]).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Span and trace ids: random, except the root span of a message, whose trace id is the
/// message's own (the SDK asks for it while the span is built, on the same thread).
#[derive(Debug)]
struct Ids(opentelemetry_sdk::trace::RandomIdGenerator);

impl opentelemetry_sdk::trace::IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }
    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// The exporter's HTTP client: our reqwest stack, run on the process's tokio runtime (the
/// SDK's batch processor exports from its own thread, outside any runtime).
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: hyper::Request<hyper::body::Bytes>,
    ) -> Result<hyper::Response<hyper::body::Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        let (parts, body) = request.into_parts();
        let send = async move {
            let mut builder = http.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder.body(body).send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            let mut out = hyper::Response::new(bytes);
            *out.status_mut() = status;
            Ok::<_, reqwest::Error>(out)
        };
        Ok(self.runtime.spawn(send).await??)
    }
}

/// Exporting spans; flush with [`Exporting::shutdown`] before the process ends.
#[derive(Debug)]
pub struct Exporting {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Exporting {
    /// Exports what is still buffered (at most a few seconds), then stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match done.await {
            Ok(Err(err)) => tracing::warn!("flushing traces: {err}"),
            Err(err) => tracing::warn!("flushing traces: {err}"),
            Ok(Ok(())) => {}
        }
    }
}

/// Starts exporting when an OTLP endpoint is configured; None (spans are no-ops) otherwise.
/// Must be called inside a tokio runtime.
pub fn init(service: &str) -> anyhow::Result<Option<Exporting>> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    let protocol = match protocol.trim() {
        "http/json" => Protocol::HttpJson,
        "" | "http/protobuf" => Protocol::HttpBinary,
        other => {
            // Tracing is for watching the work, never a reason to stop it.
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (http/protobuf or http/json): no traces are exported"
            );
            return Ok(None);
        }
    };
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        runtime: tokio::runtime::Handle::current(),
    };
    // The endpoint comes from the standard variables, read by the exporter itself
    // (`…_ENDPOINT` gets `/v1/traces` appended, `…_TRACES_ENDPOINT` is used as it is).
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(protocol)
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            tracing::warn!("the OTLP exporter cannot start ({err}): no traces are exported");
            return Ok(None);
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(Ids(Default::default()))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("exporting traces over OTLP/HTTP ({protocol:?})");
    Ok(Some(Exporting { provider }))
}

fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer_provider().tracer("fullsend")
}

/// An attribute value.
pub type Value = opentelemetry::Value;

/// A span in progress, ended when dropped. Work inside it runs with [`Span::run`], so the spans
/// it starts are its children and the messages it publishes name it as their parent.
#[derive(Debug)]
pub struct Span {
    cx: Context,
}

fn parse_traceparent(tp: &str) -> Option<SpanContext> {
    let mut parts = tp.trim().split('-');
    let (_version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace,
        span,
        flags,
        true,
        TraceState::default(),
    ))
}

impl Span {
    /// The root span of handling one message: in trace `trace_id` (32 hex digits), a child of
    /// the span its `traceparent` names when that is in the same trace.
    pub fn message(
        name: String,
        trace_id: &str,
        traceparent: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> Span {
        let tracer = tracer();
        let builder = tracer
            .span_builder(name)
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes);
        let trace = TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID);
        let parent = traceparent
            .and_then(parse_traceparent)
            .filter(|p| p.trace_id() == trace);
        let span = match parent {
            Some(remote) => {
                let cx = Context::new().with_remote_span_context(remote);
                tracer.build_with_context(builder, &cx)
            }
            None => {
                NEXT_TRACE_ID.with(|next| next.set(Some(trace).filter(|t| *t != TraceId::INVALID)));
                let span = tracer.build_with_context(builder, &Context::new());
                NEXT_TRACE_ID.with(Cell::take);
                span
            }
        };
        Span {
            cx: Context::new().with_span(span),
        }
    }

    /// A child of the span in progress (none: a root in a new trace).
    pub fn child(name: impl Into<String>, kind: SpanKind, attributes: Vec<KeyValue>) -> Span {
        let tracer = tracer();
        let parent = Context::current();
        let builder = tracer
            .span_builder(name.into())
            .with_kind(kind)
            .with_attributes(attributes);
        let span = tracer.build_with_context(builder, &parent);
        Span {
            cx: parent.with_span(span),
        }
    }

    /// Runs `work` inside this span.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        work.with_context(self.cx.clone()).await
    }

    /// Sets an attribute.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.cx
            .span()
            .set_attribute(KeyValue::new(key, value.into()));
    }

    /// Marks the span failed, with why.
    pub fn fail(&self, why: impl std::fmt::Display) {
        self.cx
            .span()
            .set_status(opentelemetry::trace::Status::error(why.to_string()));
    }

    /// The `traceparent` header naming this span, when it is a real one.
    pub fn traceparent(&self) -> Option<String> {
        format_traceparent(self.cx.span().span_context())
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

fn format_traceparent(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of the span in progress, when it belongs to trace `trace_id`.
pub fn current_traceparent(trace_id: &str) -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.trace_id().to_string() == trace_id)
        .then(|| format_traceparent(sc))
        .flatten()
}

/// The span kind of a call out (a model, an agent).
pub const CLIENT: SpanKind = SpanKind::Client;
/// The span kind of work inside the process.
pub const INTERNAL: SpanKind = SpanKind::Internal;

/// An attribute.
pub fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(key, value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_and_written_in_the_w3c_form() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let sc = parse_traceparent(tp).expect("parsed");
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(format_traceparent(&sc).as_deref(), Some(tp));
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-xyz-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
