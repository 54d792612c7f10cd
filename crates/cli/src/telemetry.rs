//! OpenTelemetry export (feature `otel`): when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`http://collector:4318`), every span (a transfer's send, credit and settlement, each
//! carrying its `tx_no`) goes to that collector over OTLP/HTTP, as service
//! `OTEL_SERVICE_NAME` (default `txbank`).

use opentelemetry::trace::TracerProvider;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The export layer, or `None` when no collector is configured or the exporter cannot
/// be built (said on stderr; logging goes on without it).
pub(crate) fn layer<S>() -> Option<impl Layer<S>>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OpenTelemetry export disabled: {error}");
            return None;
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "txbank".into());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("txbank");
    opentelemetry::global::set_tracer_provider(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}
