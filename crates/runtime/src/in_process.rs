//! In-process gRPC calls between roles of one process.
//!
//! When the gateway and, say, the release service run in one process (the embedded default), a
//! call over loopback TCP pays for HTTP/2 framing, HPACK, socket writes and reads and two task
//! hand-offs on each side, only to reach code in the same address space. [`serve`]
//! (`crate::grpc::serve`) registers each gRPC server's full service stack (the same telemetry
//! layer and routes the TCP server runs) under its bound address; a [`Transport`] whose endpoint
//! is such an address calls that stack directly. The protobuf encoding, the metadata, the status
//! codes and the server's own checks stay exactly as over the network. When the server stops,
//! its registration goes and calls use the network channel again (and fail as they would).
//!
//! tonic has no in-process transport of its own; this is the tower `Service` it accepts in place
//! of a `Channel`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, LazyLock, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tonic::{body::Body, transport::Channel};
use tower::{Service, ServiceExt as _, util::BoxCloneSyncService};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A gRPC server's service stack, callable in memory.
pub type LocalService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

static SERVERS: LazyLock<RwLock<HashMap<SocketAddr, LocalService>>> = LazyLock::new(Default::default);

/// Keeps a server reachable in-process until dropped.
pub struct Registration(SocketAddr);

impl Drop for Registration {
    fn drop(&mut self) {
        SERVERS.write().expect("in-process registry lock").remove(&self.0);
    }
}

/// Makes the server listening on `address` reachable in-process through `service`.
pub fn register(address: SocketAddr, service: LocalService) -> Registration {
    SERVERS.write().expect("in-process registry lock").insert(address, service);
    Registration(address)
}

/// The server at `address`, or on its port on every interface when `address` is the loopback
/// (a server bound to `0.0.0.0` answers `127.0.0.1` too).
fn lookup(address: &SocketAddr) -> Option<LocalService> {
    let servers = SERVERS.read().expect("in-process registry lock");
    servers
        .get(address)
        .or_else(|| {
            let any = match address.ip() {
                std::net::IpAddr::V4(ip) if ip.is_loopback() => std::net::Ipv4Addr::UNSPECIFIED.into(),
                std::net::IpAddr::V6(ip) if ip.is_loopback() => std::net::Ipv6Addr::UNSPECIFIED.into(),
                _ => return None,
            };
            servers.get(&SocketAddr::new(any, address.port()))
        })
        .cloned()
}

/// What an in-process caller looks like to the server: a peer on the loopback, as it would over
/// TCP (the auth service trusts the gateway's `x-rp-client-ip` only from trusted proxies).
const LOOPBACK_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A gRPC client transport: the in-process server at the endpoint's address when this process
/// serves it, the network channel otherwise. Decided on every call, so the order in which roles
/// start does not matter.
#[derive(Clone)]
pub struct Transport {
    channel: Channel,
    /// The endpoint as a socket address (`None` for host names: never in-process).
    local: Option<Arc<Local>>,
}

struct Local {
    address: SocketAddr,
    deadline: Duration,
}

impl Transport {
    /// Calls always go over `channel`.
    pub fn network(channel: Channel) -> Self {
        Self { channel, local: None }
    }

    /// Calls go in-process when this process serves `endpoint`, within `deadline` (the
    /// channel's own timeout applies to network calls).
    pub fn prefer_in_process(channel: Channel, endpoint: &str, deadline: Duration) -> Self {
        let address = endpoint
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.authority().and_then(|a| a.as_str().parse::<SocketAddr>().ok()));
        Self { channel, local: address.map(|address| Arc::new(Local { address, deadline })) }
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // In-process servers are always ready; a network call waits for the channel's
        // readiness in `call` (`oneshot` on a clone: a `Channel` is a cheap, buffered handle).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(local) = &self.local
            && let Some(server) = lookup(&local.address)
        {
            request.extensions_mut().insert(tonic::transport::server::TcpConnectInfo {
                local_addr: Some(local.address),
                remote_addr: Some(LOOPBACK_PEER),
            });
            let deadline = local.deadline;
            return Box::pin(async move {
                match tokio::time::timeout(deadline, server.oneshot(request)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(tonic::Status::deadline_exceeded("the call exceeded its deadline").into()),
                }
            });
        }
        let channel = self.channel.clone();
        Box::pin(async move { channel.oneshot(request).await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::Endpoint;
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tower::service_fn;

    use super::*;

    /// A bound socket that never listens: connections to it are refused.
    fn refusing() -> (tokio::net::TcpSocket, Channel) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let url = format!("http://{}", socket.local_addr().unwrap());
        (socket, Endpoint::from_shared(url).unwrap().connect_lazy())
    }

    #[tokio::test]
    async fn calls_reach_a_server_of_this_process_in_memory_until_it_stops() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(crate::grpc::serve(
            listener,
            tonic::service::Routes::default(),
            &["rp.test.v1.Nothing"],
            shutdown.clone(),
        ));
        // The network channel leads nowhere: only the in-process path can answer.
        let (_refusing, channel) = refusing();
        let transport =
            Transport::prefer_in_process(channel, &format!("http://{address}"), Duration::from_secs(2));
        let mut health = HealthClient::new(transport);
        let check = || HealthCheckRequest { service: "rp.test.v1.Nothing".into() };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            match health.check(check()).await {
                Ok(answer) => break answer.into_inner().status,
                Err(_) if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
                Err(err) => panic!("the in-process server never answered: {err}"),
            }
        };
        assert_eq!(status, ServingStatus::Serving as i32);

        shutdown.cancel();
        server.await.unwrap().unwrap();
        let after = health.check(check()).await.unwrap_err();
        assert_eq!(
            after.code(),
            tonic::Code::Unavailable,
            "a stopped server is reached over the network: {after}"
        );
    }

    #[tokio::test]
    async fn the_server_sees_a_loopback_peer_and_answers_for_its_wildcard_address() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let echo_peer = service_fn(|request: http::Request<Body>| async move {
            let info = request.extensions().get::<tonic::transport::server::TcpConnectInfo>().cloned();
            let peer = info.and_then(|i| i.remote_addr).map(|a| a.to_string()).unwrap_or_default();
            Ok::<_, BoxError>(http::Response::builder().header("x-peer", peer).body(Body::empty()).unwrap())
        });
        let _registered =
            register(SocketAddr::from(([0, 0, 0, 0], port)), BoxCloneSyncService::new(echo_peer));
        let (_refusing, channel) = refusing();
        let transport = Transport::prefer_in_process(
            channel.clone(),
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(2),
        );
        let request = || http::Request::builder().uri("/x.v1.X/Y").body(Body::empty()).unwrap();
        let answer = transport.clone().oneshot(request()).await.unwrap();
        assert_eq!(answer.headers()["x-peer"], "127.0.0.1:0");

        // Host names and the network-only transport never go in-process.
        let named = Transport::prefer_in_process(
            channel.clone(),
            &format!("http://localhost:{port}"),
            Duration::from_secs(2),
        );
        assert!(named.oneshot(request()).await.is_err());
        assert!(Transport::network(channel).oneshot(request()).await.is_err());
    }
}
