//! The local admin socket: lets `aviary user …` manage accounts while a server holds
//! the embedded store (redb allows one process per file).
//!
//! A Unix socket `<data_dir>/aviary.sock`, mode 0600 (whoever may read the data
//! directory may use it), one JSON request per line and one JSON answer per line. It
//! carries account-store operations only; credentials are derived by the CLI, so
//! passwords never cross it.

use anyhow::Context;
use async_trait::async_trait;
use aviary_store::{AccountStore, StoreError, Stores};
use aviary_xmpp::BareJid;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("aviary.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Create {
        jid: String,
        credentials: String,
    },
    CreateMany {
        accounts: Vec<(String, String)>,
    },
    SetCredentials {
        jid: String,
        credentials: String,
    },
    Delete {
        jid: String,
    },
    List {
        domain: String,
        after: Option<String>,
        limit: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Done(bool),
    Count(usize),
    Jids(Vec<String>),
    Error(String),
}

/// Serves the socket until the task is dropped. A stale socket file from an earlier
/// run is replaced.
pub async fn serve(data_dir: &Path, stores: Stores) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(actix_rt::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let stores = stores.clone();
            actix_rt::spawn(async move {
                if let Err(e) = handle(conn, stores).await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    }))
}

async fn handle(conn: UnixStream, stores: Stores) -> anyhow::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => execute(&stores, req)
                .await
                .unwrap_or_else(|e| Response::Error(e.to_string())),
            Err(e) => Response::Error(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

fn jid(s: &str) -> anyhow::Result<BareJid> {
    BareJid::new(s).map_err(|e| anyhow::anyhow!("bad JID {s:?}: {e}"))
}

async fn execute(stores: &Stores, req: Request) -> anyhow::Result<Response> {
    let store = &*stores.accounts;
    Ok(match req {
        Request::Create {
            jid: j,
            credentials,
        } => Response::Done(store.create(&jid(&j)?, &B64.decode(credentials)?).await?),
        Request::CreateMany { accounts } => {
            let mut parsed = Vec::with_capacity(accounts.len());
            for (j, c) in accounts {
                parsed.push((jid(&j)?, B64.decode(c)?));
            }
            Response::Count(store.create_many(parsed).await?)
        }
        Request::SetCredentials {
            jid: j,
            credentials,
        } => Response::Done(
            store
                .set_credentials(&jid(&j)?, &B64.decode(credentials)?)
                .await?,
        ),
        // Everything stored for the account goes with it.
        Request::Delete { jid: j } => Response::Done(stores.delete_account(&jid(&j)?).await?),
        Request::List {
            domain,
            after,
            limit,
        } => {
            let after = after.map(|a| jid(&a)).transpose()?;
            let page = store.list(&domain, after.as_ref(), limit).await?;
            Response::Jids(page.into_iter().map(|j| j.to_string()).collect())
        }
    })
}

/// An [`AccountStore`] reached through a running server's admin socket.
pub struct AdminClient {
    path: PathBuf,
}

impl AdminClient {
    /// Connects if a server is listening on `data_dir`'s socket.
    pub async fn connect(data_dir: &Path) -> Option<AdminClient> {
        let path = socket_path(data_dir);
        UnixStream::connect(&path).await.ok()?;
        Some(AdminClient { path })
    }

    async fn call(&self, req: Request) -> Result<Response, StoreError> {
        let fail =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("admin socket: {e}"));
        let mut conn = UnixStream::connect(&self.path)
            .await
            .map_err(|e| fail(&e))?;
        let mut line = serde_json::to_vec(&req).map_err(|e| fail(&e))?;
        line.push(b'\n');
        conn.write_all(&line).await.map_err(|e| fail(&e))?;
        let mut reader = BufReader::new(conn);
        let mut answer = String::new();
        reader.read_line(&mut answer).await.map_err(|e| fail(&e))?;
        match serde_json::from_str(&answer).map_err(|e| fail(&e))? {
            Response::Error(e) => Err(StoreError::Unavailable(e)),
            r => Ok(r),
        }
    }
}

fn unexpected(r: Response) -> StoreError {
    StoreError::Unavailable(format!("admin socket: unexpected answer {r:?}"))
}

#[async_trait]
impl AccountStore for AdminClient {
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        match self
            .call(Request::Create {
                jid: jid.to_string(),
                credentials: B64.encode(credentials),
            })
            .await?
        {
            Response::Done(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        let accounts = accounts
            .into_iter()
            .map(|(j, c)| (j.to_string(), B64.encode(c)))
            .collect();
        match self.call(Request::CreateMany { accounts }).await? {
            Response::Count(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }

    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError> {
        match self
            .call(Request::SetCredentials {
                jid: jid.to_string(),
                credentials: B64.encode(credentials),
            })
            .await?
        {
            Response::Done(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn credentials(&self, _: &BareJid) -> Result<Option<Vec<u8>>, StoreError> {
        // Deliberately not exposed: the CLI never needs to read credentials back.
        Err(StoreError::Unavailable(
            "not available over the admin socket".into(),
        ))
    }

    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError> {
        match self
            .call(Request::Delete {
                jid: jid.to_string(),
            })
            .await?
        {
            Response::Done(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }

    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError> {
        match self
            .call(Request::List {
                domain: domain.to_owned(),
                after: after.map(|a| a.to_string()),
                limit,
            })
            .await?
        {
            Response::Jids(j) => j
                .iter()
                .map(|s| BareJid::new(s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect(),
            r => Err(unexpected(r)),
        }
    }
}
