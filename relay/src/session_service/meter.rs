//! What a session's traffic costs: its client's and the relay's bandwidth
//! buckets, the metrics' counters, and whether a backup is open.

use std::sync::Arc;

use ferry_net::io::FramedIo;
use ferry_net::io::Stream;
use ferry_net::throttle::Throttle;
use prometheus_client::metrics::counter::Counter;

/// Whether a session has an upload open: begun, not yet committed. A
/// session that ends so counts as a failed backup.
#[derive(Debug, Default)]
pub struct BackupWatch {
    /// `BackupBegin` received and no `Committed` sent since.
    pub open: bool,
}

/// Makes a session's traffic wait on its client's bucket and the global
/// one, and counts it for the metrics.
#[derive(Debug)]
pub struct Meter {
    client: Arc<Throttle>,
    global: Arc<Throttle>,
    read: u64,
    written: u64,
    counted: Option<(Counter, Counter)>,
}

impl Meter {
    /// Meters through these buckets from now on.
    pub fn new<S: Stream>(client: Arc<Throttle>, global: Arc<Throttle>, io: &FramedIo<S>) -> Self {
        Meter {
            client,
            global,
            read: io.bytes_read(),
            written: io.bytes_written(),
            counted: None,
        }
    }

    /// Also adds the bytes read and written to these counters, those of
    /// the handshake first.
    pub fn counting(mut self, (received, sent): (Counter, Counter)) -> Self {
        received.inc_by(self.read);
        sent.inc_by(self.written);
        self.counted = Some((received, sent));
        self
    }

    /// Waits for the bytes moved since the last call, in both directions.
    /// Waiting after a read delays the next one, so TCP slows the sender.
    pub async fn settle<S: Stream>(&mut self, io: &FramedIo<S>) {
        let (read, written) = (
            io.bytes_read() - self.read,
            io.bytes_written() - self.written,
        );
        let moved = read + written;
        self.read = io.bytes_read();
        self.written = io.bytes_written();
        if let Some((received, sent)) = &self.counted {
            received.inc_by(read);
            sent.inc_by(written);
        }
        if moved > 0 {
            self.client.consume(moved as usize).await;
            self.global.consume(moved as usize).await;
        }
    }
}
