//! The HTTP/1.1 request path, the router's own on top of `httparse` (ADR 0005).
//!
//! One task per client connection does everything a request needs, in order: read and check
//! the head, choose route, track and upstream, write the rewritten head and the body to a pooled
//! upstream connection, read the answer's head, and stream the answer back. No request crosses
//! tasks or threads, nothing is allocated per request once the connection's buffers exist, and
//! a small request costs one read and one write on each side, the way nginx's workers run.
//! HTTP/2 clients (prior knowledge) and HTTP/2 upstreams stay on hyper (`Proxy::handle`).
//!
//! Bodies are streamed, never buffered whole: a `Content-Length` body is copied as it arrives,
//! a chunked one is forwarded with its framing (its end found by `chunked::Chunked`), and an
//! answer without either is read until the upstream closes.

use std::{
    io::{self, Write as _},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf as _, Bytes, BytesMut};
use http::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::{
    chunked::Chunked,
    connections::IdleLists,
    proxy::{InFlight, Peer, Proxy, Selection, cookie_track, forced_track},
};

/// Largest request or response head, and most header fields, accepted (as hyper's defaults).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Room made in a buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// How long a client connection may wait for its next request (nginx: `keepalive_timeout` 75 s)
/// and a started head may take to arrive in full (nginx: `client_header_timeout` 60 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused client's remaining bytes are read before the connection closes.
const LINGER: Duration = Duration::from_secs(2);
/// The first bytes of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy)]
enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunked),
    /// Until the sender closes the connection (answers only).
    UntilClose,
}

/// What ended a connection's service.
pub enum Served {
    Closed,
    /// An HTTP/2 client: its connection, with the bytes read so far, goes to hyper.
    Http2(Prefixed),
}

/// A keep-alive connection to an upstream, with what was read from it and not yet used.
pub struct UpstreamConnection {
    stream: TcpStream,
    buf: BytesMut,
}

/// The idle upstream connections of one proxy thread (see `proxy::serve`): a request takes the
/// most recently used one and gives it back when its answer has ended cleanly.
pub struct IdleConnections(IdleLists<UpstreamConnection>);

impl IdleConnections {
    pub fn new(idle_timeout: Duration, max_idle_per_upstream: usize) -> Self {
        Self(IdleLists::new(idle_timeout, max_idle_per_upstream))
    }

    fn checkout(&self, address: &str) -> Option<UpstreamConnection> {
        self.0.take(address, UpstreamConnection::is_open)
    }

    fn put(&self, address: &str, connection: UpstreamConnection) {
        self.0.put(address, connection, |_| true);
    }

    /// Idle connections kept for `address` (for tests and the admin view).
    pub fn count(&self, address: &str) -> usize {
        self.0.count(address)
    }
}

impl UpstreamConnection {
    async fn connect(address: &str) -> io::Result<Self> {
        let stream = crate::connections::dial(address).await.map_err(io::Error::other)?;
        Ok(Self { stream, buf: BytesMut::with_capacity(READ_SIZE) })
    }

