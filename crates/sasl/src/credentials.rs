//! What the server stores per account: SCRAM keys for SHA-1 and SHA-256 (RFC 5802 §3),
//! never the password; their derivation, PLAIN verification, the versioned binary form
//! for the account store, and the decoy keys answered for accounts that do not exist.
//!
//! PBKDF2 is deliberately slow: [`StoredCredentials::derive`] and
//! [`StoredCredentials::verify_plain`] take milliseconds of CPU per call and belong on a
//! blocking thread (`tokio::task::spawn_blocking` or similar), never on an event loop.

use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, FixedOutputReset, Output};
use hmac::{Mac, SimpleHmac};
use rand::RngCore;
use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
use subtle::ConstantTimeEq;

use crate::error::SaslError;
use crate::mechanism::ScramHash;

/// The lowest PBKDF2 iteration count `derive` accepts (RFC 5802 §5.1 / RFC 7677 §4).
pub const MIN_ITERATIONS: u32 = 4096;
/// A sensible default for new accounts: what the decoy for unknown users uses unless told.
pub const RECOMMENDED_ITERATIONS: u32 = 10_000;
/// Length of the random salt `derive` draws for each hash.
pub const SALT_LEN: usize = 16;

/// Format version written as the first byte of [`StoredCredentials::to_bytes`].
const FORMAT_V1: u8 = 1;
const SHA1_LEN: usize = 20;
const SHA256_LEN: usize = 32;

/// SCRAM keys for one hash: `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
/// `ServerKey = HMAC(SaltedPassword, "Server Key")` with their salt and iteration count.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// PBKDF2 salt (raw bytes, sent base64-encoded in server-first).
    pub salt: Vec<u8>,
    /// `StoredKey`, hash-sized.
    pub stored_key: Vec<u8>,
    /// `ServerKey`, hash-sized.
    pub server_key: Vec<u8>,
}

/// Keys are not passwords, but whoever holds `ServerKey` can impersonate the server,
/// so they stay out of logs.
impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Credentials of one account: SCRAM keys for both hashes, never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCredentials {
    /// Keys for `SCRAM-SHA-1[-PLUS]`.
    pub sha1: ScramKeys,
    /// Keys for `SCRAM-SHA-256[-PLUS]` and for verifying PLAIN.
    pub sha256: ScramKeys,
}

