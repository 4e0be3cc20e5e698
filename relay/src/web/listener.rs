//! The web listener's connections, capped: the relay's file descriptors
//! are its sessions' first, so however many connections someone opens to
//! the status page, at most [`MAX_CONNECTIONS`] are held at once, and at
//! most [`MAX_PER_SOURCE`] from one address.
//!
//! Under a flood of connections that send nothing (or a request and then
//! nothing), the page stays up: a new connection that finds no room takes
//! the place of the stalest *idle* one — one that has not sent a whole
//! request head yet, or has been quiet for [`QUIET`] since its last — as
//! the session listener does with handshakes. A connection must send its
//! request head within [`HEAD_TIMEOUT`], and lives at most [`LIFETIME`].
//! Only connections busy with a request are never displaced; when all are,
//! a new one waits in the backlog.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Web connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 16;

/// Web connections open at once from one address, at most.
pub const MAX_PER_SOURCE: usize = 8;

/// How long a web connection lives, sending or not: long enough for any
/// page or scrape (a keep-alive client connects again), short enough that
/// connections opened and left idle, with no token even, cannot keep the
/// permits from everyone else.
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a new connection has to send its whole request head.
pub const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Quiet this long after its last request head, a connection is idle (it
/// may be displaced by a new one).
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// A new connection is not displaced before it had this long to send its
/// request (however fast others arrive).
pub const FIRST_WORDS: std::time::Duration = std::time::Duration::from_millis(250);

/// What the listener knows of one open connection.
#[derive(Debug)]
struct Conn {
    source: IpAddr,
    /// Ms since the listener began when it was opened, and when its last
    /// request head ended (`u64::MAX`: none yet).
    opened_ms: u64,
    last_head_ms: AtomicU64,
    /// Cancelled to displace it.
    displaced: CancellationToken,
    /// The same socket (a second descriptor), to see whether its client
    /// has sent something not read yet.
    peeker: std::net::TcpStream,
}

impl Conn {
    /// Whether its client sent bytes the server has not read yet (a
    /// request on its way in: not idle).
    fn has_bytes_waiting(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.peeker.peek(&mut byte), Ok(n) if n > 0)
    }

    /// Whether it may be displaced at `now_ms`, a new connection being
    /// given `first_words` to send its request, and how stale it is (the
    /// older its last sign of use, the sooner it goes).
    fn idle_since(&self, now_ms: u64, first_words: std::time::Duration) -> Option<u64> {
        let quiet_for = |since: u64, span: std::time::Duration| {
            now_ms.saturating_sub(since) >= span.as_millis() as u64
        };
        match self.last_head_ms.load(Ordering::Relaxed) {
            _ if self.has_bytes_waiting() => None,
            u64::MAX if quiet_for(self.opened_ms, first_words) => Some(self.opened_ms),
            u64::MAX => None,
            head if quiet_for(head, QUIET) => Some(head),
            _ => None,
        }
    }
}

/// The open connections, shared by the listener and each connection.
#[derive(Debug)]
struct Open {
    began: Instant,
    /// See [`FIRST_WORDS`].
    first_words: std::time::Duration,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Log lines about displaced and refused connections, rate-limited.
    said: crate::web::LogGate,
}

impl Open {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Displaces the stalest idle connection (of `source` only, if given);
    /// false when none is idle.
    fn displace(&self, source: Option<IpAddr>) -> bool {
        let now = self.now_ms();
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let stalest = conns
            .iter()
            .filter(|c| source.is_none_or(|s| c.source == s) && !c.displaced.is_cancelled())
            .enumerate()
            .filter_map(|(order, c)| {
                c.idle_since(now, self.first_words)
                    .map(|since| ((since, order), c))
            })
            .min_by_key(|(since, _)| *since);
        match stalest {
            Some((_, conn)) => {
                conn.displaced.cancel();
                true
            }
            None => false,
        }
    }

    fn open_from(&self, source: IpAddr) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .filter(|c| c.source == source && !c.displaced.is_cancelled())
            .count()
    }
}

