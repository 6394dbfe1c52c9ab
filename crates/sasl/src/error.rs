//! The crate's error type (for credential handling and the client helper) and the
//! RFC 6120 §6.5 failure conditions the server state machine ends with.
//!
//! The server never returns `SaslError`: a peer's bad input is a protocol outcome
//! ([`Failure`]), not an error of this library.

/// Errors of credential derivation and decoding, and of the [`client`](crate::client)
/// helper talking to a server.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// `StoredCredentials::derive` was asked for fewer PBKDF2 iterations than allowed.
    #[error("iteration count {got} is below the minimum of {min}")]
    TooFewIterations {
        /// The count asked for.
        got: u32,
        /// The minimum, [`MIN_ITERATIONS`](crate::MIN_ITERATIONS).
        min: u32,
    },
    /// The password is empty (after SASLprep).
    #[error("the password is empty")]
    EmptyPassword,
    /// The password contains characters SASLprep (RFC 4013) prohibits.
    #[error("the password is not allowed by SASLprep (RFC 4013)")]
    Saslprep,
    /// The username is empty or prohibited by SASLprep.
    #[error("the username is empty or not allowed by SASLprep (RFC 4013)")]
    InvalidUsername,
    /// A salt given to a test-vector constructor is empty or longer than 255 bytes.
    #[error("a salt must be 1 to 255 bytes long")]
    InvalidSalt,
    /// Stored credentials start with a format version this build does not know.
    #[error("stored credentials: unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Stored credentials end before their last field.
    #[error("stored credentials are truncated")]
    Truncated,
    /// Stored credentials carry bytes after their last field.
    #[error("stored credentials have {0} bytes of trailing data")]
    TrailingData(usize),
    /// Stored credentials are well framed but hold impossible values.
    #[error("stored credentials are invalid: {0}")]
    InvalidCredentials(&'static str),
    /// The client helper cannot run this mechanism with the data it was given.
    #[error("cannot use {mechanism}: {reason}")]
    Unusable {
        /// The mechanism's name.
        mechanism: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// The client helper received a server message that breaks the SCRAM grammar.
    #[error("malformed server message: {0}")]
    MalformedServerMessage(&'static str),
    /// The server ended the SCRAM exchange with `e=…` (RFC 5802 §7).
    #[error("the server rejected the authentication: {0}")]
    ServerRejected(String),
    /// The server's signature is wrong: it does not know the password.
    #[error("the server signature does not verify")]
    ServerSignatureMismatch,
    /// A client-helper method was called out of order.
    #[error("client state machine used out of order")]
    OutOfOrder,
}

/// The SASL failure conditions of RFC 6120 §6.5, sent as `<failure><condition/></failure>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failure {
    /// `<aborted/>`: the client sent `<abort/>`.
    Aborted,
    /// `<account-disabled/>`.
    AccountDisabled,
    /// `<credentials-expired/>`.
    CredentialsExpired,
    /// `<encryption-required/>`.
    EncryptionRequired,
    /// `<incorrect-encoding/>`: bad base64; the edge decodes, so the edge sends this.
    IncorrectEncoding,
    /// `<invalid-authzid/>`.
    InvalidAuthzid,
    /// `<invalid-mechanism/>`.
    InvalidMechanism,
    /// `<malformed-request/>`: the data breaks the mechanism's syntax or sequence.
    MalformedRequest,
    /// `<mechanism-too-weak/>`.
    MechanismTooWeak,
    /// `<not-authorized/>`: wrong credentials, unknown account, or a detected attack.
    NotAuthorized,
    /// `<temporary-auth-failure/>`: a server-side problem (e.g. corrupt stored keys).
    TemporaryAuthFailure,
}

impl Failure {
    /// The element name of the condition, e.g. `"not-authorized"`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Failure;

    #[test]
    fn condition_names() {
        assert_eq!(Failure::NotAuthorized.name(), "not-authorized");
        assert_eq!(Failure::MalformedRequest.name(), "malformed-request");
        assert_eq!(
            Failure::TemporaryAuthFailure.to_string(),
            "temporary-auth-failure"
        );
        assert_eq!(Failure::InvalidAuthzid.name(), "invalid-authzid");
        assert_eq!(Failure::Aborted.name(), "aborted");
    }
}
