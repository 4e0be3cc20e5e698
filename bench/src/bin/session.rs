//! Session benchmarks (issue 2):
//!
//! 1. Throughput of ferry's framed Noise channel (fragmenting, framing,
//!    ChaCha20-Poly1305, TCP over loopback, decryption on the other side)
//!    against raw snow encryption of the same bytes in the same run, and
//!    plain TCP over loopback (the same messages, no cipher). Each side of
//!    the channel seals or opens and makes one kernel copy, one after the
//!    other, so its bound is `1 / (1/raw + 1/tcp)`, printed beside it.
//! 2. Handshakes per second that a real `ferry-relay` process accepts.
//!
//! Usage: `session [--relay-bin PATH --endpoint-bin PATH]`; without the
//! binaries only the throughput part runs. `bench/run.sh` builds them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_bench::relay::{self, PairedClient};
use ferry_bench::{median, mib_per_s};
use ferry_net::io::{Channel, FramedIo};
use ferry_protocol::keys::StaticKeypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Application message size: one Noise message's worth, as bulk data frames use.
const MESSAGE: usize = 65_000;
/// Bytes moved per throughput sample.
const VOLUME: u64 = 1 << 30;
const ROUNDS: usize = 5;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "## Session throughput ({} MiB per sample, {MESSAGE}-byte messages, median of {ROUNDS})",
        VOLUME >> 20
    );
    let (mut raw, mut chan, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        raw.push(raw_snow_encrypt()?);
        chan.push(runtime.block_on(channel_over_loopback())?);
        tcp.push(runtime.block_on(plain_tcp_over_loopback())?);
    }
    let (raw, chan, tcp) = (median(&raw), median(&chan), median(&tcp));
    let bound = 1.0 / (1.0 / raw + 1.0 / tcp);
    println!("| path | MiB/s |\n| --- | --- |");
    println!("| raw snow encryption (one core) | {raw:.0} |");
    println!("| plain TCP over loopback, no cipher | {tcp:.0} |");
    println!(
        "| ferry channel over loopback TCP (bound: cipher then copy, {bound:.0}) | {chan:.0} |"
    );
    println!(
        "ratio channel / raw: {:.2} (bound {:.2}); channel / bound: {:.2}",
        chan / raw,
        bound / raw,
        chan / bound
    );

    if let (Some(relay), Some(endpoint)) = (arg("--relay-bin"), arg("--endpoint-bin")) {
        println!();
        println!("## Handshakes per second accepted by ferry-relay (median of {ROUNDS} x 5 s)");
        let rates = runtime.block_on(handshake_rate(&relay, &endpoint))?;
        println!("samples: {rates:?}");
        println!("median: {:.0} handshakes/s", median(&rates));
    }
    Ok(())
}

fn transports() -> Result<(
    ferry_protocol::transport::Transport,
    ferry_protocol::transport::Transport,
)> {
    Ok(ferry_protocol::session::local_pair()?)
}

/// Raw snow: encrypt VOLUME bytes in Noise-sized messages, nothing else.
fn raw_snow_encrypt() -> Result<f64> {
    let relay = StaticKeypair::generate()?;
    let endpoint = StaticKeypair::generate()?;
    let params: snow::params::NoiseParams = ferry_protocol::noise::SESSION_PATTERN.parse()?;
    let mut init = snow::Builder::new(params.clone())
        .local_private_key(endpoint.secret())?
        .remote_public_key(&relay.public.0)?
        .build_initiator()?;
    let mut resp = snow::Builder::new(params)
        .local_private_key(relay.secret())?
        .build_responder()?;
    let (mut a, mut b) = (vec![0u8; 65535], vec![0u8; 65535]);
    let n = init.write_message(&[], &mut a)?;
    resp.read_message(&a[..n], &mut b)?;
    let n = resp.write_message(&[], &mut a)?;
    init.read_message(&a[..n], &mut b)?;
    let mut transport = init.into_transport_mode()?;
    let plaintext = vec![0x5a; MESSAGE];
    let start = Instant::now();
    let mut done = 0u64;
    while done < VOLUME {
        let n = transport.write_message(&plaintext, &mut a)?;
        std::hint::black_box(&a[..n]);
        done += MESSAGE as u64;
    }
    Ok(mib_per_s(done, start.elapsed()))
}

/// ferry's channel: sender task and receiver task over a loopback socket.
async fn channel_over_loopback() -> Result<f64> {
    let (sender, receiver) = transports()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receive = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let mut channel = Channel::new(FramedIo::new(stream), receiver);
        let mut got = 0u64;
        while got < VOLUME {
            got += channel.recv_encoded().await?.len() as u64;
        }
        anyhow::Ok(got)
    });
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut channel = Channel::new(FramedIo::new(stream), sender);
    let payload = vec![0x5a; MESSAGE];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < VOLUME {
        channel.send_encoded(payload.clone()).await?;
        sent += MESSAGE as u64;
    }
    let got = receive.await??;
    Ok(mib_per_s(got, start.elapsed()))
}

/// The same messages over a loopback socket with no cipher and no framing:
/// what the kernel's copies alone allow.
async fn plain_tcp_over_loopback() -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let receive = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; MESSAGE];
        let mut got = 0u64;
        while got < VOLUME {
            let n = stream.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "sender closed early");
            got += n as u64;
        }
        anyhow::Ok(got)
    });
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let payload = vec![0x5a; MESSAGE];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < VOLUME {
        stream.write_all(&payload).await?;
        sent += MESSAGE as u64;
    }
    let got = receive.await??;
    Ok(mib_per_s(got, start.elapsed()))
}

/// Starts a real relay, pairs some clients through the real binaries, then
/// has workers open sessions as fast as the relay answers.
async fn handshake_rate(
    relay_bin: &std::path::Path,
    endpoint_bin: &std::path::Path,
) -> Result<Vec<f64>> {
    const CLIENTS: usize = 16;
    let mut relay = relay::start(relay_bin, endpoint_bin, CLIENTS, |config| {
        config.replace(
            "handshakes-per-second-per-source = 20",
            "handshakes-per-second-per-source = 0",
        )
    })?;
    let session = relay.session;
    let clients: Vec<Arc<PairedClient>> = std::mem::take(&mut relay.clients)
        .into_iter()
        .map(Arc::new)
        .collect();
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = clients
            .iter()
            .map(|c| {
                let (c, count, stop) = (Arc::clone(c), Arc::clone(&count), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if one_handshake(session, &c).await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let window = Duration::from_secs(5);
        tokio::time::sleep(window).await;
        let n = count.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await?;
        }
        rates.push(n as f64 / window.as_secs_f64());
    }
    drop(relay);
    Ok(rates)
}

/// One session handshake: counts once the relay's answer frame arrives (the
/// client does not spend CPU finishing it: the relay is what is measured).
async fn one_handshake(addr: std::net::SocketAddr, client: &PairedClient) -> Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (_, out) = client.first_message()?;
    stream.write_all(&out).await?;
    let mut answer = [0u8; 8 + 2 + 48];
    stream.read_exact(&mut answer).await?;
    Ok(())
}
