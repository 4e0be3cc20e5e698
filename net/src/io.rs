//! Thin tokio adapters around the sans-IO protocol, and key files on disk.
//!
//! [`FramedIo`] reads and writes [`ferry_protocol::frame`] frames on any async stream
//! and counts the bytes that crossed it; [`Channel`] adds a
//! [`Transport`] to move whole [`Message`]s. [`keyfile`] stores static keys
//! with mode 0600 and refuses key files that others can read.
//! Everything with a decision in it lives in the sans-IO modules; this module
//! only moves bytes.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use ferry_protocol::frame::{encode_frame, parse_frame, HEADER_LEN, MAX_FRAME};
use ferry_protocol::message::Message;
use ferry_protocol::transport::{sealed_len, Transport};
use ferry_protocol::version::PREAMBLE_LEN;
use ferry_protocol::ProtocolError;

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer closed the connection.
    #[error("the connection was closed by the peer")]
    Closed,
    /// A socket error.
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that break the protocol.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// A write was not taken within this long: the peer stopped reading.
    #[error("the peer stopped reading (a write was not taken within {0:?})")]
    Stalled(std::time::Duration),
}

/// A byte stream a session runs over: a TCP connection, or one end of an
/// in-process pipe (`tokio::io::duplex`, the pair harness of the tests).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

impl std::fmt::Debug for dyn Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

/// Any [`Stream`], boxed: what an endpoint's session holds.
pub type BoxStream = Box<dyn Stream>;

/// Bytes the read buffer asks the socket for at a time: several frames, so
/// bulk transfers cost few system calls.
const READ_CHUNK: usize = 4 * (HEADER_LEN + MAX_FRAME);

