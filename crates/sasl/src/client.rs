//! A minimal SASL client (SCRAM-SHA-1/256 with and without -PLUS, and PLAIN) for tests,
//! end-to-end suites and the load generator.
//!
//! It is written independently of rsasl on purpose: the server runs rsasl, and a client
//! built from the RFC text (RustCrypto primitives only) cross-checks it instead of
//! agreeing with it by construction. It is not meant for production clients: it keeps
//! the password in memory and accepts any iteration count the server names.
//!
//! ```
//! use aviary_sasl::client::ScramClient;
//! use aviary_sasl::{ChannelBindings, Mechanism};
//!
//! let mut client = ScramClient::new(Mechanism::ScramSha256, "juliet", "pencil",
//!     &ChannelBindings::default())?;
//! let client_first = client.first();
//! assert!(client_first.starts_with(b"n,,n=juliet,r="));
//! # Ok::<(), aviary_sasl::SaslError>(())
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::error::SaslError;
use crate::mechanism::{ChannelBindings, Mechanism, ScramHash, TLS_EXPORTER, TLS_SERVER_END_POINT};

/// The GS2 channel-binding choice the client announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientBinding {
    /// `n`: no channel-binding support.
    NotSupported,
    /// `y`: supported, but the server did not seem to offer it.
    NotAdvertised,
    /// `p=<name>` with this binding data.
    Use {
        /// The binding type, e.g. `tls-exporter`.
        name: String,
        /// The binding data the client's TLS stack exported.
        data: Vec<u8>,
    },
}

/// A SCRAM client: [`first`](Self::first), then [`respond`](Self::respond) to the
/// server-first message, then [`verify`](Self::verify) the server-final message.
pub struct ScramClient {
    mech: Mechanism,
    hash: ScramHash,
    username: String,
    password: String,
    authzid: Option<String>,
    binding: ClientBinding,
    nonce: String,
    state: ClientState,
}

