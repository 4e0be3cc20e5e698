//! A frame-aware TCP proxy for tests: sits between `ferry` and the relay,
//! records what each side sent, and can flip one byte inside one frame.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use ferry_protocol::version::PREAMBLE_LEN;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Endpoint to relay.
    ToRelay,
    /// Relay to endpoint.
    ToEndpoint,
}

/// A byte to flip: in the `frame`-th frame (0-based, after the preamble) of
/// one direction, at the middle of its payload.
#[derive(Debug, Clone, Copy)]
pub struct Flip {
    /// Direction of the frame.
    pub direction: Direction,
    /// Index of the frame in that direction.
    pub frame: usize,
}

/// A running proxy that serves connections until dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where `ferry` should connect.
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// Proxies to `target`, flipping `flip` if given, in every connection.
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start(target: SocketAddr, flip: Option<Flip>) -> Self {
        Self::start_dropping(target, flip, 0)
    }

    /// Like [`Proxy::start`], but closes the first `drops` connections at
    /// once without a word, as an overloaded relay may.
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start_dropping(target: SocketAddr, flip: Option<Flip>, drops: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&recorded);
        thread::spawn(move || {
            for (accepted, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                if accepted < drops {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    return;
                };
                let record = Arc::clone(&record);
                thread::spawn(move || serve(client, server, flip, record));
            }
        });
        Proxy { addr, recorded }
    }

    /// Everything endpoints sent towards the relay, concatenated.
    pub fn sent_to_relay(&self) -> Vec<u8> {
        self.recorded.lock().expect("lock").clone()
    }
}

fn serve(client: TcpStream, server: TcpStream, flip: Option<Flip>, record: Arc<Mutex<Vec<u8>>>) {
    let (c2, s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let up_flip = flip.filter(|f| f.direction == Direction::ToRelay);
    let down_flip = flip.filter(|f| f.direction == Direction::ToEndpoint);
    let up = thread::spawn(move || pump(client, server, up_flip, Some(record)));
    pump(s2, c2, down_flip, None);
    let _ = up.join();
}

/// Copies frames from `from` to `to` until either side closes.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<Flip>,
    record: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let forward = |bytes: &[u8], to: &mut TcpStream| -> bool {
        if let Some(r) = &record {
            r.lock().expect("lock").extend_from_slice(bytes);
        }
        to.write_all(bytes).is_ok()
    };
    let mut preamble = [0u8; PREAMBLE_LEN];
    if from.read_exact(&mut preamble).is_ok() && forward(&preamble, &mut to) {
        for index in 0.. {
            let mut header = [0u8; 2];
            if from.read_exact(&mut header).is_err() {
                break;
            }
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
            if from.read_exact(&mut payload).is_err() {
                break;
            }
            if flip.is_some_and(|f| f.frame == index) && !payload.is_empty() {
                let mid = payload.len() / 2;
                payload[mid] ^= 0x01;
            }
            let mut frame = header.to_vec();
            frame.extend_from_slice(&payload);
            if !forward(&frame, &mut to) {
                break;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
