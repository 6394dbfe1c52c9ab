//! Client listeners: accept on the system arbiter, hand each socket to one of the
//! worker arbiters (round robin), where negotiation and the connection actor run.

use crate::EdgeContext;
use crate::negotiate;
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a listener speaks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP with STARTTLS (RFC 6120, port 5222).
    StartTls,
    /// TLS from the first byte (XEP-0368, port 5223).
    DirectTls,
}

impl ListenerKind {
    /// The `transport` / `listener` label of this kind in metrics.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::StartTls => "starttls",
            ListenerKind::DirectTls => "direct_tls",
        }
    }
}

/// Running listeners; dropping this does not stop them, [`Listeners::stop`] does.
#[derive(Debug)]
pub struct Listeners {
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<(SocketAddr, ListenerKind)>,
}

impl Listeners {
    /// Binds every address (port 0 picks a free port) and starts accepting.
    pub async fn start(
        edge: Arc<EdgeContext>,
        specs: &[(SocketAddr, ListenerKind)],
        workers: Vec<ArbiterHandle>,
    ) -> std::io::Result<Listeners> {
        let workers = Arc::new(if workers.is_empty() {
            vec![Arbiter::current()]
        } else {
            workers
        });
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for &(addr, kind) in specs {
            let listener = bind(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            let local = listener.local_addr()?;
            addrs.push((local, kind));
            tracing::info!(address = %local, ?kind, "listening for clients");
            tasks.push(actix_rt::spawn(accept_loop(
                listener,
                kind,
                edge.clone(),
                workers.clone(),
                next.clone(),
            )));
        }
        Ok(Listeners { tasks, addrs })
    }

    /// The bound addresses, in the order given.
    pub fn addrs(&self) -> &[(SocketAddr, ListenerKind)] {
        &self.addrs
    }

    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.addrs.iter().find(|(_, k)| *k == kind).map(|(a, _)| *a)
    }

    /// Stops accepting new connections.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Pending connections the kernel keeps for a listener (capped by
/// `net.core.somaxconn`): a burst of clients reconnecting at once (an edge drained,
/// a network blip) must not find SYNs dropped, as with the default of 128.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    edge: Arc<EdgeContext>,
    workers: Arc<Vec<ArbiterHandle>>,
    next: Arc<AtomicUsize>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE/ENFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Re-register the socket with the worker's own reactor.
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(_) => continue,
        };
        crate::metrics::accepted(kind.name());
        let worker = &workers[next.fetch_add(1, Ordering::Relaxed) % workers.len()];
        let edge = edge.clone();
        // The connection's futures are not Send (actors are arbiter-local): send a
        // closure that starts them on the worker.
        worker.spawn_fn(move || {
            if let Ok(tcp) = TcpStream::from_std(std) {
                actix_rt::spawn(negotiate::run(edge, tcp, peer, kind));
            }
        });
    }
}