/// A listener that holds a permit per open connection.
#[derive(Debug)]
pub struct Capped {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: std::time::Duration,
    open: Arc<Open>,
    /// The bytes are TLS records: no request head can be seen in them, so
    /// any bytes read count as use (the TLS handshake has its own
    /// deadline, `super::tls::HANDSHAKE`, and hyper cuts a head slower
    /// than [`HEAD_TIMEOUT`] inside it).
    tls: bool,
}

impl Capped {
    /// Caps `inner` at [`MAX_CONNECTIONS`].
    pub fn new(inner: TcpListener) -> Self {
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            lifetime: LIFETIME,
            tls: false,
            open: Arc::new(Open {
                began: Instant::now(),
                first_words: FIRST_WORDS,
                conns: Mutex::default(),
                said: crate::web::LogGate::default(),
            }),
        }
    }

    /// New connections displaceable at once, not after [`FIRST_WORDS`]
    /// (tests of displacement).
    #[cfg(test)]
    fn displacing_at_once(mut self) -> Self {
        if let Some(open) = Arc::get_mut(&mut self.open) {
            open.first_words = std::time::Duration::ZERO;
        }
        self
    }

    /// For a listener whose connections carry TLS.
    pub fn for_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Connections closed after `lifetime` instead of [`LIFETIME`].
    pub fn with_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Room for a connection from `source`: its permit, after displacing
    /// an idle connection if there is no room; `None` when its source has
    /// [`MAX_PER_SOURCE`] busy ones.
    async fn room_for(&self, source: IpAddr) -> Option<OwnedSemaphorePermit> {
        if self.open.open_from(source) >= MAX_PER_SOURCE && !self.open.displace(Some(source)) {
            self.open.said.warn(format_args!(
                "web: refused a connection from {source}: it has {MAX_PER_SOURCE} busy ones open"
            ));
            return None;
        }
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.open.displace(None) {
                    self.open.said.warn(format_args!(
                        "web: all {MAX_CONNECTIONS} connections open; an idle one made room for {source}"
                    ));
                }
                Arc::clone(&self.permits).acquire_owned().await.ok()?
            }
        };
        Some(permit)
    }
}

impl axum::serve::Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off rather than spin.
                    tracing::error!("web: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = self.room_for(addr.ip()).await else {
                continue;
            };
            let (stream, peeker) = match with_peeker(stream) {
                Ok(both) => both,
                Err(e) => {
                    tracing::error!("web: cannot set up a connection from {addr}: {e}");
                    continue;
                }
            };
            let conn = Arc::new(Conn {
                source: addr.ip(),
                opened_ms: self.open.now_ms(),
                last_head_ms: AtomicU64::new(u64::MAX),
                displaced: CancellationToken::new(),
                peeker,
            });
            self.open
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(&conn));
            return (
                Held {
                    stream,
                    _permit: permit,
                    deadline: Box::pin(tokio::time::sleep(self.lifetime)),
                    head_deadline: (!self.tls).then(|| Box::pin(tokio::time::sleep(HEAD_TIMEOUT))),
                    tls: self.tls,
                    displaced: Box::pin(conn.displaced.clone().cancelled_owned()),
                    head_tail: 0,
                    conn,
                    open: Arc::clone(&self.open),
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// `stream`, and a second descriptor of its socket that only peeks.
fn with_peeker(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std()?;
    let peeker = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, peeker))
}

/// An accepted connection and its permit, released when it closes; past
/// its deadline, its head deadline, or once displaced, every read and
/// write fails, so hyper closes it.
#[derive(Debug)]
pub struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Until a whole request head has come.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    displaced: Pin<Box<WaitForCancellationFutureOwned>>,
    /// How many bytes of `\r\n\r\n` the bytes read so far end with.
    head_tail: usize,
    /// See [`Capped::tls`].
    tls: bool,
    conn: Arc<Conn>,
    open: Arc<Open>,
}

