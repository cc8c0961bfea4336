//! Tracing setup: JSON lines in production, readable text in development; `RUST_LOG` wins over the config.

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::otel::Exporter;

/// The bridge's log subscriber writing to `writer`: the global one in production, one per bridge when
/// several run in one process (tests).
pub fn dispatch<W>(format: LogFormat, level: &str, writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    dispatch_exporting(format, level, writer, None)
}

/// Like [`dispatch`], with the spans also exported through `exporter` (OpenTelemetry).
pub fn dispatch_exporting<W>(format: LogFormat, level: &str, writer: W, exporter: Option<&Exporter>) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE);
    match format {
        LogFormat::Json => with_exporter(
            builder.json().flatten_event(true).with_current_span(false).finish(),
            exporter,
        ),
        LogFormat::Pretty => with_exporter(builder.compact().finish(), exporter),
    }
}

fn with_exporter<S>(subscriber: S, exporter: Option<&Exporter>) -> Dispatch
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    match exporter {
        Some(exporter) => Dispatch::new(subscriber.with(exporter.layer())),
        None => Dispatch::new(subscriber),
    }
}

/// Installs the global subscriber (and the bridge from the `log` crate). Safe to call more than once
/// (later calls are no-ops).
pub fn init(format: LogFormat, level: &str, exporter: Option<&Exporter>) {
    let _ = dispatch_exporting(format, level, std::io::stderr, exporter).try_init();
}
