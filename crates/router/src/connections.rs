//! Keep-alive connections to upstreams, one set per proxy thread.
//!
//! Why not hyper-util's pooled `Client`: on every HTTP/1 request it spawns a task whose only job
//! is to wait for the connection to become idle and put it back in a pool shared behind a lock.
//! In the router-vs-nginx benchmark that hand-off was a fixed cost on every proxied request. Here
//! each proxy thread owns its connections (see `proxy::serve`): a request takes an idle
//! connection from a list, and the response body puts it back when it ends, in the same task.
//! A connection whose response body did not end (client gone, upstream error) is dropped, never
//! reused mid-message.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// An HTTP/1 connection lent to one request; give it back with [`Connections::put`] once the
/// response body has ended.
pub type Lent = http1::SendRequest<Incoming>;

/// Idle keep-alive connections per upstream address, most recently used last, at most
/// `max_per_upstream` each, forgotten after `idle_timeout`. Shared by both request paths
/// (`Connections` here, `http1::IdleConnections`). The lock is only ever taken by the owning
/// proxy thread (it is here because hyper's server wants `Send` services).
pub struct IdleLists<T> {
    lists: Mutex<HashMap<String, Vec<(T, Instant)>>>,
    idle_timeout: Duration,
    max_per_upstream: usize,
}

impl<T> IdleLists<T> {
    pub fn new(idle_timeout: Duration, max_per_upstream: usize) -> Self {
        Self { lists: Mutex::new(HashMap::new()), idle_timeout, max_per_upstream }
    }

    /// The most recently returned connection to `address` that is not too old and `usable`;
    /// the others met on the way are dropped.
    pub fn take(&self, address: &str, mut usable: impl FnMut(&mut T) -> bool) -> Option<T> {
        let mut lists = self.lists.lock().expect("idle connections lock");
        let list = lists.get_mut(address)?;
        while let Some((mut candidate, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && usable(&mut candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// Keeps `connection` for the next request to `address`; when the list is full, first
    /// forgets connections that idled too long or are no longer `usable`.
    pub fn put(&self, address: &str, connection: T, usable: impl Fn(&T) -> bool) {
        let mut lists = self.lists.lock().expect("idle connections lock");
        let list = match lists.get_mut(address) {
            Some(list) => list,
            None => lists.entry(address.to_owned()).or_default(),
        };
        if list.len() >= self.max_per_upstream {
            let timeout = self.idle_timeout;
            list.retain(|(c, since)| since.elapsed() < timeout && usable(c));
            if list.len() >= self.max_per_upstream {
                return;
            }
        }
        list.push((connection, Instant::now()));
    }

    /// Idle connections kept for `address` (for tests and the admin view).
    pub fn count(&self, address: &str) -> usize {
        self.lists.lock().expect("idle connections lock").get(address).map_or(0, Vec::len)
    }
}

/// The upstream connections of one proxy thread. The locks are never contended: only the
/// owning thread takes them (they are here because hyper's server wants `Send` services).
pub struct Connections {
    http2: bool,
    /// HTTP/1: idle connections per upstream address.
    idle: IdleLists<Lent>,
    /// HTTP/2 (prior knowledge): one multiplexed connection per upstream address.
    multiplexed: Mutex<HashMap<String, http2::SendRequest<Incoming>>>,
}

impl Connections {
    pub fn new(http2: bool, idle_timeout: Duration, max_idle_per_upstream: usize) -> Self {
        Self {
            http2,
            idle: IdleLists::new(idle_timeout, max_idle_per_upstream),
            multiplexed: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// Sends `request` to `address`. For HTTP/1 the connection comes back with the response and
    /// must be returned through [`Connections::put`] when the body ends. A request that never
    /// left (the pooled connection had just closed) is sent once more on a new connection.
    pub async fn send(
        &self,
        address: &str,
        request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<Lent>), BoxError> {
        if self.http2 {
            return self.send_http2(address, request).await.map(|response| (response, None));
        }
        let mut request = request;
        let mut pooled = self.checkout(address);
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(mut sender) => match sender.ready().await {
                    Ok(()) => sender,
                    Err(_) => self.connect_http1(address).await?,
                },
                None => self.connect_http1(address).await?,
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Some(sender))),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(err.into_error().into()),
                },
            }
        }
    }

    /// Returns a connection whose response body has ended.
    pub fn put(&self, address: &str, sender: Lent) {
        if !sender.is_closed() {
            self.idle.put(address, sender, |c| !c.is_closed());
        }
    }

    fn checkout(&self, address: &str) -> Option<Lent> {
        self.idle.take(address, |c| !c.is_closed())
    }

    /// Idle HTTP/1 connections kept for `address` (for tests and the admin view).
    pub fn idle_count(&self, address: &str) -> usize {
        self.idle.count(address)
    }

    async fn send_http2(
        &self,
        address: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, BoxError> {
        let cached = self.multiplexed.lock().expect("connections lock").get(address).cloned();
        let mut request = request;
        let mut sender = match cached {
            Some(sender) if !sender.is_closed() => Some(sender),
            _ => None,
        };
        loop {
            let reused = sender.is_some();
            let mut current = match sender.take() {
                Some(sender) => sender,
                None => {
                    let fresh = self.connect_http2(address).await?;
                    self.multiplexed
                        .lock()
                        .expect("connections lock")
                        .insert(address.to_owned(), fresh.clone());
                    fresh
                }
            };
            match current.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(err.into_error().into()),
                },
            }
        }
    }

    async fn connect_http1(&self, address: &str) -> Result<Lent, BoxError> {
        let (sender, connection) = http1::handshake(TokioIo::new(dial(address).await?)).await?;
        // Ends when the upstream closes the connection or the last sender is dropped.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn connect_http2(&self, address: &str) -> Result<http2::SendRequest<Incoming>, BoxError> {
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(dial(address).await?)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A TCP connection to an upstream, with the socket options every upstream connection gets.
pub(crate) async fn dial(address: &str) -> Result<TcpStream, BoxError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))??;
    stream.set_nodelay(true)?;
    // Finds upstreams that vanished while a connection sat idle.
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))?;
    Ok(stream)
}