/// Frames over an async byte stream, with byte counters.
#[derive(Debug)]
pub struct FramedIo<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    bytes_read: u64,
    bytes_written: u64,
    write_time: std::time::Duration,
    /// A write that takes longer fails with [`ChannelError::Stalled`].
    write_timeout: Option<std::time::Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedIo<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        FramedIo {
            stream,
            buf: Vec::new(),
            start: 0,
            bytes_read: 0,
            bytes_written: 0,
            write_time: std::time::Duration::ZERO,
            write_timeout: None,
        }
    }

    /// Fails any later write the peer does not take whole within `timeout`: a
    /// peer that stops reading must not hold the sender (its task, its
    /// buffers, its permits) for ever.
    pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.write_timeout = timeout;
    }

    /// Bytes received on the stream so far (framing and encryption included).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Bytes sent on the stream so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Time spent in writes so far: mostly waiting for the socket to take
    /// more, so its share of the wall time tells whether the link is what
    /// limits the sender.
    pub fn write_time(&self) -> std::time::Duration {
        self.write_time
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Reads more bytes from the socket. Consumed bytes are dropped from the
    /// front only when the spare room is short of a whole frame, so a bulk
    /// transfer moves a partial frame at most once per [`READ_CHUNK`].
    async fn fill(&mut self) -> Result<(), ChannelError> {
        if self.buf.capacity() - self.buf.len() < HEADER_LEN + MAX_FRAME {
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        self.bytes_read += n as u64;
        Ok(())
    }

    /// Reads the 8-byte preamble. Cancel-safe: bytes read stay buffered.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] on EOF, [`ChannelError::Io`] on socket errors.
    pub async fn read_preamble(&mut self) -> Result<[u8; PREAMBLE_LEN], ChannelError> {
        while self.buf.len() - self.start < PREAMBLE_LEN {
            self.fill().await?;
        }
        let mut out = [0u8; PREAMBLE_LEN];
        out.copy_from_slice(&self.buf[self.start..self.start + PREAMBLE_LEN]);
        self.start += PREAMBLE_LEN;
        Ok(out)
    }

    /// Reads one frame and returns its payload, borrowed from the read buffer
    /// until the next read. Cancel-safe: bytes read stay buffered.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] on EOF, [`ChannelError::Protocol`] for a bad frame.
    pub async fn next_frame(&mut self) -> Result<&[u8], ChannelError> {
        loop {
            let found =
                parse_frame(&self.buf[self.start..])?.map(|(payload, used)| (payload.len(), used));
            if let Some((len, used)) = found {
                let begin = self.start + HEADER_LEN;
                self.start += used;
                return Ok(&self.buf[begin..begin + len]);
            }
            self.fill().await?;
        }
    }

    /// Reads one frame and returns a copy of its payload.
    ///
    /// # Errors
    /// As [`FramedIo::next_frame`].
    pub async fn read_frame(&mut self) -> Result<Vec<u8>, ChannelError> {
        Ok(self.next_frame().await?.to_vec())
    }

    /// Writes raw bytes (a preamble, or frames already encoded) and flushes.
    ///
    /// # Errors
    /// [`ChannelError::Io`] on socket errors.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
        let started = std::time::Instant::now();
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match self.write_timeout {
            Some(limit) => tokio::time::timeout(limit, write)
                .await
                .map_err(|_| ChannelError::Stalled(limit))??,
            None => write.await?,
        }
        self.write_time += started.elapsed();
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Frames `payload` and writes it.
    ///
    /// # Errors
    /// As [`FramedIo::write_raw`], or [`ChannelError::Protocol`] when too large.
    pub async fn write_frame(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        encode_frame(payload, &mut out)?;
        self.write_raw(&out).await
    }

    /// Shuts down the write half, so the peer reads EOF, then discards what
    /// the peer still sends until it closes too (at most `linger`, at most
    /// 64 MiB). Closing with unread bytes would make the kernel send a reset,
    /// which can destroy our last message (an error the user must see)
    /// before the peer reads it.
    pub async fn close(&mut self, linger: std::time::Duration) {
        // The connection is being dropped; a failed shutdown changes nothing.
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut left: usize = 64 << 20;
            while left > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(linger, drain).await;
    }
}

/// An established, encrypted message channel.
#[derive(Debug)]
pub struct Channel<S> {
    /// The framed stream underneath.
    pub io: FramedIo<S>,
    transport: Transport,
    /// Output buffer kept for the connection's life, grown on demand.
    out: Vec<u8>,
    /// Shared by the channels whose messages of several frames may be
    /// joined at once (see [`Channel::joining_within`]).
    joins: Option<Arc<Semaphore>>,
    /// This channel's place among them while it joins a message.
    joining: Option<OwnedSemaphorePermit>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// Joins a framed stream and a finished handshake.
    pub fn new(io: FramedIo<S>, transport: Transport) -> Self {
        Channel {
            io,
            transport,
            out: Vec::new(),
            joins: None,
            joining: None,
        }
    }

    /// Joins a message of several frames (up to 4 MiB) only while holding
    /// one of `joins`' permits: a relay bounds what all its sessions'
    /// half-received messages hold together (each waiting channel holds one
    /// frame). Past its first frame, a message waits here for a permit
    /// before its room is made, and gives it back when it is whole.
    pub fn joining_within(mut self, joins: Arc<Semaphore>) -> Self {
        self.joins = Some(joins);
        self
    }

    /// Encrypts and sends one message.
    ///
    /// # Errors
    /// [`ChannelError`] on socket or encoding failures.
    pub async fn send(&mut self, message: &Message) -> Result<(), ChannelError> {
        self.send_encoded(message.encode()?).await
    }

    /// Like [`Channel::send`], writing at most `slice` bytes at a time and
    /// awaiting `pace(n)` after each `n` written: a rate limit then holds
    /// the bytes themselves, so the peer sees a steady trickle rather than
    /// a burst and then minutes of silence (which it would take for a dead
    /// link), and a sender learns of a closed connection within one slice.
    ///
    /// # Errors
    /// As [`Channel::send`].
    pub async fn send_paced<F, Fut>(
        &mut self,
        message: &Message,
        slice: usize,
        mut pace: F,
    ) -> Result<(), ChannelError>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let bytes = message.encode()?;
        let needed = sealed_len(bytes.len());
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let written = self.transport.seal_into(bytes, &mut self.out)?;
        let out = std::mem::take(&mut self.out);
        let mut sent = Ok(());
        for piece in out[..written].chunks(slice.max(1)) {
            sent = self.io.write_raw(piece).await;
            if sent.is_err() {
                break;
            }
            pace(piece.len()).await;
        }
        self.out = out;
        sent
    }

    /// Encrypts and sends one already-encoded application message.
    ///
    /// # Errors
    /// [`ChannelError`] on socket failures or a message over the size limit.
    pub async fn send_encoded(&mut self, bytes: Vec<u8>) -> Result<(), ChannelError> {
        let needed = sealed_len(bytes.len());
        if self.out.len() < needed {
            self.out.resize(needed, 0);
        }
        let written = self.transport.seal_into(bytes, &mut self.out)?;
        self.io.write_raw(&self.out[..written]).await
    }

    /// Receives one application message as its encoded bytes. Cancel-safe
    /// between frames.
    ///
    /// # Errors
    /// [`ChannelError::Protocol`] with [`ProtocolError::Crypto`] on the first
    /// frame that fails to authenticate: close the connection then.
    pub async fn recv_encoded(&mut self) -> Result<Vec<u8>, ChannelError> {
        loop {
            // A message of several frames goes on only with a permit (if
            // this channel is bounded); taken before the next frame is read,
            // so a cancelled wait loses nothing.
            if self.transport.joining() && self.joining.is_none() {
                if let Some(joins) = &self.joins {
                    let permit = Arc::clone(joins)
                        .acquire_owned()
                        .await
                        .map_err(|_| ChannelError::Closed)?;
                    self.joining = Some(permit);
                }
                self.transport.reserve_join();
            }
            let frame = self.io.next_frame().await?;
            if let Some(bytes) = self.transport.open_bytes(frame)? {
                self.joining = None;
                return Ok(bytes);
            }
        }
    }

    /// Receives one message. Cancel-safe between frames.
    ///
    /// # Errors
    /// As [`Channel::recv_encoded`], and decoding errors.
    pub async fn recv(&mut self) -> Result<Message, ChannelError> {
        Ok(Message::decode(&self.recv_encoded().await?)?)
    }
}