impl Held {
    /// An error once the connection must end (the timers and the
    /// displacement wake the task then, even while the peer sends nothing).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.displaced.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "web connection displaced by a new one while idle",
            ));
        }
        if let Some(head) = &mut self.head_deadline {
            if head.as_mut().poll(cx).is_ready() {
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "web connection sent no request head in time",
                ));
            }
        }
        self.deadline
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "web connection past its lifetime"))
    }

    /// Notes the end of each request head (`\r\n\r\n`) among `bytes`
    /// (over TLS, any bytes: the heads are inside the records).
    fn saw(&mut self, bytes: &[u8]) {
        if self.tls {
            if !bytes.is_empty() {
                self.conn
                    .last_head_ms
                    .store(self.open.now_ms(), Ordering::Relaxed);
            }
            return;
        }
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in bytes {
            self.head_tail = if b == END[self.head_tail] {
                self.head_tail + 1
            } else {
                usize::from(b == END[0])
            };
            if self.head_tail == END.len() {
                self.head_tail = 0;
                self.head_deadline = None;
                self.conn
                    .last_head_ms
                    .store(self.open.now_ms(), Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut conns = self.open.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !Arc::ptr_eq(c, &self.conn));
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let new = buf.filled()[before..].to_vec();
            self.saw(&new);
        }
        read
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
    use axum::serve::Listener;

    /// A connection to `addr` from the loopback address `127.0.0.{n}`.
    async fn from(n: u8, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, n], 0))).unwrap();
        socket.connect(addr).await.unwrap()
    }

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// Accepts one connection and reads what its client sent (a request
    /// head makes it busy).
    async fn accept_reading(capped: &mut Capped, sent: usize) -> Held {
        use tokio::io::AsyncReadExt;
        let (mut held, _) = capped.accept().await;
        let mut buf = vec![0u8; sent];
        held.read_exact(&mut buf).await.unwrap();
        held
    }

    #[tokio::test]
    async fn an_idle_connection_makes_room_and_busy_ones_are_kept() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut capped =
            Capped::new(TcpListener::bind("127.0.0.1:0").await.unwrap()).displacing_at_once();
        let addr = capped.local_addr().unwrap();
        // Fifteen busy connections (each sent a request head), one idle.
        let mut clients = Vec::new();
        let mut held = Vec::new();
        for n in 2..17 {
            let mut client = from(n, addr).await;
            client.write_all(HEAD).await.unwrap();
            clients.push(client);
            held.push(accept_reading(&mut capped, HEAD.len()).await);
        }
        clients.push(from(17, addr).await);
        let mut idle = capped.accept().await.0;
        // A new one is taken: the idle one is displaced (its next read
        // fails, and hyper drops it) and makes room.
        clients.push(from(18, addr).await);
        let displaced = async move {
            let mut buf = [0u8; 1];
            idle.read(&mut buf).await.unwrap_err().kind()
        };
        let (taken, kind) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_secs(10), capped.accept()),
            displaced
        );
        assert!(taken.is_ok(), "the new connection is accepted");
        assert_eq!(kind, io::ErrorKind::ConnectionAborted);
        // All busy now: one more waits until one closes.
        clients.push(from(19, addr).await);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(300), capped.accept());
        assert!(
            waiting.await.is_err(),
            "busy connections are never displaced"
        );
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut capped = Capped::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = capped.local_addr().unwrap();
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..MAX_PER_SOURCE {
            let mut client = from(1, addr).await;
            client.write_all(HEAD).await.unwrap();
            clients.push(client);
            held.push(accept_reading(&mut capped, HEAD.len()).await);
        }
        // Its next one is closed unserved; another address gets in.
        let mut refused = from(1, addr).await;
        clients.push(from(2, addr).await);
        let (_, other) = tokio::time::timeout(std::time::Duration::from_secs(10), capped.accept())
            .await
            .unwrap();
        assert_eq!(other.ip(), IpAddr::from([127, 0, 0, 2]));
        let mut buf = [0u8; 1];
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(10), refused.read(&mut buf))
                .await
                .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }

    #[tokio::test]
    async fn a_connection_is_closed_when_its_time_is_up_sending_or_not() {
        // Idle connections opened without a token must not keep the
        // permits for ever: the page would be gone for everyone.
        use tokio::io::AsyncReadExt;
        let mut capped = Capped::new(TcpListener::bind("127.0.0.1:0").await.unwrap())
            .with_lifetime(std::time::Duration::from_millis(200));
        let addr = capped.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (mut held, _) = capped.accept().await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), held.read(&mut buf))
            .await
            .expect("the read ends when the connection's time is up");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
