//! The web listener's connections, capped: the relay's file descriptors
//! are its sessions' first, so however many connections someone opens to
//! the status page, at most [`MAX_CONNECTIONS`] are accepted at once; the
//! rest wait in the kernel's backlog until one closes. Each lives at most
//! [`LIFETIME`], so connections left open (before any token is checked)
//! cannot hold the permits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Web connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a web connection lives, sending or not: long enough for any
/// page or scrape (a keep-alive client connects again), short enough that
/// connections opened and left idle, with no token even, cannot keep the
/// permits from everyone else.
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// A listener that holds a permit per open connection.
#[derive(Debug)]
pub struct Capped {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    lifetime: std::time::Duration,
}

impl Capped {
    /// Caps `inner` at [`MAX_CONNECTIONS`].
    pub fn new(inner: TcpListener) -> Self {
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            lifetime: LIFETIME,
        }
    }

    /// Connections closed after `lifetime` instead of [`LIFETIME`].
    pub fn with_lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
}

impl axum::serve::Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                // Never closed; wait for ever rather than spin.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    return (
                        Held {
                            stream,
                            _permit: permit,
                            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
                        },
                        addr,
                    )
                }
                Err(e) => {
                    // Typically EMFILE: back off rather than spin.
                    tracing::error!("web: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection and its permit, released when it closes; past
/// its deadline every read and write fails, so hyper closes it.
#[derive(Debug)]
pub struct Held {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Held {
    /// An error once the deadline has passed (the timer wakes the task
    /// then, even while the peer sends nothing).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "web connection past its lifetime"))
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
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

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_closes() {
        let mut capped = Capped::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = capped.local_addr().unwrap();
        let mut clients = Vec::new();
        for _ in 0..=MAX_CONNECTIONS {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(capped.accept().await.0);
        }
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(200), capped.accept());
        assert!(waiting.await.is_err(), "one more waits");
        held.pop();
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), capped.accept());
        assert!(next.await.is_ok(), "and is accepted once one closes");
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
