//! gRPC server assembly: the service's routes plus `grpc.health.v1`, server reflection (v1 and
//! v1alpha: grpcurl 1.8 only speaks v1alpha) and per-call telemetry.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::Server};
use tonic_health::ServingStatus;
use tower::ServiceExt;

/// Serves `routes` on `listener` until `shutdown`; `service_names` are the fully qualified names
/// reported SERVING by the health service.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_names: &[&str],
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    reporter.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("embedded descriptor set is valid");

    let routes =
        routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);

    let names: Vec<String> = service_names.iter().map(|s| (*s).to_owned()).collect();
    let stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            // Tell load balancers to drain before connections close.
            for name in &names {
                reporter.set_service_status(name.as_str(), ServingStatus::NotServing).await;
            }
            reporter.set_service_status("", ServingStatus::NotServing).await;
        }
    };

    // The same stack, reachable in memory by clients in this process (see `in_process`).
    let _in_process = listener.local_addr().ok().map(|address| {
        let stack = tower::ServiceBuilder::new()
            .layer(rp_telemetry::grpc::GrpcServerTelemetryLayer)
            .service(routes.clone());
        let stack = ServiceExt::<http::Request<tonic::body::Body>>::map_err(
            stack,
            |never: std::convert::Infallible| -> crate::in_process::BoxError { match never {} },
        );
        crate::in_process::register(address, tower::util::BoxCloneSyncService::new(stack))
    });

    Server::builder()
        .layer(rp_telemetry::grpc::GrpcServerTelemetryLayer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await
}
