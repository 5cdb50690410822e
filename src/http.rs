//! HTTP/1 serving that a peer cannot exhaust: a connection cap per listener that evicts the oldest idle connection, a deadline per connection, small buffers, no keep-alive on probe ports.
//!
//! healthz (0.0.0.0:10256) and the health-check node ports listen on every
//! node address, so anyone who reaches the node can open connections to
//! them. A cap alone would let a slowloris client hold every slot and lock
//! out kubelet and the load balancers; a deadline alone bounds how long a
//! slot is held but not how many. So: a cap, a deadline, and at the cap a
//! new connection closes the *oldest one that has no whole request waiting
//! or being answered*. A prober sends its request at once, so it is never
//! the one closed once its request has arrived, however many idle or slow
//! connections a flood opens; those are the ones closed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::sys::socket::{MsgFlags, Shutdown, recv, shutdown};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// What one listener allows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; a new one past it closes the oldest.
    pub max_connections: usize,
    /// The request line and headers must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection is asked to close (after its current response) this
    /// long after it was accepted, whatever it is doing.
    pub connection_deadline: Duration,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
}

/// healthz and /livez: kubelet and load balancers open a connection per
/// probe and send the request at once, so 3 s for the headers and 5 s in
/// all is generous (kubelet's probe timeout defaults to 1 s). 128 slots
/// cover every prober of a node many times over.
pub const HEALTHZ_LIMITS: Limits = Limits {
    max_connections: 128,
    header_read_timeout: Duration::from_secs(3),
    connection_deadline: Duration::from_secs(5),
    keep_alive: false,
};

/// One health-check node port (per Service and address): probed by the
/// cloud load balancers only. Fewer slots, since a node may have hundreds
/// of these listeners and every slot is a file descriptor.
pub const HEALTH_CHECK_PORT_LIMITS: Limits = Limits {
    max_connections: 64,
    ..HEALTHZ_LIMITS
};

/// /metrics: one Prometheus (or a few) scraping, which keeps its
/// connection alive between scrapes; a scrape at 10,000 Services is well
/// under a second, and a minute-long connection is reopened by the scraper.
pub const METRICS_LIMITS: Limits = Limits {
    max_connections: 16,
    header_read_timeout: Duration::from_secs(10),
    connection_deadline: Duration::from_secs(60),
    keep_alive: true,
};

/// hyper's smallest read buffer (it refuses less): a request to these
/// endpoints is a few hundred bytes.
const MAX_BUF_SIZE: usize = 8192;
/// Request line and headers, in bytes; larger gets 431.
const MAX_HEADER_SIZE: usize = 4096;
/// Header lines; more gets 431.
const MAX_HEADERS: usize = 32;
/// After the deadline, the time a response in flight gets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// At most one "cap reached" warning per listener in this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Counters one listener shares with its connection tasks.
#[derive(Debug, Default)]
struct Stats {
    open: AtomicUsize,
    evicted: AtomicU64,
}

/// Held by a connection task: when the task ends or is aborted, shuts the
/// socket down (the accept loop's duplicate would otherwise keep it open
/// until the next accept) and decrements the open count.
struct Open(Arc<Stats>, Arc<OwnedFd>);

