//! The one error type every store backend returns.

/// A storage failure. Callers map these to `internal-server-error` /
/// `temporary-auth-failure` for clients and log the detail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the embedded database (redb takes an exclusive lock).
    #[error("the data store at {path} is in use by another process (is the server running?)")]
    Locked { path: String },
    /// The backend is unreachable or failed; retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store's configuration is invalid (e.g. a keyspace name CQL cannot
    /// take); retrying does not help.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}
