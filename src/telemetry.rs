//! Tracing setup: JSON lines in production, readable text in development; `RUST_LOG` wins over the config.

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The bridge's log subscriber writing to `writer`: the global one in production, one per bridge when
/// several run in one process (tests).
pub fn dispatch<W>(format: LogFormat, level: &str, writer: W) -> Dispatch
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
        LogFormat::Json => Dispatch::new(builder.json().flatten_event(true).with_current_span(false).finish()),
        LogFormat::Pretty => Dispatch::new(builder.compact().finish()),
    }
}

/// Installs the global subscriber (and the bridge from the `log` crate). Safe to call more than once
/// (later calls are no-ops).
pub fn init(format: LogFormat, level: &str) {
    let _ = dispatch(format, level, std::io::stderr).try_init();
}
