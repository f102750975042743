//! gRPC server instrumentation (span per call with the caller's trace as parent, Prometheus
//! metrics) and a client interceptor that sends the current trace context.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use pin_project_lite::pin_project;
use tracing::{Instrument as _, instrument::Instrumented};

use crate::{metric_names, propagation};

/// Tower layer for tonic servers.
#[derive(Clone, Debug, Default)]
pub struct GrpcServerTelemetryLayer;

impl<S> tower::Layer<S> for GrpcServerTelemetryLayer {
    type Service = GrpcServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerTelemetry { inner }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcServerTelemetry<S> {
    inner: S,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for GrpcServerTelemetry<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = GrpcServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        if let Some(request_id) = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()) {
            span.record("request_id", request_id);
        }
        propagation::set_remote_parent(&span, propagation::extract_headers(request.headers()));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        GrpcServerFuture { inner: future.instrument(span), service, method, started: Instant::now() }
    }
}

pin_project! {
    pub struct GrpcServerFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        service: String,
        method: String,
        started: Instant,
    }
}

impl<F, ResBody, E> Future for GrpcServerFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        // Errors come back "trailers-only", with grpc-status in the headers; successes carry it in
        // trailers, so a missing header means OK for unary calls.
        let code = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32),
            Err(_) => tonic::Code::Unknown,
        };
        let code_name = code_name(code);
        let elapsed = this.started.elapsed().as_secs_f64();
        metrics::counter!(metric_names::GRPC_SERVER_HANDLED_TOTAL,
            "grpc_service" => this.service.clone(), "grpc_method" => this.method.clone(), "grpc_code" => code_name)
        .increment(1);
        metrics::histogram!(metric_names::GRPC_SERVER_HANDLING_SECONDS,
            "grpc_service" => this.service.clone(), "grpc_method" => this.method.clone())
        .record(elapsed);
        Poll::Ready(result)
    }
}

fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// Prometheus label value for a gRPC code, as in grpc-ecosystem's go-grpc-prometheus.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Client interceptor: sends the current trace context as gRPC metadata.
pub fn inject_trace_context(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let mut headers = http::HeaderMap::new();
    propagation::inject_headers(&mut headers);
    for (name, value) in headers.iter() {
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_bytes())
            && let Ok(key) = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
        {
            request.metadata_mut().insert(key, value);
        }
    }
    Ok(request)
}

/// The signature of [`inject_trace_context`], for naming client types.
pub type TraceInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A client transport whose calls carry the caller's trace context.
pub type Traced<T> = tonic::service::interceptor::InterceptedService<T, TraceInterceptor>;

/// A channel whose calls carry the caller's trace context.
pub type TracedChannel = Traced<tonic::transport::Channel>;

/// Wraps a channel (or any client transport) so every call sends the current trace context.
pub fn traced<T>(transport: T) -> Traced<T> {
    tonic::service::interceptor::InterceptedService::new(transport, inject_trace_context as TraceInterceptor)
}
