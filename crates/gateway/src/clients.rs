//! gRPC clients of the services, with deadlines and trace-context propagation.

use std::time::Duration;

use rp_config::Config;
use rp_proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    notifier::v1::notifier_service_client::NotifierServiceClient,
    release::v1::release_service_client::ReleaseServiceClient,
    rollback::v1::rollback_service_client::RollbackServiceClient,
};
use rp_runtime::in_process::Transport;
use rp_telemetry::grpc::traced;
use tonic::transport::{Channel, Endpoint};

/// A service's transport (in memory when the service runs in this process, see
/// `rp_runtime::in_process`), with the caller's trace context on every call.
pub type Traced = rp_telemetry::grpc::Traced<Transport>;

/// One lazily connected channel per service; clients are cheap clones of these.
#[derive(Clone)]
pub struct Clients {
    pub auth: AuthServiceClient<Traced>,
    pub release: ReleaseServiceClient<Traced>,
    pub rollback: RollbackServiceClient<Traced>,
    pub notifier: NotifierServiceClient<Traced>,
    /// Plain channels, for health checks.
    pub channels: Vec<(&'static str, Channel)>,
}

fn channel(url: &str, deadline: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

impl Clients {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let deadline = Duration::from_millis(config.gateway.grpc_deadline_ms);
        let endpoints = &config.endpoints;
        let auth = channel(&endpoints.auth, deadline)?;
        let release = channel(&endpoints.release, deadline)?;
        let rollback = channel(&endpoints.rollback, deadline)?;
        let notifier = channel(&endpoints.notifier, deadline)?;
        let transport = |channel: &Channel, endpoint: &str| {
            traced(if config.gateway.in_process_calls {
                Transport::prefer_in_process(channel.clone(), endpoint, deadline)
            } else {
                Transport::network(channel.clone())
            })
        };
        Ok(Self {
            auth: AuthServiceClient::new(transport(&auth, &endpoints.auth)),
            release: ReleaseServiceClient::new(transport(&release, &endpoints.release)),
            rollback: RollbackServiceClient::new(transport(&rollback, &endpoints.rollback)),
            notifier: NotifierServiceClient::new(transport(&notifier, &endpoints.notifier)),
            channels: vec![
                ("auth", auth),
                ("release", release),
                ("rollback", rollback),
                ("notifier", notifier),
            ],
        })
    }
}
