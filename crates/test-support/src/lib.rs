//! Helpers shared by every crate's integration tests.
//!
//! The backend comes from `RELEASE_PILOT_TEST_BACKEND`: `embedded` (default: SQLite files in a
//! temporary directory and the in-process bus) or `distributed` (PostgreSQL and NATS JetStream at
//! `RELEASE_PILOT_TEST_DATABASE_URL` / `RELEASE_PILOT_TEST_NATS_URL`, defaulting to the local servers). Each
//! [`TestEnv`] is isolated: its own SQLite directory, or its own PostgreSQL schemas, JetStream
//! stream and subject prefix. CI runs the whole suite once per backend. The gateway calls services
//! of its own process in memory on `embedded` and over gRPC on `distributed`.

use std::{
    collections::HashMap,
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use rp_config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Distributed,
}

/// The backend this test run targets. An unknown value is a configuration error, not a skip.
pub fn backend() -> Backend {
    match std::env::var("RELEASE_PILOT_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => Backend::Embedded,
        Ok("distributed") => Backend::Distributed,
        Ok(other) => {
            panic!("RELEASE_PILOT_TEST_BACKEND must be embedded or distributed, not {other:?}")
        }
    }
}

pub fn database_url() -> String {
    std::env::var("RELEASE_PILOT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn nats_url() -> String {
    std::env::var("RELEASE_PILOT_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Logs go to the test output only when `TEST_LOG` is set.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = std::env::var("TEST_LOG").ok().filter(|v| v.contains('=') || v.contains(','));
            let filter = filter.unwrap_or_else(|| "info,sqlx=warn,sea_orm=warn,h2=warn".into());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// An isolated configuration for one test.
pub struct TestEnv {
    pub config: Config,
    /// Unique id of this environment (schema prefix, stream and subject suffix).
    pub id: String,
    pub backend: Backend,
    /// The `RP_…` variables the configuration was built from, for tests that start the binary.
    pub vars: HashMap<String, String>,
    dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    /// Like [`TestEnv::new`], with extra `RP_…` settings applied on top.
    pub fn with_env(extra: &[(&str, &str)]) -> Self {
        init_logging();
        let backend = backend();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut vars: HashMap<String, String> = HashMap::new();
        let mut set = |k: &str, v: &str| {
            vars.insert(k.to_owned(), v.to_owned());
        };
        set("RP_DATA_DIR", &dir.path().display().to_string());
        // Every listener on an ephemeral port so tests run in parallel.
        for key in [
            "RP_GATEWAY__HTTP_ADDR",
            "RP_GATEWAY__ADMIN_ADDR",
            "RP_AUTH__GRPC_ADDR",
            "RP_AUTH__ADMIN_ADDR",
            "RP_RELEASE__GRPC_ADDR",
            "RP_RELEASE__ADMIN_ADDR",
            "RP_ROLLBACK__GRPC_ADDR",
            "RP_ROLLBACK__ADMIN_ADDR",
            "RP_NOTIFIER__GRPC_ADDR",
            "RP_NOTIFIER__ADMIN_ADDR",
            "RP_ROUTER__PROXY_ADDR",
            "RP_ROUTER__ADMIN_ADDR",
        ] {
            set(key, "127.0.0.1:0");
        }
        // Small pools: many tests share one PostgreSQL server.
        set("RP_DATABASE__MIN_CONNECTIONS", "1");
        set("RP_DATABASE__MAX_CONNECTIONS", "5");
        set("RP_DATABASE__READ_CONNECTIONS", "2");
        set("RP_OUTBOX__POLL_INTERVAL_MS", "200");
        set("RP_SHUTDOWN__GRACE_PERIOD_SECS", "5");
        if backend == Backend::Distributed {
            set("RP_DATABASE__URL", &database_url());
            set("RP_DATABASE__SCHEMA_PREFIX", &format!("t{id}_"));
            set("RP_NATS__URL", &nats_url());
            set("RP_NATS__STREAM", &format!("RPT_{id}"));
            set("RP_NATS__SUBJECT_PREFIX", &format!("t{id}."));
            set("RP_NATS__MAX_AGE_HOURS", "1");
            // The embedded run covers the gateway's in-process calls; this one the network path
            // a gateway takes to services in other processes.
            set("RP_GATEWAY__IN_PROCESS_CALLS", "false");
        }
        for (key, value) in extra {
            set(key, value);
        }
        let config = Config::load(None, &vars).expect("test configuration is valid");
        Self { config, id, backend, vars, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestEnv {
    /// Distributed mode leaves no trace: the test's JetStream stream and PostgreSQL schemas are
    /// deleted (best effort, on a thread of its own since drop may run inside a runtime).
    fn drop(&mut self) {
        if self.backend != Backend::Distributed {
            return;
        }
        let (id, stream) = (self.id.clone(), self.config.nats.stream.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), cleanup_distributed(&id, &stream)).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn cleanup_distributed(id: &str, stream: &str) {
    if let Ok(client) = async_nats::connect(nats_url().trim_start_matches("nats://")).await {
        let _ = async_nats::jetstream::new(client).delete_stream(stream).await;
    }
    use sea_orm::ConnectionTrait as _;
    let mut options = sea_orm::ConnectOptions::new(database_url());
    options.max_connections(1).min_connections(0).sqlx_logging(false);
    if let Ok(db) = sea_orm::Database::connect(options).await {
        let _ = db.execute_unprepared("SET lock_timeout = '2s'").await;
        for service in ["auth", "release", "rollback", "notifier", "evtest"] {
            let _ =
                db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"t{id}_{service}\" CASCADE")).await;
        }
        let _ = db.close().await;
    }
}

/// A gRPC request carrying `Authorization: Bearer <token>`.
pub fn authed<T>(token: &str, body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    let value = format!("Bearer {token}").parse().expect("a token is a valid header value");
    request.metadata_mut().insert("authorization", value);
    request
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (for servers that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A loopback port that refuses connections for as long as the value lives: the socket is bound
/// but never listens. (A port merely found free can be taken by a parallel test before use.)
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let port = socket.local_addr().expect("local address").port();
    ClosedPort { port, _socket: socket }
}

/// A private nats-server with JetStream, for tests that stop and restart the bus.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts `nats-server` (from PATH or /usr/sbin) on a free port; panics when it is missing.
    pub async fn start(store: &Path) -> Self {
        let mut server = Self { port: free_port(), store: store.to_owned(), child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({binary}): {e}; install it (see TOOLS.md)")
            });
        self.child = Some(child);
        let port = self.port;
        eventually(Duration::from_secs(10), "nats-server to listen", || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A service replica in a Tokio runtime of its own, on its own thread, so that a test can kill it
/// where it stands: `kill` drops every task without cleanup (no lease given back, nothing
/// flushed), as a crashed process would.
pub struct KillableReplica {
    /// The address `start`'s future returned (the replica's gRPC server).
    pub addr: std::net::SocketAddr,
    kill: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableReplica {
    /// Runs `start` in the new runtime; its output's value (the running service) lives until the
    /// replica is killed or dropped.
    pub fn start<F, Fut, S>(start: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (std::net::SocketAddr, S)>,
        S: 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let (addr, service) = runtime.block_on(start());
            addr_tx.send(addr).unwrap();
            let _ = kill_rx.recv();
            runtime.shutdown_background();
            drop(service);
        });
        Self { addr: addr_rx.recv().expect("the replica started"), kill, thread: Some(thread) }
    }

    /// Kills the replica and waits until its runtime is gone.
    pub fn kill(mut self) {
        let _ = self.kill.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KillableReplica {
    fn drop(&mut self) {
        let _ = self.kill.send(());
    }
}