impl Drop for Open {
    fn drop(&mut self) {
        let _ = shutdown(self.1.as_raw_fd(), Shutdown::Both);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One admitted connection, as the accept loop sees it.
struct Conn {
    task: AbortHandle,
    /// A duplicate of the socket: peeked to tell a client whose request is
    /// waiting from one that sends nothing, and shut down on eviction so
    /// the peer sees the close at once.
    peek: Arc<OwnedFd>,
    /// Set when a request head was complete and is being answered.
    answered: Arc<AtomicBool>,
}

impl Conn {
    /// Whether the client is being answered or has a whole request head
    /// waiting to be read: a prober, not a slowloris. Such a connection is
    /// done within milliseconds, so it is not the one to close.
    fn busy(&self, buf: &mut [u8]) -> bool {
        if self.answered.load(Ordering::Relaxed) {
            return true;
        }
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        match recv(self.peek.as_raw_fd(), buf, flags) {
            Ok(n) => buf[..n].windows(4).any(|w| w == b"\r\n\r\n"),
            Err(_) => false,
        }
    }

    fn evict(self) {
        let _ = shutdown(self.peek.as_raw_fd(), Shutdown::Both);
        self.task.abort();
    }
}

/// The connections of a listener, oldest first; dropping it (the
/// listener stopped) closes them all.
#[derive(Default)]
struct Conns(VecDeque<Conn>);

impl Conns {
    /// Closes connections until there is room for one more: the oldest that
    /// is not `busy`, else the oldest. Returns how many were closed.
    fn make_room(&mut self, max: usize, buf: &mut [u8]) -> u64 {
        self.0.retain(|c| !c.task.is_finished());
        let mut evicted = 0;
        while self.0.len() >= max.max(1) {
            let i = self.0.iter().position(|c| !c.busy(buf)).unwrap_or(0);
            if let Some(c) = self.0.remove(i) {
                c.evict();
                evicted += 1;
            }
        }
        evicted
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        for c in self.0.drain(..) {
            c.task.abort();
        }
    }
}

/// A running HTTP listener; dropping it stops accepting and closes its
/// connections.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    /// None once `close` took it.
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connection tasks holding a socket now: at most `max_connections`,
    /// plus evicted ones (already shut down) until their task is dropped.
    pub fn open_connections(&self) -> usize {
        self.stats.open.load(Ordering::Relaxed)
    }

    /// Connections closed to make room for newer ones since the start.
    pub fn evicted_connections(&self) -> u64 {
        self.stats.evicted.load(Ordering::Relaxed)
    }

    /// Stops listening and waits until the socket is closed, so the port
    /// can be bound again at once.
    pub async fn close(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Serves `handler` on `listener` within `limits`, one task per
/// connection, HTTP/1.1 only.
pub fn serve<H>(listener: TcpListener, limits: Limits, handler: H) -> io::Result<HttpServer>
where
    H: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let local_addr = listener.local_addr()?;
    let handler = Arc::new(handler);
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let task = tokio::spawn(async move {
        let mut conns = Conns::default();
        let mut warned: Option<Instant> = None;
        let mut peek_buf = vec![0u8; MAX_HEADER_SIZE];
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, %local_addr, "accept failed; raise the open files limit (ulimit -n)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let evicted = conns.make_room(limits.max_connections, &mut peek_buf);
            if evicted > 0 {
                // Lets the aborted tasks be dropped (their sockets closed)
                // before the next accept: under a flood this loop would
                // otherwise outrun them and the descriptors would pile up.
                tokio::task::yield_now().await;
                shared.evicted.fetch_add(evicted, Ordering::Relaxed);
                if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        %local_addr,
                        max = limits.max_connections,
                        "connection cap reached: closing the oldest idle connections (a flood of idle or slow clients?)"
                    );
                }
            }
            let peek = match nix::unistd::dup(&stream) {
                Ok(fd) => Arc::new(fd),
                Err(e) => {
                    tracing::warn!(error = %e, %local_addr, "cannot duplicate a connection's socket; closing it");
                    continue;
                }
            };
            let answered = Arc::new(AtomicBool::new(false));
            shared.open.fetch_add(1, Ordering::Relaxed);
            let open = Open(shared.clone(), peek.clone());
            let t = tokio::spawn(connection(
                stream,
                limits,
                handler.clone(),
                answered.clone(),
                open,
            ));
            conns.0.push_back(Conn {
                task: t.abort_handle(),
                peek,
                answered,
            });
        }
    });
    Ok(HttpServer {
        local_addr,
        stats,
        task: Some(task),
    })
}

