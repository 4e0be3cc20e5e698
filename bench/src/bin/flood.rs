//! Hostile clients pushing tiny chunks without ever syncing (issue 13):
//! paired clients each open a backup and send `PutChunks` batches of tiny
//! distinct chunks, never a `Sync`, until they have sent `--entries` or
//! the relay refuses them. Prints how far each got, how it ended, and the
//! relay's peak RSS.
//!
//! Usage: `flood --relay-bin PATH --endpoint-bin PATH [--clients N] [--entries N]`
//! (`bench/flood.sh` builds the binaries and runs 50 × 10^6).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_bench::relay::{self, peak_rss_mib, PairedClient};
use ferry_net::io::{Channel, FramedIo};
use ferry_protocol::compress::Codec;
use ferry_protocol::message::{ChunkBatch, ChunkPut, Hello, Message, MAX_BATCH};
use ferry_protocol::retention::Retention;
use tokio::net::TcpStream;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let relay_bin = PathBuf::from(arg("--relay-bin").context("--relay-bin")?);
    let endpoint_bin = PathBuf::from(arg("--endpoint-bin").context("--endpoint-bin")?);
    let clients: usize = arg("--clients").map_or(Ok(50), |n| n.parse())?;
    let entries: usize = arg("--entries").map_or(Ok(1_000_000), |n| n.parse())?;
    let mut relay = relay::start(&relay_bin, &endpoint_bin, clients, |config| {
        config
            .replace(
                "handshakes-per-second-per-source = 20",
                "handshakes-per-second-per-source = 0",
            )
            .replace(
                "max-connections-per-source = 64",
                "max-connections-per-source = 1024",
            )
    })?;
    let pid = relay.process.id();
    let started = Instant::now();
    let tasks: Vec<_> = std::mem::take(&mut relay.clients)
        .into_iter()
        .enumerate()
        .map(|(n, client)| tokio::spawn(flood(relay.session, client, n as u32, entries)))
        .collect();
    let mut peak = 0f64;
    let mut outcomes = Vec::new();
    for task in tasks {
        while !task.is_finished() {
            peak = peak.max(peak_rss_mib(pid).unwrap_or(0.0));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        outcomes.push(task.await?);
    }
    peak = peak.max(peak_rss_mib(pid).unwrap_or(0.0));
    let sent: Vec<usize> = outcomes.iter().map(|(sent, _)| *sent).collect();
    println!(
        "{clients} clients, up to {entries} tiny chunks each without a Sync, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "chunks sent per client: min {}, max {}",
        sent.iter().min().unwrap_or(&0),
        sent.iter().max().unwrap_or(&0)
    );
    let mut endings: Vec<&String> = outcomes.iter().map(|(_, end)| end).collect();
    endings.sort();
    endings.dedup();
    for end in endings {
        println!("ended: {end}");
    }
    println!("relay peak RSS: {peak:.0} MiB");
    Ok(())
}

/// One hostile client; returns the chunks it sent and how it ended.
async fn flood(
    addr: std::net::SocketAddr,
    client: PairedClient,
    n: u32,
    entries: usize,
) -> (usize, String) {
    match flood_inner(addr, &client, n, entries).await {
        Ok(result) => result,
        Err(e) => (0, format!("error: {e:#}")),
    }
}

async fn flood_inner(
    addr: std::net::SocketAddr,
    client: &PairedClient,
    n: u32,
    entries: usize,
) -> Result<(usize, String)> {
    let stream = TcpStream::connect(addr).await?;
    let mut io = FramedIo::new(stream);
    let (initiator, out) = client.first_message()?;
    io.write_raw(&out).await?;
    io.read_preamble().await?;
    let answer = io.read_frame().await?;
    let mut channel = Channel::new(io, initiator.finish(&answer)?);
    channel
        .send(&Message::Hello(Hello {
            major: 1,
            minor: 3,
            software: "flood".into(),
        }))
        .await?;
    channel.recv().await?;
    channel
        .send(&Message::BackupBegin {
            set: "flood".into(),
            retention: Retention::default(),
        })
        .await?;
    channel.recv().await?;
    let mut sent = 0;
    while sent < entries {
        let puts = (0..MAX_BATCH.min(entries - sent))
            .map(|i| {
                let mut data = n.to_le_bytes().to_vec();
                data.extend_from_slice(&((sent + i) as u64).to_le_bytes());
                ChunkPut::Whole(data)
            })
            .collect();
        let data = ChunkBatch(puts).encode()?;
        let put = channel
            .send(&Message::PutChunks {
                codec: Codec::None,
                data,
            })
            .await;
        if put.is_err() {
            break;
        }
        sent += MAX_BATCH.min(entries - sent);
    }
    let end = match tokio::time::timeout(Duration::from_secs(30), channel.recv()).await {
        Ok(Ok(Message::Refused { message, .. })) => format!("refused: {message}"),
        Ok(Ok(other)) => format!("answered {}", other.name()),
        Ok(Err(e)) => format!("closed: {e}"),
        Err(_) => "still open after all was sent".into(),
    };
    Ok((sent, end))
}
