//! Optional OpenTelemetry trace export (OTLP over HTTP, protobuf), off unless `telemetry.otlp_endpoint` is
//! set. One trace per event: the intake's span starts it (continuing a webhook's W3C `traceparent`), its
//! context is journaled with the event, and the job that handles the event continues it, also after a
//! restart. Coolify calls and PocketBase requests are spans of the job.
//!
//! The exporter sends over reqwest 0.13, the bridge's one HTTP stack (no tonic, no second hyper).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetrySettings;

const TRACEPARENT: &str = "traceparent";
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once an exporter exists in this process: only then is a job's trace context worth a journal read.
static EXPORTING: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The tracer provider of an exporting bridge; shut it down to flush what is buffered.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter for `settings`, or `None` when export is off. Needs a tokio runtime (its batch task).
    pub fn new(settings: &TelemetrySettings) -> Result<Option<Exporter>, OtelError> {
        let Some(endpoint) = &settings.otlp_endpoint else {
            return Ok(None);
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtelError::Client(e.to_string()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_scheduled_delay(settings.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(Some(Exporter { provider }))
    }

    /// The layer that turns the bridge's `tracing` spans into exported spans.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("cf-bridge"))
    }

    /// Sends what is buffered and stops; spans ended later are dropped.
    pub async fn shutdown(self) {
        // The provider's shutdown blocks until its batch task (on this runtime) has flushed.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly"),
            Err(e) => tracing::warn!(error = %e, "OTLP exporter shutdown failed"),
        }
    }
}

/// Whether any exporter was built in this process.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Makes `span` continue the trace of a W3C `traceparent`; an invalid one is ignored (a new trace starts).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceparent` of `span`, when it is exported (none otherwise).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn without_an_exporter_nothing_is_traced() {
        assert!(Exporter::new(&TelemetrySettings::default()).expect("off").is_none());
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("intake");
        continue_trace(&span, &format!("00-{TRACE_ID}-00f067aa0ba902b7-01"));
        assert_eq!(traceparent(&span), None);
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_an_invalid_one_starts_a_trace() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let span = tracing::info_span!("intake");
        continue_trace(&span, &format!("00-{TRACE_ID}-00f067aa0ba902b7-01"));
        let own = traceparent(&span).expect("a traced span");
        assert!(own.starts_with(&format!("00-{TRACE_ID}-")), "{own}");
        assert!(
            !own.contains("00f067aa0ba902b7"),
            "the span's own id, not the sender's: {own}"
        );
        for bad in [
            "junk",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let span = tracing::info_span!("intake");
            continue_trace(&span, bad);
            let own = traceparent(&span).expect("a new trace");
            assert!(
                !own.contains(TRACE_ID) && !own.contains("-00000000000000000000000000000000-"),
                "{bad}: {own}"
            );
        }
    }
}
