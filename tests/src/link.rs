//! The emulated internet link of `bench/` (the `link` binary: delay, rate,
//! bounded queue per direction) in front of a relay, for tests that count
//! what a slow link multiplies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::binary;

/// A running link; killed when dropped.
#[derive(Debug)]
pub struct Link {
    child: Child,
    /// Where the endpoint connects (127.0.0.1).
    pub addr: SocketAddr,
}

impl Link {
    /// Starts a link to `to` with this round trip (`100ms`) and these rates
    /// (`10Mbit` up, from the connecting side, and down).
    ///
    /// # Panics
    /// When the link cannot start.
    pub fn start(to: SocketAddr, rtt: &str, up: &str, down: &str) -> Self {
        let mut child = Command::new(binary("link"))
            .args([
                "--to",
                &to.to_string(),
                "--rtt",
                rtt,
                "--up",
                up,
                "--down",
                down,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the link");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the link prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        Link {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
