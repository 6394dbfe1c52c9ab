//! Storage for Aviary: the traits the rest of the server programs against, and their
//! backends — `embedded` (a local redb file, for the single-process default) and,
//! later, a CQL backend for ScyllaDB clusters.
//!
//! Values that only the protocol layers understand (SCRAM credentials) are opaque
//! bytes here, so storage never has to change when an authentication format does.
#![forbid(unsafe_code)]

pub mod embedded;
mod error;

pub use error::StoreError;

use async_trait::async_trait;
use jid::BareJid;

/// Accounts: one record per bare JID holding its (opaque, never plaintext)
/// credentials.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates the account; `Ok(false)` when it already exists (nothing changed).
    async fn create(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError>;

    /// Creates many accounts at once (bulk import); returns how many were created,
    /// skipping those that already exist.
    async fn create_many(&self, accounts: Vec<(BareJid, Vec<u8>)>) -> Result<usize, StoreError> {
        let mut created = 0;
        for (jid, creds) in accounts {
            if self.create(&jid, &creds).await? {
                created += 1;
            }
        }
        Ok(created)
    }

    /// Replaces the credentials; `Ok(false)` when there is no such account.
    async fn set_credentials(&self, jid: &BareJid, credentials: &[u8]) -> Result<bool, StoreError>;

    async fn credentials(&self, jid: &BareJid) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes the account; `Ok(false)` when there was none.
    async fn delete(&self, jid: &BareJid) -> Result<bool, StoreError>;

    /// Accounts of `domain` in JID order, starting after `after`, at most `limit`.
    async fn list(
        &self,
        domain: &str,
        after: Option<&BareJid>,
        limit: usize,
    ) -> Result<Vec<BareJid>, StoreError>;
}