    /// Whether an idle connection is still usable: the upstream neither closed it nor sent
    /// anything unasked. Costs no system call unless the socket reported an event since the
    /// last read.
    fn is_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Serves one client connection until it closes, fails, idles out or the router shuts down.
pub async fn serve(proxy: &Proxy, stream: TcpStream, peer: &Peer, shutdown: &CancellationToken) -> Served {
    let mut client = Client {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(1024),
        up: Vec::with_capacity(1024),
    };
    // Until the first bytes rule it out, the connection may be HTTP/2 with prior knowledge.
    let mut maybe_http2 = true;
    loop {
        let request = loop {
            if maybe_http2 && !client.buf.is_empty() {
                let seen = client.buf.len().min(H2_PREFACE.len());
                maybe_http2 = client.buf[..seen] == H2_PREFACE[..seen];
                if maybe_http2 && seen == H2_PREFACE.len() {
                    return Served::Http2(Prefixed { prefix: client.buf.freeze(), stream: client.stream });
                }
            }
            if !maybe_http2 {
                match proxy.parse_request(&client.buf, peer, &mut client.up) {
                    Parsed::Partial if client.buf.len() >= MAX_HEAD => {
                        client
                            .refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large\n")
                            .await;
                        return Served::Closed;
                    }
                    Parsed::Partial => {}
                    Parsed::Refused(status, message) => {
                        client.refuse(status, message).await;
                        return Served::Closed;
                    }
                    Parsed::Request(request) => break request,
                }
            }
            let waiting = client.buf.is_empty();
            let read = if waiting {
                tokio::select! {
                    () = shutdown.cancelled() => return Served::Closed,
                    read = tokio::time::timeout(IDLE_TIMEOUT, client.read()) => read,
                }
            } else {
                tokio::time::timeout(HEAD_TIMEOUT, client.read()).await
            };
            match read {
                Ok(Ok(0) | Err(_)) => return Served::Closed,
                Ok(Ok(_)) => {}
                Err(_) if waiting => return Served::Closed,
                Err(_) => {
                    client.refuse(StatusCode::REQUEST_TIMEOUT, "request head not received in time\n").await;
                    return Served::Closed;
                }
            }
        };
        maybe_http2 = false;
        let keep_alive = match request {
            Request::Forward(plan) => proxy.exchange(&mut client, plan).await,
            Request::Answer { head_len, status, message, keep_alive: true } => {
                client.buf.advance(head_len);
                write_plain(&mut client.out, status, message, false);
                client.stream.write_all(&client.out).await.is_ok()
            }
            Request::Answer { status, message, keep_alive: false, .. } => {
                client.refuse(status, message).await;
                return Served::Closed;
            }
        };
        if !keep_alive || shutdown.is_cancelled() {
            let _ = client.stream.shutdown().await;
            return Served::Closed;
        }
    }
}

/// A client connection: its socket, what was read and not yet used, and the buffer heads are
/// written into.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    /// What goes to the client: answer heads and bodies.
    out: Vec<u8>,
    /// What goes to the upstream: request heads and bodies.
    up: Vec<u8>,
}

