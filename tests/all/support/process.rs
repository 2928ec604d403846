//! Test servers run as child processes (Prism, scim2-server): a free
//! loopback port, and a wait that polls until the server accepts
//! connections (or exits, or the time runs out).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Polls `port` until it accepts a connection; says why not otherwise.
pub fn wait_listening(child: &mut Child, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early: {status}"));
        }
        if TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("did not listen on {} within {within:?}", loopback(port)))
}
