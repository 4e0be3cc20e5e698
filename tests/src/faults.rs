//! A fault-injecting proxy in front of an HTTP server (the tests' object
//! store): it passes connections through (at once, or late), answers every
//! request with a 500, resets each connection as it opens, or cuts each
//! one after its first bytes (an upload cut in half). Changing the fault closes
//! every open connection, so a client's pooled one cannot slip past it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy does to the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes bytes both ways untouched.
    None,
    /// Answers every request `500 Internal Server Error`.
    Status500,
    /// Closes each connection as soon as it is accepted.
    Reset,
    /// Passes each connection's first bytes toward the server (a request's
    /// head and part of its body), then cuts it: an upload cut in half.
    CutAfter(usize),
    /// Passes bytes through, each connection starting this late: a slow
    /// store.
    Slow(std::time::Duration),
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    /// The streams of the connections open, to close on a change.
    open: Mutex<Vec<TcpStream>>,
    /// Requests refused (answered 500, or connections reset).
    refused: AtomicUsize,
}

/// A running proxy, serving until the test ends.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: give it to the client in place of the server.
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Proxies to the server at `target` (`http://HOST:PORT`).
    ///
    /// # Panics
    /// When it cannot bind.
    pub fn start(target: &str) -> Self {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .parse()
            .expect("an http://IP:PORT target");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            open: Mutex::default(),
            refused: AtomicUsize::new(0),
        });
        let serving = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = Arc::clone(&serving);
                thread::spawn(move || serve(client, target, &shared));
            }
        });
        FaultProxy { endpoint, shared }
    }

    /// Injects `fault` from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

fn serve(client: TcpStream, target: SocketAddr, shared: &Shared) {
    let fault = *shared.fault.lock().unwrap();
    match fault {
        Fault::Reset => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Status500 => answer_500(client, shared),
        Fault::CutAfter(limit) => cut_after(client, target, limit, shared),
        Fault::Slow(delay) => {
            thread::sleep(delay);
            pass(client, target, shared);
        }
        Fault::None => pass(client, target, shared),
    }
}

/// Forwards `limit` bytes of the request, then closes both ends.
fn cut_after(client: TcpStream, target: SocketAddr, limit: usize, shared: &Shared) {
    let Ok(mut server) = TcpStream::connect(target) else {
        return;
    };
    shared
        .open
        .lock()
        .unwrap()
        .push(client.try_clone().unwrap());
    let mut forwarded = 0;
    let mut buffer = vec![0; 64 * 1024];
    let mut reader = &client;
    while forwarded < limit {
        let want = buffer.len().min(limit - forwarded);
        match reader.read(&mut buffer[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if server.write_all(&buffer[..n]).is_err() {
                    break;
                }
                forwarded += n;
            }
        }
    }
    shared.refused.fetch_add(1, Ordering::Relaxed);
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

/// Passes bytes both ways until either end closes.
fn pass(client: TcpStream, target: SocketAddr, shared: &Shared) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    {
        let mut open = shared.open.lock().unwrap();
        open.push(client.try_clone().unwrap());
        open.push(server.try_clone().unwrap());
    }
    let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let (mut down_from, mut down_to) = (server, client);
    let _ = std::io::copy(&mut down_from, &mut down_to);
    let _ = down_to.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// Reads each request (its head and its `Content-Length` body) and answers
/// it with a 500, until the client closes.
fn answer_500(client: TcpStream, shared: &Shared) {
    shared
        .open
        .lock()
        .unwrap()
        .push(client.try_clone().unwrap());
    let mut writer = client.try_clone().unwrap();
    let mut reader = BufReader::new(client);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink()).is_err() {
            return;
        }
        shared.refused.fetch_add(1, Ordering::Relaxed);
        let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
        let answer = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