impl Client {
    async fn read(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Answers a request that cannot be served, then closes the connection.
    async fn refuse(&mut self, status: StatusCode, message: &str) {
        write_plain(&mut self.out, status, message, true);
        if self.stream.write_all(&self.out).await.is_ok() {
            self.linger().await;
        }
    }

    /// Closes after an answer sent while the client may still be sending.
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        // A lingering close, as nginx's: closing with unread bytes would reset the connection,
        // and a reset can destroy the answer before the client reads it. So what the client
        // still sends is read and dropped for a moment.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

enum Parsed {
    Partial,
    /// Not a request this path can read: answer and close.
    Refused(StatusCode, &'static str),
    Request(Request),
}

enum Request {
    /// A request for an upstream; its rewritten head is in the client's `up` buffer.
    Forward(Plan),
    /// A request the router answers itself (no route, no upstream).
    Answer { head_len: usize, status: StatusCode, message: &'static str, keep_alive: bool },
}

/// A request on its way to an upstream.
struct Plan {
    head_len: usize,
    body: Framing,
    expect_continue: bool,
    /// What the client asked for: another request on this connection after this one.
    keep_alive: bool,
    http10: bool,
    head_method: bool,
    /// Bodiless and idempotent: may be sent again on a new connection when a reused one turns
    /// out to be closed before any answer came (as nginx's `proxy_next_upstream` does).
    retryable: bool,
    selection: Selection,
    started: Instant,
}

/// Header fields the proxy reads or rewrites, recognised by length and then name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Connection,
    ContentLength,
    TransferEncoding,
    /// The other hop-by-hop fields (RFC 9110 §7.6.1), never forwarded.
    HopByHop,
    Expect,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    Track,
    Version,
    Cookie,
    Other,
}

fn field(name: &str) -> Field {
    let is = |expected: &str| name.eq_ignore_ascii_case(expected);
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("host") => Field::Host,
        6 if is("cookie") => Field::Cookie,
        6 if is("expect") => Field::Expect,
        7 if is("trailer") || is("upgrade") => Field::HopByHop,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        10 if is(crate::proxy::TRACK_HEADER) => Field::Track,
        12 if is(crate::proxy::VERSION_HEADER) => Field::Version,
        14 if is("content-length") => Field::ContentLength,
        15 if is("x-forwarded-for") => Field::ForwardedFor,
        16 if is("proxy-connection") => Field::HopByHop,
        16 if is("x-forwarded-host") => Field::ForwardedHost,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::ForwardedProto,
        18 if is("proxy-authenticate") => Field::HopByHop,
        19 if is("proxy-authorization") => Field::HopByHop,
        _ => Field::Other,
    }
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// What a message's own header fields say about its connection and body.
#[derive(Default)]
struct Facts {
    close: bool,
    keep_alive: bool,
    /// `Connection` names fields to drop besides the standard hop-by-hop ones.
    connection_names_fields: bool,
    content_length: Option<u64>,
    conflicting_lengths: bool,
    transfer_encoding: bool,
    chunked_last: bool,
}

impl Facts {
    fn read(headers: &[httparse::Header<'_>]) -> Self {
        let mut facts = Self::default();
        for header in headers {
            match field(header.name) {
                Field::Connection => {
                    for token in tokens(header.value) {
                        if token.eq_ignore_ascii_case(b"close") {
                            facts.close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            facts.keep_alive = true;
                        } else {
                            facts.connection_names_fields = true;
                        }
                    }
                }
                Field::ContentLength => {
                    for token in tokens(header.value) {
                        let length = std::str::from_utf8(token)
                            .ok()
                            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                            .and_then(|t| t.parse::<u64>().ok());
                        match (length, facts.content_length) {
                            (Some(length), None) => facts.content_length = Some(length),
                            (Some(length), Some(seen)) if length == seen => {}
                            _ => facts.conflicting_lengths = true,
                        }
                    }
                }
                Field::TransferEncoding => {
                    facts.transfer_encoding = true;
                    if let Some(last) = tokens(header.value).last() {
                        facts.chunked_last = last.eq_ignore_ascii_case(b"chunked");
                    }
                }
                _ => {}
            }
        }
        facts
    }

    /// Whether `name` is listed in the message's `Connection` field (and so not forwarded).
    fn lists(&self, headers: &[httparse::Header<'_>], name: &str) -> bool {
        self.connection_names_fields
            && headers
                .iter()
                .filter(|h| field(h.name) == Field::Connection)
                .flat_map(|h| tokens(h.value))
                .any(|token| token.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_plain(out: &mut Vec<u8>, status: StatusCode, message: &str, close: bool) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        message.len(),
        if close { "connection: close\r\n" } else { "" },
        message
    );
}

/// An answer's head, already rewritten into the client's `out` buffer.
struct AnswerHead {
    status: u16,
    body: Framing,
    /// Chunked framing removed for an HTTP/1.0 client.
    dechunk: bool,
    upstream_reusable: bool,
    client_keep_alive: bool,
}

enum AnswerParsed {
    Partial,
    /// A 1xx answer of this many bytes, not passed on (the router answered `Expect` itself).
    Informational(usize),
    Complete(usize, AnswerHead),
}

/// A body copy that failed on one side.
enum RelayError {
    /// The source ended or failed mid-body.
    Read,
    /// The destination failed.
    Write,
    Malformed,
}

impl Proxy {
    /// Reads a request head from `buf` and, when it goes to an upstream, writes its rewritten
    /// head into `out`.
    fn parse_request(&self, buf: &[u8], peer: &Peer, out: &mut Vec<u8>) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(httparse::Error::TooManyHeaders) => {
                return Parsed::Refused(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "too many header fields\n",
                );
            }
            Err(_) => return Parsed::Refused(StatusCode::BAD_REQUEST, "malformed request head\n"),
        };
        let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
        else {
            return Parsed::Refused(StatusCode::BAD_REQUEST, "malformed request head\n");
        };
        let headers = &*request.headers;
        let http10 = minor == 0;
        let facts = Facts::read(headers);
        let body = match (facts.transfer_encoding, facts.content_length) {
            _ if facts.conflicting_lengths => {
                return Parsed::Refused(StatusCode::BAD_REQUEST, "invalid Content-Length\n");
            }
            (true, Some(_)) => {
                return Parsed::Refused(
                    StatusCode::BAD_REQUEST,
                    "both Content-Length and Transfer-Encoding\n",
                );
            }
            (true, None) if http10 || !facts.chunked_last => {
                return Parsed::Refused(StatusCode::BAD_REQUEST, "unsupported Transfer-Encoding\n");
            }
            (true, None) => Framing::Chunked(Chunked::default()),
            (false, Some(0) | None) => Framing::Empty,
            (false, Some(length)) => Framing::Length(length),
        };
        if method == "CONNECT" {
            return Parsed::Refused(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        }
        // The origin form is the rule; the absolute form names the host itself (RFC 9112 §3.2.2).
        let (authority, forward_target) = match target.strip_prefix("http://") {
            Some(rest) => {
                let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
                (Some(authority), path)
            }
            None => (None, target),
        };
        let mut hosts = headers.iter().filter(|h| field(h.name) == Field::Host);
        let host_field = hosts.next().map(|h| h.value);
        if hosts.next().is_some() {
            return Parsed::Refused(StatusCode::BAD_REQUEST, "more than one Host field\n");
        }
        let host = match authority.map(str::as_bytes).or(host_field) {
            Some(host) => match std::str::from_utf8(host) {
                Ok(host) => host,
                Err(_) => return Parsed::Refused(StatusCode::BAD_REQUEST, "invalid Host\n"),
            },
            None if http10 => "",
            None => return Parsed::Refused(StatusCode::BAD_REQUEST, "missing Host\n"),
        };
        let path = forward_target.split(['?', '#']).next().unwrap_or_default();
        let keep_alive = if http10 { facts.keep_alive && !facts.close } else { !facts.close };
        let started = Instant::now();
        let forced =
            headers.iter().find(|h| field(h.name) == Field::Track).and_then(|h| forced_track(h.value));
        let cookies = || headers.iter().filter(|h| field(h.name) == Field::Cookie).map(|h| h.value);
        let selection = match self.select(host, path, forced, |name| cookie_track(cookies(), name), started) {
            Ok(selection) => selection,
            Err((status, message)) => {
                // An unread body would be taken for the next request: close instead.
                let keep_alive = keep_alive && matches!(body, Framing::Empty);
                return Parsed::Request(Request::Answer { head_len, status, message, keep_alive });
            }
        };

        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(forward_target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let (mut forwarded_for, mut forwarded_proto, mut forwarded_host) = (false, false, false);
        let mut expect_continue = false;
        for header in headers {
            match field(header.name) {
                Field::Connection | Field::HopByHop => continue,
                Field::Expect => {
                    expect_continue = header.value.eq_ignore_ascii_case(b"100-continue");
                    continue;
                }
                Field::Host if authority.is_some() => continue,
                Field::ForwardedFor => {
                    forwarded_for = true;
                    continue;
                }
                Field::ForwardedProto => forwarded_proto = true,
                Field::ForwardedHost => forwarded_host = true,
                Field::Other if facts.lists(headers, header.name) => continue,
                _ => {}
            }
            write_field(out, header.name.as_bytes(), header.value);
        }
        // Appended to what earlier proxies recorded.
        out.extend_from_slice(b"x-forwarded-for: ");
        if forwarded_for {
            for header in headers.iter().filter(|h| field(h.name) == Field::ForwardedFor) {
                out.extend_from_slice(header.value);
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(peer.forwarded_for.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !forwarded_proto {
            out.extend_from_slice(b"x-forwarded-proto: http\r\n");
        }
        if !host.is_empty() {
            if authority.is_some() || host_field.is_none() {
                write_field(out, b"host", host.as_bytes());
            }
            if !forwarded_host {
                write_field(out, b"x-forwarded-host", host.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");

        let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
        Parsed::Request(Request::Forward(Plan {
            head_len,
            retryable: idempotent && matches!(body, Framing::Empty),
            body,
            expect_continue,
            keep_alive,
            http10,
            head_method: method == "HEAD",
            selection,
            started,
        }))
    }

    /// Forwards one request and streams its answer back. Returns whether the client connection
    /// can carry another request.
    async fn exchange(&self, client: &mut Client, plan: Plan) -> bool {
        client.buf.advance(plan.head_len);
        let upstream = &plan.selection.upstream;
        upstream.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _in_flight = InFlight(upstream.clone());
        if matches!(plan.body, Framing::Empty) {
            self.exchange_bodiless(client, &plan).await
        } else {
            self.exchange_with_body(client, &plan).await
        }
    }

    /// The common case, one step after the other: head out, answer head in, answer body out.
    async fn exchange_bodiless(&self, client: &mut Client, plan: &Plan) -> bool {
        let sent =
            tokio::time::timeout(self.settings.upstream_timeout, self.send_bodiless(client, plan)).await;
        let (mut connection, answer) = match sent {
            Ok(Ok(sent)) => sent,
            Ok(Err(err)) => {
                tracing::debug!(upstream = %plan.selection.upstream.address, error = %err, "upstream request failed");
                self.unanswered(&plan.selection, 502, plan.started);
                return client.answer_failure(StatusCode::BAD_GATEWAY, "upstream unavailable\n", false).await;
            }
            Err(_) => {
                self.unanswered(&plan.selection, 504, plan.started);
                return client
                    .answer_failure(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n", false)
                    .await;
            }
        };
        self.answered(&plan.selection, answer.status, plan.started);
        end_head(&mut client.out, answer.client_keep_alive, plan.http10);
        let UpstreamConnection { stream, buf, .. } = &mut connection;
        match relay(stream, buf, &mut client.stream, &mut client.out, answer.body, answer.dechunk).await {
            Ok(()) => {
                if answer.upstream_reusable && connection.buf.is_empty() {
                    self.idle.put(&plan.selection.upstream.address, connection);
                }
                answer.client_keep_alive
            }
            // Mid-answer, neither side can be told; both connections end.
            Err(_) => false,
        }
    }

    /// Sends the head (in `client.up`) and reads the answer's head into `client.out`. A request
    /// whose reused connection turns out closed before any answer goes once more on a new one.
    async fn send_bodiless(
        &self,
        client: &mut Client,
        plan: &Plan,
    ) -> io::Result<(UpstreamConnection, AnswerHead)> {
        let address = &plan.selection.upstream.address;
        let mut pooled = self.idle.checkout(address);
        loop {
            let reused = pooled.is_some();
            let mut connection = match pooled.take() {
                Some(connection) => connection,
                None => UpstreamConnection::connect(address).await?,
            };
            let UpstreamConnection { stream, buf, .. } = &mut connection;
            let answer = match stream.write_all(&client.up).await {
                Ok(()) => {
                    read_answer_head(stream, buf, |buf| self.parse_answer(buf, plan, &mut client.out)).await
                }
                Err(err) => Err((false, err)),
            };
            match answer {
                Ok(answer) => return Ok((connection, answer)),
                Err((false, _)) if reused && plan.retryable => continue,
                Err((_, err)) => return Err(err),
            }
        }
    }

    /// A request with a body: the body goes up while the answer comes down, as an upstream may
    /// answer before it has read the whole body (a 405 or 413 at once, an echo as it reads). An
    /// answer that comes before the body went in full closes both connections after it.
    async fn exchange_with_body(&self, client: &mut Client, plan: &Plan) -> bool {
        if plan.expect_continue
            && client.buf.is_empty()
            && client.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return false;
        }
        let address = &plan.selection.upstream.address;
        let mut connection = match self.idle.checkout(address) {
            Some(connection) => connection,
            None => match UpstreamConnection::connect(address).await {
                Ok(connection) => connection,
                Err(err) => {
                    tracing::debug!(upstream = %address, error = %err, "upstream connection failed");
                    self.unanswered(&plan.selection, 502, plan.started);
                    return client
                        .answer_failure(StatusCode::BAD_GATEWAY, "upstream unavailable\n", true)
                        .await;
                }
            },
        };
        let body_sent = std::sync::atomic::AtomicBool::new(false);
        let outcome = {
            let (mut client_read, mut client_write) = client.stream.split();
            let UpstreamConnection { stream, buf: upstream_buf, .. } = &mut connection;
            let (mut upstream_read, mut upstream_write) = stream.split();
            let (client_buf, up, out) = (&mut client.buf, &mut client.up, &mut client.out);
            let sending = async {
                let sent =
                    relay(&mut client_read, client_buf, &mut upstream_write, up, plan.body, false).await;
                if sent.is_ok() {
                    body_sent.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                sent
            };
            let answering = async {
                let head = read_answer_head(&mut upstream_read, upstream_buf, |buf| {
                    self.parse_answer(buf, plan, out)
                });
                let answer = match tokio::time::timeout(self.settings.upstream_timeout, head).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err((_, err))) => return Outcome::NoAnswer(StatusCode::BAD_GATEWAY, Some(err)),
                    Err(_) => return Outcome::NoAnswer(StatusCode::GATEWAY_TIMEOUT, None),
                };
                self.answered(&plan.selection, answer.status, plan.started);
                let complete = body_sent.load(std::sync::atomic::Ordering::Relaxed);
                let keep_alive = answer.client_keep_alive && complete;
                end_head(out, keep_alive, plan.http10);
                let relayed = relay(
                    &mut upstream_read,
                    upstream_buf,
                    &mut client_write,
                    out,
                    answer.body,
                    answer.dechunk,
                )
                .await;
                Outcome::Answered {
                    keep_alive,
                    reusable: relayed.is_ok() && complete && answer.upstream_reusable,
                    relayed: relayed.is_ok(),
                }
            };
            let (mut sending, mut answering) = (std::pin::pin!(sending), std::pin::pin!(answering));
            let mut sending_over = false;
            loop {
                tokio::select! {
                    outcome = &mut answering => break outcome,
                    sent = &mut sending, if !sending_over => {
                        sending_over = true;
                        match sent {
                            // The upstream stopped reading: its answer may be on the way.
                            Ok(()) | Err(RelayError::Write) => {}
                            Err(RelayError::Read) => break Outcome::ClientGone,
                            Err(RelayError::Malformed) => break Outcome::BadBody,
                        }
                    }
                }
            }
        };
        match outcome {
            Outcome::Answered { keep_alive, reusable, relayed } => {
                if reusable && connection.buf.is_empty() {
                    self.idle.put(address, connection);
                }
                if relayed && !keep_alive {
                    // The answer came before the whole body: the rest may still be on its way.
                    client.linger().await;
                }
                relayed && keep_alive
            }
            Outcome::NoAnswer(status, err) => {
                tracing::debug!(upstream = %address, error = ?err, "upstream request failed");
                self.unanswered(&plan.selection, status.as_u16(), plan.started);
                let message = if status == StatusCode::GATEWAY_TIMEOUT {
                    "upstream timed out\n"
                } else {
                    "upstream unavailable\n"
                };
                client.answer_failure(status, message, true).await
            }
            Outcome::ClientGone => false,
            Outcome::BadBody => {
                client.refuse(StatusCode::BAD_REQUEST, "malformed chunked body\n").await;
                false
            }
        }
    }

    /// Reads an answer's head from `buf`; when complete, writes the client's version into `out`.
    fn parse_answer(&self, buf: &[u8], plan: &Plan, out: &mut Vec<u8>) -> Result<AnswerParsed, &'static str> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(AnswerParsed::Partial),
            Err(_) => return Err("malformed answer head"),
        };
        let (Some(status), Some(minor)) = (response.code, response.version) else {
            return Err("malformed answer head");
        };
        if status == 101 {
            return Err("protocol upgrades are not proxied");
        }
        if (100..200).contains(&status) {
            return Ok(AnswerParsed::Informational(head_len));
        }
        let headers = &*response.headers;
        let facts = Facts::read(headers);
        let body = if plan.head_method || status == 204 || status == 304 {
            Framing::Empty
        } else if facts.transfer_encoding {
            if facts.chunked_last { Framing::Chunked(Chunked::default()) } else { Framing::UntilClose }
        } else if facts.conflicting_lengths {
            return Err("invalid Content-Length in the answer");
        } else {
            match facts.content_length {
                Some(0) => Framing::Empty,
                Some(length) => Framing::Length(length),
                None => Framing::UntilClose,
            }
        };
        let until_close = matches!(body, Framing::UntilClose);
        let dechunk = plan.http10 && matches!(body, Framing::Chunked(_));
        let upstream_reusable = !facts.close && (minor == 1 || facts.keep_alive) && !until_close;
        let client_keep_alive = plan.keep_alive && !until_close && !dechunk;

        out.clear();
        let _ = write!(out, "HTTP/1.1 {status} {}\r\n", response.reason.unwrap_or_default());
        for header in headers {
            match field(header.name) {
                Field::Connection | Field::HopByHop => continue,
                Field::TransferEncoding if dechunk => continue,
                Field::ContentLength if facts.transfer_encoding => continue,
                // The router's own is set below.
                Field::Version if plan.selection.pool.version_header.is_some() => continue,
                Field::Other if facts.lists(headers, header.name) => continue,
                _ => {}
            }
            write_field(out, header.name.as_bytes(), header.value);
        }
        let selection = &plan.selection;
        if let Some(version) = &selection.pool.version_header {
            write_field(out, crate::proxy::VERSION_HEADER.as_bytes(), version.as_bytes());
        }
        if let Some(cookie) = selection.cookie() {
            write_field(out, b"set-cookie", cookie.as_bytes());
        }
        // `end_head` ends it, once the client connection's fate is known.
        Ok(AnswerParsed::Complete(
            head_len,
            AnswerHead { status, body, dechunk, upstream_reusable, client_keep_alive },
        ))
    }
}

impl Client {
    /// Answers for an upstream that could not. Returns whether the connection can go on: not
    /// when part of the request's body may still be unread.
    async fn answer_failure(&mut self, status: StatusCode, message: &str, had_body: bool) -> bool {
        if had_body {
            self.refuse(status, message).await;
            return false;
        }
        write_plain(&mut self.out, status, message, false);
        self.stream.write_all(&self.out).await.is_ok()
    }
}

/// Reads an answer's head with `parse`, skipping 1xx answers. An error says whether any byte
/// came.
async fn read_answer_head(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    mut parse: impl FnMut(&[u8]) -> Result<AnswerParsed, &'static str>,
) -> Result<AnswerHead, (bool, io::Error)> {
    let mut received = false;
    loop {
        if !buf.is_empty() {
            received = true;
            match parse(buf) {
                Ok(AnswerParsed::Complete(head_len, answer)) => {
                    buf.advance(head_len);
                    return Ok(answer);
                }
                Ok(AnswerParsed::Informational(head_len)) => {
                    buf.advance(head_len);
                    continue;
                }
                Ok(AnswerParsed::Partial) if buf.len() < MAX_HEAD => {}
                Ok(AnswerParsed::Partial) => return Err((true, io::Error::other("answer head too large"))),
                Err(message) => return Err((true, io::Error::other(message))),
            }
        }
        buf.reserve(READ_SIZE);
        match stream.read_buf(buf).await {
            Ok(0) => return Err((received, io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(err) => return Err((received, err)),
        }
    }
}

/// Ends an answer head in `out` with the client connection's fate.
fn end_head(out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a request with a body ended.
enum Outcome {
    Answered { keep_alive: bool, reusable: bool, relayed: bool },
    NoAnswer(StatusCode, Option<io::Error>),
    ClientGone,
    BadBody,
}

/// Copies one body from `source` (what was already read of it is in `source_buf`) to
/// `destination`, after the head waiting in `out`. Leaves bytes that follow the body in
/// `source_buf`. `dechunk` sends only the data of a chunked body.
async fn relay(
    source: &mut (impl AsyncRead + Unpin),
    source_buf: &mut BytesMut,
    destination: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    mut framing: Framing,
    dechunk: bool,
) -> Result<(), RelayError> {
    loop {
        let done = match &mut framing {
            Framing::Empty => true,
            Framing::Length(left) => {
                let take = source_buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&source_buf[..take]);
                source_buf.advance(take);
                *left -= take as u64;
                *left == 0
            }
            Framing::Chunked(parser) => {
                let used = if dechunk {
                    parser.feed(&source_buf[..], |data| out.extend_from_slice(data))
                } else {
                    parser
                        .feed(&source_buf[..], |_| {})
                        .inspect(|used| out.extend_from_slice(&source_buf[..*used]))
                }
                .map_err(|_| RelayError::Malformed)?;
                source_buf.advance(used);
                parser.is_done()
            }
            Framing::UntilClose => {
                out.extend_from_slice(source_buf);
                source_buf.clear();
                false
            }
        };
        if !out.is_empty() {
            destination.write_all(out).await.map_err(|_| RelayError::Write)?;
            out.clear();
        }
        if done {
            return Ok(());
        }
        source_buf.reserve(READ_SIZE);
        match source.read_buf(source_buf).await {
            Ok(0) if matches!(framing, Framing::UntilClose) => return Ok(()),
            Ok(0) | Err(_) => return Err(RelayError::Read),
            Ok(_) => {}
        }
    }
}

/// A client connection handed to hyper, with the bytes already read from it.
pub struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = buf.remaining().min(self.prefix.len());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Track;

    #[test]
    fn fields_are_recognised_whatever_their_case() {
        for (name, expected) in [
            ("Host", Field::Host),
            ("CONNECTION", Field::Connection),
            ("Content-Length", Field::ContentLength),
            ("transfer-encoding", Field::TransferEncoding),
            ("TE", Field::HopByHop),
            ("Upgrade", Field::HopByHop),
            ("Keep-Alive", Field::HopByHop),
            ("Proxy-Authorization", Field::HopByHop),
            ("X-Forwarded-For", Field::ForwardedFor),
            ("X-RP-Track", Field::Track),
            ("x-rp-version", Field::Version),
            ("Cookie", Field::Cookie),
            ("x-forwarded-hosts", Field::Other),
            ("accept", Field::Other),
        ] {
            assert_eq!(field(name), expected, "{name}");
        }
    }

    #[test]
    fn facts_read_framing_and_connection_options() {
        let headers = [
            httparse::Header { name: "Connection", value: b"keep-alive, X-Secret" },
            httparse::Header { name: "Content-Length", value: b"12" },
            httparse::Header { name: "content-length", value: b"12" },
            httparse::Header { name: "X-Secret", value: b"1" },
        ];
        let facts = Facts::read(&headers);
        assert!(facts.keep_alive && !facts.close && !facts.conflicting_lengths);
        assert_eq!(facts.content_length, Some(12));
        assert!(facts.lists(&headers, "x-secret"));
        assert!(!facts.lists(&headers, "x-other"));

        let conflicting = [
            httparse::Header { name: "Content-Length", value: b"12" },
            httparse::Header { name: "Content-Length", value: b"13" },
        ];
        assert!(Facts::read(&conflicting).conflicting_lengths);
        assert!(
            Facts::read(&[httparse::Header { name: "Content-Length", value: b"+5" }]).conflicting_lengths
        );
        let chunked = [httparse::Header { name: "Transfer-Encoding", value: b"gzip, chunked" }];
        assert!(Facts::read(&chunked).chunked_last);
        let not_last = [httparse::Header { name: "Transfer-Encoding", value: b"chunked, gzip" }];
        assert!(!Facts::read(&not_last).chunked_last);
    }

    #[test]
    fn tracks_come_from_the_header_value() {
        assert_eq!(forced_track(b"canary"), Some(Track::Canary));
        assert_eq!(forced_track(b"stable"), Some(Track::Stable));
        assert_eq!(forced_track(b"blue"), None);
    }
}
