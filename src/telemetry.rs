//! Logging and the metrics recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global tracing subscriber; a second call (tests) is a no-op.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder. The `metrics` facade is global, so every hub in one
/// process (the tests run several) shares it; counters are therefore process totals.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
}

/// Sets the job backlog gauges every five seconds until `shutdown` (worker nodes):
/// `switchboard_queue_depth{job}` and `switchboard_queue_oldest_seconds{job}`, read from the
/// store, which is the record of what is due whatever the queue backend holds.
pub async fn watch_backlogs(
    store: crate::store::Store,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        let webhooks = store
            .webhook_backlog()
            .await
            .map(|(depth, oldest)| ("deliver_webhook", depth, oldest));
        match store.job_backlogs().await.and_then(|mut b| {
            b.push(webhooks?);
            Ok(b)
        }) {
            Ok(backlogs) => {
                let now = crate::ids::now_ms();
                for (job, depth, oldest) in backlogs {
                    metrics::gauge!("switchboard_queue_depth", "job" => job).set(depth as f64);
                    let age = oldest.map_or(0, |t| (now - t).max(0));
                    metrics::gauge!("switchboard_queue_oldest_seconds", "job" => job)
                        .set(age as f64 / 1000.0);
                }
            }
            Err(e) => tracing::warn!(error = %e, "Could not read the job backlogs."),
        }
    }
}
