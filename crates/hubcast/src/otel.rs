//! OpenTelemetry export (cargo feature `otlp`, setting `otlp_endpoint`):
//! the tracing spans (`request`, `conn`) and the events inside them go to an
//! OTLP/HTTP collector. A request with a W3C `traceparent` becomes a child
//! of the caller's span, so hubcast appears inside the caller's trace; the
//! `trace_id` in the log lines is the exported trace's id.

use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The exporter; flushes what is buffered on [`Otlp::shutdown`].
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Sends the spans still buffered and stops the exporter thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("hubcast: OTLP exporter did not shut down cleanly: {e}");
        }
    }
}

/// A tracing layer exporting to `endpoint` (the full URL, e.g.
/// `http://127.0.0.1:4318/v1/traces`), with this node as the
/// `service.instance.id`. Batching follows the `OTEL_BSP_*` variables.
pub fn layer<S>(endpoint: &str, node: &str) -> anyhow::Result<(impl Layer<S>, Otlp)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let resource = Resource::builder()
        .with_service_name("hubcast")
        .with_attribute(KeyValue::new("service.instance.id", node.to_string()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("hubcast");
    Ok((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Otlp { provider },
    ))
}

/// Makes `span` a child of the caller's span named by a valid `traceparent`
/// header; then returns the trace id the span is exported under (None when
/// no exporter is active).
pub(crate) fn attach(span: &tracing::Span, traceparent: Option<&str>) -> Option<String> {
    if let Some(cx) = traceparent.and_then(remote_parent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
    }
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then(|| format!("{id:032x}"))
}

/// The caller's span context from a `traceparent` header (validated by
/// [`crate::trace::parse_traceparent`]).
fn remote_parent(header: &str) -> Option<SpanContext> {
    crate::trace::parse_traceparent(header)?;
    let mut parts = header.trim().split('-').skip(1);
    let trace = TraceId::from_hex(parts.next()?).ok()?;
    let parent = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some(SpanContext::new(
        trace,
        parent,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_parents_from_traceparent() {
        let cx = remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid header");
        assert_eq!(
            format!("{:032x}", cx.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(format!("{:016x}", cx.span_id()), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        assert!(remote_parent("00-xyz-00f067aa0ba902b7-01").is_none());
        // Without an exporter the span has no OpenTelemetry trace id.
        assert_eq!(attach(&tracing::Span::none(), None), None);
    }
}
