//! The gRPC service a session node runs: `EdgeLink` streams from edges (stanzas,
//! binds and unbinds up; results, deliveries and acks down) and `PeerLink` streams
//! from other session nodes (stanzas for users this node owns).

use crate::codec;
use crate::node::{ClusterNode, EDGE_QUEUE};
use crate::pb;
use aviary_router::{BindError, BindRequest, ConnId, ConnRef, EdgeId, RouteError};
use aviary_session::cluster::{Cluster, Direction, Owner};
use aviary_xmpp::{BareJid, FullJid, StanzaErrorCondition};
use futures::{Stream, StreamExt as _};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

type DownStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct NodeService {
    node: Arc<ClusterNode>,
    /// Becomes true when this node has handed everything on (graceful leave): the
    /// links' downward streams then end, so the server's graceful shutdown does not
    /// wait for streams that never would.
    closing: watch::Receiver<bool>,
}

impl NodeService {
    pub fn new(node: Arc<ClusterNode>, closing: watch::Receiver<bool>) -> Self {
        NodeService { node, closing }
    }

    /// Ends `stream` once `closing` turns true.
    fn until_closing<T: Send + 'static>(&self, stream: DownStream<T>) -> DownStream<T> {
        let mut closing = self.closing.clone();
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        Box::pin(stream.take_until(closed))
    }

    pub fn into_server(self) -> pb::node_server::NodeServer<Self> {
        pb::node_server::NodeServer::new(self).max_decoding_message_size(64 * 1024 * 1024)
    }
}

/// Turns a queue of events into a stream of batched frames.
fn batched(mut rx: mpsc::Receiver<pb::EdgeEvent>) -> DownStream<pb::EdgeDown> {
    Box::pin(async_stream(move |yield_| async move {
        while let Some(first) = rx.recv().await {
            let mut events = Vec::with_capacity(16);
            events.push(first);
            while events.len() < crate::peers::BATCH {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            if yield_.send(Ok(pb::EdgeDown { events })).await.is_err() {
                return;
            }
        }
    }))
}

/// A minimal generator-to-stream adapter over a channel (avoids a macro crate).
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    type EdgeLinkStream = DownStream<pb::EdgeDown>;
    type PeerLinkStream = DownStream<pb::PeerDown>;

    async fn edge_link(
        &self,
        request: Request<Streaming<pb::EdgeUp>>,
    ) -> Result<Response<Self::EdgeLinkStream>, Status> {
        let mut up = request.into_inner();
        let first = up
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty link"))?;
        let edge = first
            .hello
            .as_ref()
            .map(|h| h.node_id.clone())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| Status::invalid_argument("the first frame must say hello"))?;
        let (tx, rx) = mpsc::channel(EDGE_QUEUE);
        self.node.edges.register(&edge, tx.clone());
        tracing::debug!(%edge, "edge linked");
        let node = self.node.clone();
        tokio::spawn(async move {
            let _open = crate::metrics::StreamGuard::new("edge");
            handle_edge_requests(&node, &edge, &tx, first.requests);
            while let Ok(Some(frame)) = up.message().await {
                handle_edge_requests(&node, &edge, &tx, frame.requests);
            }
            node.edges.unregister(&edge, &tx);
            tracing::debug!(%edge, "edge link closed");
        });
        Ok(Response::new(self.until_closing(batched(rx))))
    }

    async fn peer_link(
        &self,
        request: Request<Streaming<pb::PeerUp>>,
    ) -> Result<Response<Self::PeerLinkStream>, Status> {
        let mut up = request.into_inner();
        let node = self.node.clone();
        tokio::spawn(async move {
            let _open = crate::metrics::StreamGuard::new("peer");
            while let Ok(Some(frame)) = up.message().await {
                for env in frame.stanzas {
                    accept_envelope(&node, &env);
                }
            }
        });
        Ok(Response::new(
            self.until_closing(Box::pin(futures::stream::pending())),
        ))
    }
}

