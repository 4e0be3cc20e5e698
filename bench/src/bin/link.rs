//! An emulated internet link between two local TCP peers: a proxy that
//! delays each direction by half the round trip, paces it at its own rate,
//! and holds at most a bounded queue (a full queue stops reading, so the
//! sender's TCP backs off, as behind a real bottleneck). This machine's
//! kernel has no netem; this stands in for it.
//!
//! Usage: `link --to HOST:PORT --rtt 60ms --up 10Mbit --down 50Mbit
//! [--queue 256KiB]`. "Up" is from the connecting side to `--to`. Prints
//! the port it listens on (127.0.0.1), then serves until killed.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_protocol::units::{parse_duration, parse_size};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// One direction's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// One-way delay: half the round trip.
    delay: Duration,
    /// Bytes per second.
    rate: f64,
    /// Bytes in flight inside the link at most.
    queue: usize,
}

/// Reads are cut into pieces of at most this many bytes.
const PIECE: usize = 16 << 10;

/// Parses `10Mbit`, `2Mbit`, `100Mbit` (bits per second) into bytes per second.
fn parse_bits(text: &str) -> Result<f64> {
    let number = text
        .strip_suffix("Mbit")
        .with_context(|| format!("{text:?}: give a rate such as 10Mbit"))?;
    Ok(number.parse::<f64>()? * 1e6 / 8.0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(to), Some(rtt), Some(up), Some(down)) = (
        arg(&args, "--to"),
        arg(&args, "--rtt"),
        arg(&args, "--up"),
        arg(&args, "--down"),
    ) else {
        bail!("usage: link --to HOST:PORT --rtt 60ms --up 10Mbit --down 50Mbit [--queue 256KiB]");
    };
    let to: SocketAddr = to.parse().context("--to")?;
    let delay = parse_duration(&rtt).map_err(anyhow::Error::msg)? / 2;
    let queue = parse_size(&arg(&args, "--queue").unwrap_or_else(|| "256KiB".into()))
        .map_err(anyhow::Error::msg)? as usize;
    let up = Shape {
        delay,
        rate: parse_bits(&up)?,
        queue,
    };
    let down = Shape {
        rate: parse_bits(&down)?,
        ..up
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Ok(server) = TcpStream::connect(to).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    carry(client_read, server_write, up),
                    carry(server_read, client_write, down)
                );
            }
        });
    }
}

/// Carries one direction: pieces enter the link as they are read (while
/// the queue has room), are serialized at the rate one after the other,
/// and arrive one delay after their last byte left.
async fn carry(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shape: Shape) {
    // The queue, and what the wire itself holds while it propagates.
    let in_flight = (shape.rate * shape.delay.as_secs_f64()) as usize;
    let room = std::sync::Arc::new(Semaphore::new(shape.queue + in_flight));
    let (pieces, mut arriving) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let room = std::sync::Arc::clone(&room);
        async move {
            let mut buffer = vec![0u8; PIECE];
            while let Ok(n) = from.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                // Held until the piece leaves the link.
                let Ok(permit) = room.acquire_many(n as u32).await else {
                    break;
                };
                permit.forget();
                if pieces.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    };
    let writer = async move {
        // When the link's wire is free again.
        let mut wire_free = Instant::now();
        while let Some((entered, bytes)) = arriving.recv().await {
            // Serialized onto the wire at the rate, then propagated.
            let start = wire_free.max(entered);
            wire_free = start + Duration::from_secs_f64(bytes.len() as f64 / shape.rate);
            tokio::time::sleep_until(wire_free + shape.delay).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
            room.add_permits(bytes.len());
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
