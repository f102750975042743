//! Telemetry for every Release Pilot process: structured logs (pretty or JSON), OTLP/gRPC traces
//! when an endpoint is configured, a Prometheus recorder, and W3C trace context carried through
//! gRPC metadata and NATS headers so one trace spans gateway → service → bus → consumer.

pub mod grpc;
pub mod metric_names;
pub mod propagation;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use rp_config::TelemetryConfig;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter: {0}")]
    Filter(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Otlp(String),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Flushes buffered spans when dropped or shut down.
#[must_use = "dropping the guard flushes and stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports the spans still buffered; call before the process exits.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {err}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global logger (and tracer when `otlp_endpoint` is set). Must run inside a tokio
/// runtime because the OTLP exporter is a tonic client.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let fmt_layer = match config.log_format.as_str() {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        _ => tracing_subscriber::fmt::layer().with_target(true).boxed(),
    };

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let (otel_layer, provider) = match config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let provider = tracer_provider(endpoint, &config.service_name, config.trace_sample_ratio)?;
            let tracer = provider.tracer("release-pilot");
            opentelemetry::global::set_tracer_provider(provider.clone());
            (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
        }
        None => (None, None),
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(
    endpoint: &str,
    service_name: &str,
    ratio: f64,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .build())
}

/// The process-wide Prometheus recorder. Installed on first call; later calls (several services in
/// one process, or many tests) share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .expect("static bucket list is not empty");
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder was installed first (only possible in tests): keep a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            metric_names::describe_all();
            spawn_upkeep(handle.clone(), UPKEEP_INTERVAL);
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep (or a scrape) folds it into the
/// buckets: without a Prometheus scraping `/metrics`, memory grew with every request served (the
/// router alone records one sample per proxied request). `install_recorder` leaves upkeep to the
/// caller. A plain thread, so it runs whatever runtime (or none) the process has.
fn spawn_upkeep(handle: PrometheusHandle, every: std::time::Duration) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(every);
            handle.run_upkeep();
        }
    });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "metrics upkeep thread did not start; histograms fold only when scraped");
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Upkeep folds pending samples into the buckets without losing any.
    #[test]
    fn upkeep_keeps_every_histogram_sample() {
        let recorder = PrometheusBuilder::new().set_buckets(&[0.1, 1.0]).unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for n in 0..1000 {
                metrics::histogram!("upkeep_test_seconds").record(if n % 2 == 0 { 0.05 } else { 0.5 });
            }
        });
        handle.run_upkeep();
        let rendered = handle.render();
        assert!(rendered.contains("upkeep_test_seconds_count 1000"), "{rendered}");
        assert!(rendered.contains("upkeep_test_seconds_bucket{le=\"0.1\"} 500"), "{rendered}");
    }
}