fn accept_envelope(node: &ClusterNode, env: &pb::Envelope) {
    let Some(users) = node.users() else {
        return;
    };
    let origin = codec::origin_from(env.origin.as_ref());
    match codec::stanza(env) {
        Ok(stanza) => users.accept_forwarded(stanza, codec::direction_from(env.direction), origin),
        Err(e) => {
            // Unparseable: it will never get better, so stop its retransmission.
            tracing::warn!(error = %e, "dropping an unreadable envelope");
            if let Some(o) = origin {
                node.ack(o);
            }
        }
    }
}

fn handle_edge_requests(
    node: &Arc<ClusterNode>,
    edge: &str,
    tx: &mpsc::Sender<pb::EdgeEvent>,
    requests: Vec<pb::EdgeRequest>,
) {
    let Some(users) = node.users() else {
        return;
    };
    for req in requests {
        match req.request {
            Some(pb::edge_request::Request::Route(env)) => {
                let origin = codec::origin_from(env.origin.as_ref());
                match codec::stanza(&env) {
                    // A stanza the edge could not deliver, handed back to be routed
                    // again (the edge sends the unbind first, on this same link).
                    Ok(stanza) if env.direction == pb::Direction::Inbound as i32 => {
                        users.accept_forwarded(stanza, Direction::Inbound, origin);
                    }
                    Ok(stanza) => {
                        if let Err(RouteError::Overloaded(s) | RouteError::Unavailable(s)) =
                            users.accept_outbound(stanza, origin.clone())
                        {
                            users.bounce(*s, StanzaErrorCondition::ResourceConstraint);
                            if let Some(o) = origin {
                                node.ack(o);
                            }
                        }
                    }
                    Err(_) => {
                        if let Some(o) = origin {
                            node.ack(o);
                        }
                    }
                }
            }
            Some(pb::edge_request::Request::Bind(b)) => {
                let node = node.clone();
                let edge = edge.to_owned();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = bind(&node, &edge, &b).await;
                    let ev = pb::EdgeEvent {
                        event: Some(pb::edge_event::Event::Bind(pb::BindResponse {
                            request_id: b.request_id,
                            result: Some(result),
                        })),
                    };
                    let _ = tx.send(ev).await;
                });
            }
            Some(pb::edge_request::Request::Unbind(u)) => {
                let Ok(full) = FullJid::new(&u.full_jid) else {
                    continue;
                };
                match node.owner(&full.to_bare()) {
                    Owner::Local => users.unbind(full, ConnId(u.conn)),
                    _ => {
                        // Not ours (any more): at least clear the directory entry; the
                        // owner forgets the resource when a delivery to it fails.
                        let dir = node.locations();
                        tokio::spawn(async move {
                            let res = full.resource().to_string();
                            let _ = dir.unbind(&full.to_bare(), &res, u.conn).await;
                        });
                    }
                }
            }
            None => {}
        }
    }
}

async fn bind(node: &ClusterNode, edge: &str, b: &pb::BindRequest) -> pb::bind_response::Result {
    use pb::bind_response::Result as R;
    let Ok(user) = BareJid::new(&b.user) else {
        return R::Failure(pb::BindFailure::BadResource as i32);
    };
    match node.owner(&user) {
        Owner::Local => {}
        Owner::Remote(n) => return R::Redirect(n),
        Owner::Unknown => return R::Failure(pb::BindFailure::Unavailable as i32),
    }
    let Some(users) = node.users() else {
        return R::Failure(pb::BindFailure::Unavailable as i32);
    };
    let req = BindRequest {
        user,
        resource: (!b.resource.is_empty()).then(|| b.resource.clone()),
        conn: ConnRef {
            edge: EdgeId(edge.to_owned()),
            id: ConnId(b.conn),
            sink: node.edge_sink(edge, b.conn),
        },
    };
    match users.bind(req).await {
        Ok(full) => R::FullJid(full.to_string()),
        Err(BindError::BadResource) => R::Failure(pb::BindFailure::BadResource as i32),
        Err(BindError::TooManyResources) => R::Failure(pb::BindFailure::TooManyResources as i32),
        Err(BindError::Unavailable(why)) => {
            tracing::warn!(error = %why, "bind failed");
            R::Failure(pb::BindFailure::Unavailable as i32)
        }
    }
}