/// One connection, closed at `limits.connection_deadline` at the latest.
async fn connection<H>(
    stream: TcpStream,
    limits: Limits,
    handler: Arc<H>,
    answered: Arc<AtomicBool>,
    _open: Open,
) where
    H: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        answered.store(true, Ordering::Relaxed);
        let r = handler(&req);
        async move { Ok::<_, Infallible>(r) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(limits.keep_alive)
        .max_buf_size(MAX_BUF_SIZE)
        .max_header_size(MAX_HEADER_SIZE)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // hyper's header timer runs only while it reads a request head, not
    // while a kept-alive connection sits idle: this deadline covers both.
    tokio::select! {
        _ = conn.as_mut() => return,
        () = tokio::time::sleep(limits.connection_deadline) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// Raises the soft limit on open files to the hard limit, so the capped
/// listeners (and netlink, iptables pipes) never meet EMFILE at the
/// distribution default of 1024. Returns the (old, new) soft limits.
pub fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok((soft, hard.max(soft)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ok_handler(_: &Request<Incoming>) -> Response<Full<Bytes>> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    async fn listen(limits: Limits) -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        serve(l, limits, ok_handler).unwrap()
    }

    /// Waits (up to 5 s) until `f` holds.
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("the server closes after one response (no keep-alive)")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_connection_is_closed() {
        let limits = Limits {
            max_connections: 3,
            connection_deadline: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(60),
            ..HEALTHZ_LIMITS
        };
        let srv = listen(limits).await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(srv.local_addr()).await.unwrap());
        }
        eventually("3 open", || srv.open_connections() == 3).await;
        // A fresh client is served although every slot was taken...
        assert!(get(srv.local_addr()).await.starts_with("HTTP/1.1 200"));
        assert_eq!(srv.evicted_connections(), 1);
        // ...and the one closed for it was the oldest.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut buf))
            .await
            .expect("the oldest connection is closed")
            .unwrap_or(0);
        assert_eq!(n, 0);
        eventually("at most 3 open", || srv.open_connections() <= 3).await;
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_at_the_deadline() {
        let limits = Limits {
            connection_deadline: Duration::from_millis(300),
            ..HEALTHZ_LIMITS
        };
        let srv = listen(limits).await;
        let mut s = TcpStream::connect(srv.local_addr()).await.unwrap();
        // Half a request line, then nothing: slowloris.
        s.write_all(b"GET / HT").await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within the deadline and its grace")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(
            start.elapsed() < limits.connection_deadline + SHUTDOWN_GRACE + Duration::from_secs(1)
        );
        eventually("none open", || srv.open_connections() == 0).await;
    }

    #[tokio::test]
    async fn oversized_headers_get_431() {
        let srv = listen(HEALTHZ_LIMITS).await;
        let mut s = TcpStream::connect(srv.local_addr()).await.unwrap();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_SIZE)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }

    #[tokio::test]
    async fn probe_ports_do_not_keep_alive() {
        let srv = listen(HEALTHZ_LIMITS).await;
        let out = get(srv.local_addr()).await;
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
    }

    /// `make_room` on real sockets whose tasks never read: the idle ones go
    /// oldest first, the one with a whole request waiting stays.
    #[tokio::test]
    async fn eviction_spares_a_connection_whose_request_is_waiting() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut conns = Conns::default();
        for i in 0..3 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            if i == 0 {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
            } else if i == 1 {
                c.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a")
                    .await
                    .unwrap();
            }
            clients.push(c);
            let (s, _) = l.accept().await.unwrap();
            let peek = Arc::new(nix::unistd::dup(&s).unwrap());
            let task = tokio::spawn(async move {
                let _s = s;
                std::future::pending::<()>().await
            });
            conns.0.push_back(Conn {
                task: task.abort_handle(),
                peek,
                answered: Arc::default(),
            });
        }
        // The request may take a moment to be readable on the server side.
        let mut buf = vec![0u8; MAX_HEADER_SIZE];
        eventually("the request arrived", || conns.0[0].busy(&mut buf)).await;
        assert!(
            !conns.0[1].busy(&mut buf),
            "half a request head is not busy"
        );

        assert_eq!(conns.make_room(3, &mut buf), 1);
        assert_eq!(conns.make_room(2, &mut buf), 1);
        assert_eq!(conns.0.len(), 1);
        assert!(conns.0[0].busy(&mut buf), "the waiting request was kept");
        for (i, c) in clients.iter_mut().enumerate().skip(1) {
            let mut b = [0u8; 8];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b))
                .await
                .expect("evicted connections are shut down at once")
                .unwrap_or(0);
            assert_eq!(n, 0, "client {i}");
        }
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, new) = raise_open_files_limit().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(new, soft);
    }
}