impl StoredCredentials {
    /// Derives credentials from a password, with a fresh random salt of [`SALT_LEN`] bytes
    /// per hash. The password is prepared with SASLprep (RFC 4013) first, as SCRAM
    /// requires, so `"I\u{AD}X"` and `"IX"` give the same keys.
    ///
    /// Runs PBKDF2 twice: call it on a blocking thread.
    pub fn derive(password: &str, iterations: u32) -> Result<Self, SaslError> {
        let mut sha1_salt = [0u8; SALT_LEN];
        let mut sha256_salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut sha1_salt);
        rand::rngs::OsRng.fill_bytes(&mut sha256_salt);
        Self::derive_with_salts(password, iterations, &sha1_salt, &sha256_salt)
    }

    /// [`derive`](Self::derive) with given salts, for test vectors (RFC 5802, RFC 7677).
    #[doc(hidden)]
    pub fn derive_with_salts(
        password: &str,
        iterations: u32,
        sha1_salt: &[u8],
        sha256_salt: &[u8],
    ) -> Result<Self, SaslError> {
        if iterations < MIN_ITERATIONS {
            return Err(SaslError::TooFewIterations {
                got: iterations,
                min: MIN_ITERATIONS,
            });
        }
        if [sha1_salt, sha256_salt]
            .iter()
            .any(|s| s.is_empty() || s.len() > usize::from(u8::MAX))
        {
            return Err(SaslError::InvalidSalt);
        }
        let password = prepare_password(password)?;
        Ok(Self {
            sha1: scram_keys(ScramHash::Sha1, password.as_bytes(), sha1_salt, iterations),
            sha256: scram_keys(
                ScramHash::Sha256,
                password.as_bytes(),
                sha256_salt,
                iterations,
            ),
        })
    }

    /// Checks a PLAIN password: recomputes the SHA-256 keys with the stored salt and
    /// iteration count and compares in constant time. A password SASLprep rejects never
    /// matches.
    ///
    /// Runs PBKDF2: call it on a blocking thread.
    pub fn verify_plain(&self, password: &str) -> bool {
        let Ok(password) = prepare_password(password) else {
            return false;
        };
        let keys = &self.sha256;
        if keys.iterations == 0 || keys.stored_key.len() != SHA256_LEN {
            return false;
        }
        let candidate = scram_keys(
            ScramHash::Sha256,
            password.as_bytes(),
            &keys.salt,
            keys.iterations,
        );
        bool::from(candidate.stored_key.ct_eq(&keys.stored_key))
    }

    /// The keys a SCRAM mechanism of this hash needs.
    pub(crate) fn keys(&self, hash: ScramHash) -> &ScramKeys {
        match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }

    /// Compact binary form for the account store.
    ///
    /// Version 1: `0x01`, then for SHA-1 and then SHA-256: iterations (u32 big-endian),
    /// salt length (u8) and salt, stored key, server key (hash-sized, no length).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 2 * (5 + SALT_LEN) + 2 * SHA1_LEN + 2 * SHA256_LEN);
        out.push(FORMAT_V1);
        for keys in [&self.sha1, &self.sha256] {
            out.extend_from_slice(&keys.iterations.to_be_bytes());
            // Salts longer than 255 bytes cannot be framed; `derive` never makes them and
            // a truncated salt would silently break logins, so write what `from_bytes`
            // will reject rather than something that decodes to different keys.
            let salt_len = u8::try_from(keys.salt.len()).unwrap_or(0);
            out.push(salt_len);
            out.extend_from_slice(&keys.salt[..usize::from(salt_len)]);
            out.extend_from_slice(&keys.stored_key);
            out.extend_from_slice(&keys.server_key);
        }
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output, rejecting unknown versions, truncation,
    /// trailing bytes, empty salts, zero iteration counts and wrongly sized keys.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SaslError> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if version != FORMAT_V1 {
            return Err(SaslError::UnsupportedVersion(version));
        }
        let sha1 = r.keys(SHA1_LEN)?;
        let sha256 = r.keys(SHA256_LEN)?;
        if !r.0.is_empty() {
            return Err(SaslError::TrailingData(r.0.len()));
        }
        Ok(Self { sha1, sha256 })
    }
}

/// A cursor over stored bytes that reports truncation instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SaslError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(SaslError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn keys(&mut self, key_len: usize) -> Result<ScramKeys, SaslError> {
        let mut iterations = [0u8; 4];
        iterations.copy_from_slice(self.take(4)?);
        let iterations = u32::from_be_bytes(iterations);
        if iterations == 0 {
            return Err(SaslError::InvalidCredentials("zero iteration count"));
        }
        let salt_len = usize::from(self.take(1)?[0]);
        if salt_len == 0 {
            return Err(SaslError::InvalidCredentials("empty salt"));
        }
        Ok(ScramKeys {
            iterations,
            salt: self.take(salt_len)?.to_vec(),
            stored_key: self.take(key_len)?.to_vec(),
            server_key: self.take(key_len)?.to_vec(),
        })
    }
}

/// SASLprep for stored strings; SCRAM (RFC 5802 §5.1) and PLAIN (RFC 4616 §2) both
/// prepare the password this way, so PLAIN can be checked against SCRAM keys.
fn prepare_password(password: &str) -> Result<String, SaslError> {
    let prepared = stringprep::saslprep(password).map_err(|_| SaslError::Saslprep)?;
    if prepared.is_empty() {
        return Err(SaslError::EmptyPassword);
    }
    Ok(prepared.into_owned())
}

