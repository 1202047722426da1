//! Trace ids: every HTTP request runs in a span carrying a `trace_id` (the
//! W3C `traceparent` header's, or a new one), so JSON log lines of that
//! request carry it. An API publish that came with a `traceparent` keeps
//! its trace id in the envelope (`traceId`), so the nodes that deliver the
//! message log it too: one id follows the message through publish, broker
//! and delivery.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The trace of one HTTP request.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace {
    /// 32 lowercase hex digits.
    pub id: String,
    /// The id came from the caller's `traceparent` (and should travel on).
    pub propagated: bool,
}

/// A trace id kept in 16 bytes rather than a heap string, since a
/// connection holds one for its life. Displays as 32 lowercase hex
/// digits, or as nothing when there is none (0, which W3C forbids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TraceId(u128);

impl TraceId {
    /// From 32 hex digits (a [`RequestTrace`] id); none if it is not that.
    pub(crate) fn parse(hex: &str) -> Self {
        if hex.len() != 32 {
            return Self::default();
        }
        Self(u128::from_str_radix(hex, 16).unwrap_or(0))
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, "{:032x}", self.0)
        }
    }
}

/// The trace id of a W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), if valid.
pub(crate) fn parse_traceparent(header: &str) -> Option<String> {
    let mut parts = header.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version == "ff" || !hex(version, 2) || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

/// A new random trace id.
pub(crate) fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Middleware: runs the request in a `request` span with its trace id.
pub(crate) async fn trace_requests(mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let from_header = header.and_then(parse_traceparent);
    let span = tracing::info_span!(
        "request",
        trace_id = tracing::field::Empty,
        method = %req.method(),
        path = %req.uri().path(),
    );
    // With OpenTelemetry export on, the span joins the caller's trace and
    // the logged id is the exported one.
    #[cfg(feature = "otlp")]
    let exported = crate::otel::attach(&span, header);
    #[cfg(not(feature = "otlp"))]
    let exported: Option<String> = None;
    let trace = RequestTrace {
        propagated: from_header.is_some(),
        id: from_header.or(exported).unwrap_or_else(new_trace_id),
    };
    span.record("trace_id", trace.id.as_str());
    req.extensions_mut().insert(trace);
    next.run(req).instrument(span).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            parse_traceparent(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(),
            Some(id)
        );
        assert_eq!(
            parse_traceparent(&format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase())).as_deref(),
            Some(id)
        );
        for bad in [
            "",
            "00-xyz-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            &format!("00-{id}-0000000000000000-01"),
            &format!("ff-{id}-00f067aa0ba902b7-01"),
            &format!("00-{id}-00f067aa0ba902b7-01-extra"),
            &format!("00-{id}-00f067aa0ba902b7"),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert_eq!(new_trace_id().len(), 32);
    }

    #[test]
    fn trace_id_round_trips_as_32_hex_digits() {
        for id in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00000000000000000000000000000001",
            &new_trace_id(),
        ] {
            assert_eq!(TraceId::parse(id).to_string(), id);
        }
        for none in [
            "",
            "xyz",
            "4bf92f3577b34da6",
            "00000000000000000000000000000000",
        ] {
            assert_eq!(TraceId::parse(none).to_string(), "", "{none}");
        }
    }
}
