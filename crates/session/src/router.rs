//! The in-process [`Router`]: the edge and the user actors share one process (role
//! `all`), so routing is a mailbox send with no serialisation.

use crate::users::Users;
use async_trait::async_trait;
use aviary_router::{BindError, BindRequest, ConnId, RouteError, Router};
use aviary_xmpp::{FullJid, Stanza};

/// Routes through this process's [`Users`].
#[derive(Clone, Debug)]
pub struct LocalRouter {
    users: Users,
}

impl LocalRouter {
    pub fn new(users: Users) -> Self {
        LocalRouter { users }
    }

    pub fn users(&self) -> &Users {
        &self.users
    }
}

#[async_trait]
impl Router for LocalRouter {
    async fn bind(&self, req: BindRequest) -> Result<FullJid, BindError> {
        self.users.bind_here(req).await
    }

    fn unbind(&self, jid: FullJid, conn: ConnId) {
        self.users.unbind(jid, conn);
    }

    fn route(&self, _conn: ConnId, stanza: Stanza) -> Result<(), RouteError> {
        self.users.send_outbound(stanza)
    }

    fn undeliverable(&self, _conn: ConnId, stanza: Stanza) {
        self.users.redeliver(stanza);
    }
}
