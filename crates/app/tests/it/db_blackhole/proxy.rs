//! A TCP proxy that can be frozen into a network blackhole.
//!
//! While frozen it keeps every connection open and accepts new ones, but
//! forwards no byte in either direction: to PostgreSQL's clients the server
//! simply stops answering, as when packets are silently dropped (no RST, no
//! FIN, nothing for the client to see but silence).
//!
//! Unfreezing delivers what was held back and resumes forwarding. That is
//! what a real network does after a partition shorter than TCP's
//! retransmission timeout: the connections survive and retransmitted bytes
//! arrive late. So queries the client gave up on may still run on the server
//! after the deadline: the ambiguous outcome the store's idempotent writes
//! must absorb, which this proxy makes the test exercise.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(watch::channel(false).0);
        let accept = {
            let frozen = frozen.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(connection(client, upstream, frozen.subscribe()));
                }
            })
        };
        Self { addr, frozen, accept }
    }

    /// Stops forwarding; connections stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// A handle that freezes this proxy when called, from anywhere.
    pub fn freezer(&self) -> impl FnOnce() + Send + 'static {
        let frozen = self.frozen.clone();
        move || {
            frozen.send_replace(true);
        }
    }

    /// Delivers what was held back and forwards again.
    pub fn unfreeze(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection: connected upstream at once (the handshake bytes
/// then wait like any other while frozen), pumped both ways.
async fn connection(client: TcpStream, upstream: SocketAddr, frozen: watch::Receiver<bool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    let up = tokio::spawn(pump(client_rd, server_wr, frozen.clone()));
    let down = tokio::spawn(pump(server_rd, client_wr, frozen));
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to`. Bytes read while frozen are held until the thaw,
/// and nothing more is read meanwhile; end of stream is passed on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let read = from.read(&mut buf).await;
        // The freeze may have come while this read was waiting: hold even
        // an end of stream until the thaw, as a real network would.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
