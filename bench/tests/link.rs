//! The emulated link delays and paces as it says: a ping-pong through it
//! takes at least its round trip, and a transfer at least its bytes over
//! its rate (lower bounds only: a busy machine makes either slower). Also
//! makes `cargo test --workspace` build the `link` binary the end-to-end
//! tests put in front of a relay.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn link_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_link"))
}

#[test]
fn the_link_delays_by_its_round_trip_and_paces_at_its_rate() {
    // An echo server behind the link.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = server.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 << 10];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut link = Command::new(link_binary())
        .args([
            "--to",
            &to.to_string(),
            "--rtt",
            "100ms",
            "--up",
            "8Mbit",
            "--down",
            "8Mbit",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(link.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();

    let started = Instant::now();
    stream.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).unwrap();
    let round_trip = started.elapsed();
    assert_eq!(&pong, b"ping");
    assert!(round_trip >= Duration::from_millis(100), "{round_trip:?}");

    // 1 MB each way at 8 Mbit/s (1 MB/s): at least a second.
    let data = vec![7u8; 1_000_000];
    let started = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&data).unwrap());
    let mut back = vec![0u8; 1_000_000];
    stream.read_exact(&mut back).unwrap();
    sending.join().unwrap();
    let took = started.elapsed();
    assert!(back.iter().all(|&b| b == 7));
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    eprintln!("figure: link 100 ms / 8 Mbit: round trip {round_trip:?}, 1 MB echoed in {took:?}");
    let _ = link.kill();
    let _ = link.wait();
}
