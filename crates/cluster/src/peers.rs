//! Outbound links from one session node to the others: one long-lived `PeerLink`
//! stream per peer, fed from a bounded queue and sent in batches. A broken link is
//! re-established with backoff while the peer is alive; envelopes in flight when it
//! broke are lost, which end-to-end acknowledgement turns into a retransmission by
//! the origin edge.

use crate::pb;
use crate::pb::node_client::NodeClient;
use crate::view::View;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Most envelopes in one frame.
pub const BATCH: usize = 256;

/// Connection settings for links between nodes.
pub fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true),
    )
}

#[derive(Clone)]
pub struct PeerLinks {
    hello: pb::Hello,
    view: View,
    rt: tokio::runtime::Handle,
    links: Arc<DashMap<String, mpsc::Sender<pb::Envelope>>>,
}

impl PeerLinks {
    /// Links run on `rt` (the cluster runtime), whatever thread asks for them.
    pub fn new(node_id: String, incarnation: u64, view: View, rt: tokio::runtime::Handle) -> Self {
        PeerLinks {
            hello: pb::Hello {
                node_id,
                incarnation,
            },
            view,
            rt,
            links: Arc::new(DashMap::new()),
        }
    }

    /// Envelopes queued on all peer links and not yet taken by their streams.
    pub fn pending(&self) -> usize {
        self.links
            .iter()
            .map(|t| t.max_capacity() - t.capacity())
            .sum()
    }

    /// Queues an envelope for `node`; fails (handing it back) if its queue is full
    /// or the node is not a live member.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, node: &str, env: pb::Envelope) -> Result<(), pb::Envelope> {
        if !self.view.get().members.is_live(node) {
            return Err(env);
        }
        let tx = self
            .links
            .entry(node.to_owned())
            .or_insert_with(|| self.spawn(node))
            .clone();
        tx.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e,
        })
    }

    fn spawn(&self, node: &str) -> mpsc::Sender<pb::Envelope> {
        let (tx, rx) = mpsc::channel(crate::node::PEER_QUEUE);
        self.rt.spawn(run(
            self.hello.clone(),
            node.to_owned(),
            self.view.clone(),
            rx,
            self.links.clone(),
            tx.clone(),
        ));
        tx
    }
}

async fn run(
    hello: pb::Hello,
    node: String,
    view: View,
    mut rx: mpsc::Receiver<pb::Envelope>,
    links: Arc<DashMap<String, mpsc::Sender<pb::Envelope>>>,
    me: mpsc::Sender<pb::Envelope>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first_attempt = true;
    loop {
        if !std::mem::take(&mut first_attempt) {
            crate::metrics::reconnect("peer");
        }
        let Some(addr) = view.get().node(&node).map(|n| n.addr.clone()) else {
            // The peer left the cluster: forget the link (queued envelopes are
            // retransmitted by their origins).
            links.remove_if(&node, |_, tx| tx.same_channel(&me));
            return;
        };
        match connect(&addr).await {
            Ok(mut client) => {
                backoff = Duration::from_millis(100);
                let (stx, srx) = mpsc::channel::<pb::PeerUp>(16);
                let first = pb::PeerUp {
                    hello: Some(hello.clone()),
                    stanzas: Vec::new(),
                };
                if stx.send(first).await.is_ok() {
                    match client.peer_link(ReceiverStream::new(srx)).await {
                        Ok(resp) => {
                            let _open = crate::metrics::StreamGuard::new("peer");
                            let mut down = resp.into_inner();
                            loop {
                                tokio::select! {
                                    msg = down.message() => match msg {
                                        Ok(Some(_)) => {}
                                        Ok(None) => break,
                                        Err(_) => {
                                            crate::metrics::stream_error("peer");
                                            break;
                                        }
                                    },
                                    first = rx.recv() => {
                                        let Some(first) = first else { return };
                                        let mut batch = Vec::with_capacity(16);
                                        batch.push(first);
                                        while batch.len() < BATCH {
                                            match rx.try_recv() {
                                                Ok(e) => batch.push(e),
                                                Err(_) => break,
                                            }
                                        }
                                        let up = pb::PeerUp { hello: None, stanzas: batch };
                                        if stx.send(up).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            crate::metrics::stream_error("peer");
                            tracing::debug!(peer = %node, error = %e, "peer link refused");
                        }
                    }
                }
            }
            Err(e) => {
                crate::metrics::stream_error("peer");
                tracing::debug!(peer = %node, error = %e, "cannot reach peer");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn connect(addr: &str) -> Result<NodeClient<tonic::transport::Channel>, String> {
    let ep = endpoint(addr).map_err(|e| e.to_string())?;
    let ch = tokio::time::timeout(Duration::from_secs(3), ep.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(NodeClient::new(ch))
}