/// Resolves on SIGINT or SIGTERM: the relay and the endpoint daemon stop
/// cleanly on either. If the handlers cannot be installed it never resolves
/// (the process can still be killed) and says so in the log.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot install signal handlers ({e}); stop this process with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// Static key files: hex text, mode 0600, written atomically; and the
/// check that a configuration file or script is safe to act on.
pub mod keyfile {
    use std::fs::{self, File, OpenOptions};
    use std::io::{self, Write};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    use ferry_protocol::keys::StaticKeypair;

    /// Writes `contents` to `path` with mode 0600: temp file, fsync, rename,
    /// fsync of the directory, so a crash leaves the old file or the new one.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = path.with_extension("tmp");
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    }

    /// Checks that only this user (or root) can change `path` and the
    /// directory holding it: a configuration file, or a script the
    /// endpoint runs (as root, for snapshots), that others can write would
    /// let them act as this user. As ssh refuses such files.
    ///
    /// # Errors
    /// `PermissionDenied` naming the file and what is wrong; I/O errors.
    pub fn check_trusted(path: &Path) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        for (what, place) in [(path, false), (dir.unwrap_or(Path::new(".")), true)] {
            let meta = fs::metadata(what)?;
            let sticky = place && meta.mode() & 0o1000 != 0;
            let problem = if meta.uid() != me && meta.uid() != 0 {
                Some(format!("is owned by user {}", meta.uid()))
            } else if meta.mode() & 0o022 != 0 && !sticky {
                Some(format!(
                    "can be written by others (mode {:04o})",
                    meta.mode() & 0o7777
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                let fix = if place { "its directory" } else { "it" };
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "refusing {}: {} {problem}; make {fix} writable by its owner only",
                        path.display(),
                        what.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Loads the key pair at `path`.
    ///
    /// # Errors
    /// `NotFound` if absent; `PermissionDenied` if group or others may read
    /// it (as ssh refuses such keys); `InvalidData` if it is not a key.
    pub fn load(path: &Path) -> io::Result<StaticKeypair> {
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "key file {} is accessible by others (mode {:04o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o7777
                ),
            ));
        }
        let text = zeroize::Zeroizing::new(fs::read_to_string(path)?);
        StaticKeypair::from_secret_hex(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("key file {}: {e}", path.display()),
            )
        })
    }

    /// Creates a new key pair at `path` unless one exists; returns it and
    /// whether it was created.
    ///
    /// # Errors
    /// As [`load`] and [`write_private`].
    pub fn load_or_create(path: &Path) -> io::Result<(StaticKeypair, bool)> {
        match load(path) {
            Ok(keys) => Ok((keys, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let keys =
                    StaticKeypair::generate().map_err(|e| io::Error::other(e.to_string()))?;
                let text = zeroize::Zeroizing::new(format!("{}\n", keys.secret_hex()));
                write_private(path, text.as_bytes())?;
                Ok((keys, true))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    /// A receiving channel bounded by `joins`, the socket its peer writes
    /// to, and a message of several frames sealed for it.
    async fn bounded(joins: &Arc<Semaphore>) -> (Channel<TcpStream>, TcpStream, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (reader, _) = listener.accept().await.unwrap();
        let (mut sender, receiver) = ferry_protocol::session::local_pair().unwrap();
        let message = vec![7u8; 1 << 20];
        let mut sealed = vec![0; sealed_len(message.len())];
        let n = sender.seal_into(message, &mut sealed).unwrap();
        sealed.truncate(n);
        let channel =
            Channel::new(FramedIo::new(reader), receiver).joining_within(Arc::clone(joins));
        (channel, writer, sealed)
    }

    #[tokio::test]
    async fn messages_of_several_frames_are_joined_only_within_the_shared_permits() {
        let joins = Arc::new(Semaphore::new(1));
        let (mut a, mut a_writer, a_sealed) = bounded(&joins).await;
        let (mut b, mut b_writer, b_sealed) = bounded(&joins).await;
        // A's first half arrives: A joins, holding the only permit.
        let half = a_sealed.len() / 2;
        a_writer.write_all(&a_sealed[..half]).await.unwrap();
        let a_recv = tokio::spawn(async move { (a.recv_encoded().await.unwrap().len(), a) });
        tokio::time::timeout(Duration::from_secs(5), async {
            while joins.available_permits() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("A takes the permit");
        // B's whole message arrives, but B waits after its first frame.
        b_writer.write_all(&b_sealed).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), b.recv_encoded()).await;
        assert!(waiting.is_err(), "B joins nothing while A holds the permit");
        assert!(b.transport.joining(), "B holds its first frame only");
        // A completes and gives the permit back; B goes on.
        a_writer.write_all(&a_sealed[half..]).await.unwrap();
        assert_eq!(a_recv.await.unwrap().0, 1 << 20);
        let got = tokio::time::timeout(Duration::from_secs(5), b.recv_encoded())
            .await
            .expect("B completes once the permit is free")
            .unwrap();
        assert_eq!(got.len(), 1 << 20);
        assert_eq!(joins.available_permits(), 1);
    }
}