enum ClientState {
    Ready,
    AwaitingFinal { server_signature: Vec<u8> },
    Done,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mech)
            .field("username", &self.username)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client for `mech` (a SCRAM mechanism). The binding follows RFC 5802 §6: a -PLUS
    /// mechanism binds with `tls-exporter` if available, else `tls-server-end-point`; a
    /// plain mechanism says `y` when the client has bindings (it could bind, so it must
    /// have been offered no -PLUS) and `n` otherwise. [`with_binding`](Self::with_binding)
    /// overrides this, e.g. to test downgrade detection.
    pub fn new(
        mech: Mechanism,
        username: &str,
        password: &str,
        cb: &ChannelBindings,
    ) -> Result<Self, SaslError> {
        let hash = mech.scram_hash().ok_or(SaslError::Unusable {
            mechanism: mech.name(),
            reason: "not a SCRAM mechanism",
        })?;
        let username = stringprep::saslprep(username)
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or(SaslError::InvalidUsername)?
            .into_owned();
        let password = stringprep::saslprep(password)
            .map_err(|_| SaslError::Saslprep)?
            .into_owned();
        if password.is_empty() {
            return Err(SaslError::EmptyPassword);
        }
        let binding = if mech.is_plus() {
            [TLS_EXPORTER, TLS_SERVER_END_POINT]
                .into_iter()
                .find_map(|name| {
                    cb.get(name).map(|data| ClientBinding::Use {
                        name: name.to_owned(),
                        data: data.to_vec(),
                    })
                })
                .ok_or(SaslError::Unusable {
                    mechanism: mech.name(),
                    reason: "no channel binding available",
                })?
        } else if cb.is_empty() {
            ClientBinding::NotSupported
        } else {
            ClientBinding::NotAdvertised
        };
        Ok(Self {
            mech,
            hash,
            username,
            password,
            authzid: None,
            binding,
            nonce: random_nonce(),
            state: ClientState::Ready,
        })
    }

    /// Overrides the channel-binding choice.
    pub fn with_binding(mut self, binding: ClientBinding) -> Self {
        self.binding = binding;
        self
    }

    /// Asks to act as `authzid` (e.g. the account's bare JID).
    pub fn with_authzid(mut self, authzid: &str) -> Self {
        self.authzid = Some(authzid.to_owned());
        self
    }

    /// Fixes the client nonce, for the RFC test vectors.
    #[doc(hidden)]
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = nonce.to_owned();
        self
    }

    /// The client-first message (the initial response of `<auth/>`).
    pub fn first(&self) -> Vec<u8> {
        let mut out = self.gs2_header().into_bytes();
        out.extend_from_slice(self.first_bare().as_bytes());
        out
    }

    /// Answers the server-first message with the client-final message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, ClientState::Ready) {
            return Err(SaslError::OutOfOrder);
        }
        self.state = ClientState::Done;
        let malformed = SaslError::MalformedServerMessage;
        let text = std::str::from_utf8(server_first).map_err(|_| malformed("not UTF-8"))?;
        let mut parts = text.split(',');
        let mut attr = |name: &str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .ok_or(malformed("expected r=, s=, i="))
        };
        let nonce = attr("r=")?;
        let salt = attr("s=")?;
        let iterations = attr("i=")?;
        let server_part = nonce
            .strip_prefix(self.nonce.as_str())
            .ok_or(malformed("nonce does not extend ours"))?;
        if server_part.is_empty() {
            return Err(malformed("server added no nonce"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or(malformed("bad iteration count"))?;

        let mut cbind_input = self.gs2_header().into_bytes();
        if let ClientBinding::Use { data, .. } = &self.binding {
            cbind_input.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cbind_input));
        let auth_message = format!("{},{text},{without_proof}", self.first_bare());

        let salted = self.pbkdf2(&salt, iterations);
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.digest(&client_key);
        let client_signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.hmac(&salted, b"Server Key");
        self.state = ClientState::AwaitingFinal {
            server_signature: self.hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message (the `<success/>` data): the server proves it
    /// knows the keys.
    pub fn verify(&mut self, server_final: &[u8]) -> Result<(), SaslError> {
        let ClientState::AwaitingFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Done)
        else {
            return Err(SaslError::OutOfOrder);
        };
        let first = server_final
            .split(|&b| b == b',')
            .next()
            .unwrap_or_default();
        if let Some(error) = first.strip_prefix(b"e=") {
            return Err(SaslError::ServerRejected(
                String::from_utf8_lossy(error).into_owned(),
            ));
        }
        let verifier = first
            .strip_prefix(b"v=")
            .ok_or(SaslError::MalformedServerMessage("expected v= or e="))?;
        let verifier = B64
            .decode(verifier)
            .map_err(|_| SaslError::MalformedServerMessage("verifier is not base64"))?;
        if bool::from(verifier.ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(SaslError::ServerSignatureMismatch)
        }
    }

    fn gs2_header(&self) -> String {
        let flag = match &self.binding {
            ClientBinding::NotSupported => "n".to_owned(),
            ClientBinding::NotAdvertised => "y".to_owned(),
            ClientBinding::Use { name, .. } => format!("p={name}"),
        };
        match &self.authzid {
            Some(authzid) => format!("{flag},a={},", escape(authzid)),
            None => format!("{flag},,"),
        }
    }

    fn first_bare(&self) -> String {
        format!("n={},r={}", escape(&self.username), self.nonce)
    }

    fn pbkdf2(&self, salt: &[u8], iterations: u32) -> Vec<u8> {
        let password = self.password.as_bytes();
        match self.hash {
            ScramHash::Sha1 => {
                pbkdf2::pbkdf2_hmac_array::<sha1::Sha1, 20>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(password, salt, iterations).to_vec()
            }
        }
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self.hash {
            ScramHash::Sha1 => hmac_with::<Hmac<sha1::Sha1>>(key, data),
            ScramHash::Sha256 => hmac_with::<Hmac<sha2::Sha256>>(key, data),
        }
    }

    fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self.hash {
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }
}

/// HMAC takes keys of any length; the empty fallback only satisfies the type and would
/// fail the exchange rather than panic.
fn hmac_with<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <M as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// RFC 5802 `saslname` escaping.
fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// 24 printable characters (RFC 5802 `printable`, no ','), from a CSPRNG.
fn random_nonce() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/!#$%&";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

/// A PLAIN initial response (RFC 4616): `authzid NUL authcid NUL password`.
pub fn plain(authzid: Option<&str>, username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.extend_from_slice(authzid.unwrap_or_default().as_bytes());
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}