/// Runs rsasl's own SCRAM key derivation, so stored keys match exactly what its server
/// recomputes.
fn scram_keys(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
    let (stored_key, server_key) = match hash {
        ScramHash::Sha1 => keys_with::<sha1::Sha1>(password, salt, iterations),
        ScramHash::Sha256 => keys_with::<sha2::Sha256>(password, salt, iterations),
    };
    ScramKeys {
        iterations,
        salt: salt.to_vec(),
        stored_key,
        server_key,
    }
}

fn keys_with<D>(password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>)
where
    D: Digest + BlockSizeUser + FixedOutputReset + Clone + Sync,
{
    let mut salted = Output::<SimpleHmac<D>>::default();
    hash_password::<D>(password, iterations, salt, &mut salted);
    let (client_key, server_key) = derive_keys::<D>(salted.as_slice());
    (D::digest(client_key).to_vec(), server_key.to_vec())
}

/// How the server answers SCRAM for an account that does not exist.
///
/// Instead of failing at once (which tells an attacker the account is absent), the
/// server sends a normal server-first message whose salt is derived from the username
/// and this secret, so repeated attempts see the same salt as they would for a real
/// account, and fails with `not-authorized` only after the client's proof. The
/// iteration count should equal the one real accounts use. Every edge of a cluster
/// should share the secret, or the salt changes with the node a client reaches.
#[derive(Clone)]
pub struct Decoy {
    secret: [u8; 32],
    iterations: u32,
}

impl Decoy {
    /// A decoy with a fixed secret (from configuration, shared by all edges).
    pub fn new(secret: [u8; 32], iterations: u32) -> Self {
        Self { secret, iterations }
    }

    /// A decoy with a secret drawn now. Stable for the lifetime of the value only.
    pub fn random(iterations: u32) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self::new(secret, iterations)
    }

    /// The process-wide default used when a session is not given one: a random secret
    /// drawn once per process, and [`RECOMMENDED_ITERATIONS`].
    pub(crate) fn process_default() -> &'static Decoy {
        static DEFAULT: std::sync::OnceLock<Decoy> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| Decoy::random(RECOMMENDED_ITERATIONS))
    }

    /// Plausible but unusable credentials for `username`. The keys are derived from the
    /// secret too, so nothing random leaks into timing or messages; they can never be
    /// matched because the session refuses decoys regardless of the proof.
    pub(crate) fn credentials(&self, username: &str) -> StoredCredentials {
        StoredCredentials {
            sha1: self.keys(b"SHA-1", username, SHA1_LEN),
            sha256: self.keys(b"SHA-256", username, SHA256_LEN),
        }
    }

    fn keys(&self, hash: &[u8], username: &str, key_len: usize) -> ScramKeys {
        let derive = |purpose: &[u8], len: usize| {
            // HMAC pads a short key with zeros to the block size, so this is exactly
            // HMAC-SHA-256 keyed with the 32-byte secret, without a fallible constructor.
            let mut key = hmac::digest::Key::<hmac::Hmac<sha2::Sha256>>::default();
            key[..self.secret.len()].copy_from_slice(&self.secret);
            let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new(&key);
            mac.update(b"aviary-sasl decoy\0");
            mac.update(purpose);
            mac.update(b"\0");
            mac.update(hash);
            mac.update(b"\0");
            mac.update(username.as_bytes());
            let mut out = mac.finalize().into_bytes().to_vec();
            out.truncate(len);
            out
        };
        ScramKeys {
            iterations: self.iterations,
            salt: derive(b"salt", SALT_LEN),
            stored_key: derive(b"stored", key_len),
            server_key: derive(b"server", key_len),
        }
    }
}

impl std::fmt::Debug for Decoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoy")
            .field("secret", &"<redacted>")
            .field("iterations", &self.iterations)
            .finish()
    }
}
