//! The server-side SASL state machine the edge drives: bytes in, [`Step`]s out, with a
//! pause for the asynchronous credential lookup.
//!
//! ```text
//! step(initial) ──▶ NeedCredentials ──provide_credentials──▶ Challenge(server-first)  (SCRAM)
//!                                                            step(client-final) ──▶ Success | Failure
//!                                   ──provide_credentials──▶ Success | Failure          (PLAIN)
//! ```
//!
//! Any failure, and any call out of this order, ends the session: every later call
//! answers `Failure(MalformedRequest)`. The session never panics on peer input.

use crate::backend::{Run, RunError};
use crate::credentials::{Decoy, StoredCredentials};
use crate::error::Failure;
use crate::mechanism::{ChannelBindings, Mechanism, ScramHash};
use crate::scram_msg::{self, CbFlag, ClientFirst};

/// What the edge should do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge/>` with these bytes (the edge base64-encodes; empty → `=`).
    Challenge(Vec<u8>),
    /// Look up credentials for this authcid (already SASLprep'd; the localpart of the JID)
    /// and call [`ServerSession::provide_credentials`].
    NeedCredentials {
        /// The authcid.
        username: String,
    },
    /// Send `<success/>` with the additional data if any (SCRAM server-final).
    ///
    /// `authzid` is what the client asked to act as, unchecked: this crate does not know
    /// the domain, so the edge must accept it only if it equals `username@domain` (the
    /// bare JID of the authenticated account) and otherwise answer `invalid-authzid`.
    Success {
        /// The authenticated authcid.
        username: String,
        /// The requested authorization identity, if the client sent one.
        authzid: Option<String>,
        /// Data for `<success/>`; `Some` for SCRAM (`v=…`), `None` for PLAIN.
        additional_data: Option<Vec<u8>>,
    },
    /// Send `<failure/>` with this condition; the exchange is over.
    Failure(Failure),
}

/// One SASL exchange on one connection.
///
/// Create it when the client sends `<auth mechanism=…>`, then call [`step`](Self::step)
/// with the initial response (empty if none).
pub struct ServerSession {
    mech: Mechanism,
    cb: ChannelBindings,
    plus_offered: bool,
    decoy: Option<Decoy>,
    state: State,
}

enum State {
    /// Waiting for the first client message; `challenged` once an empty challenge asked
    /// for it because `<auth/>` carried no initial response.
    Start { challenged: bool },
    /// SCRAM client-first validated; waiting for the account.
    ScramLookup {
        client_first: Vec<u8>,
        parsed: ClientFirst,
    },
    /// server-first sent; waiting for client-final.
    ScramFinal {
        run: Box<Run>,
        parsed: ClientFirst,
        decoy: bool,
    },
    /// PLAIN message parsed; waiting for the account.
    PlainLookup {
        username: String,
        authzid: Option<String>,
        password: String,
    },
    /// Success or failure was returned.
    Done,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Start { .. } => "start",
            State::ScramLookup { .. } | State::PlainLookup { .. } => "awaiting credentials",
            State::ScramFinal { .. } => "awaiting client-final",
            State::Done => "done",
        };
        f.debug_struct("ServerSession")
            .field("mechanism", &self.mech)
            .field("plus_offered", &self.plus_offered)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Starts an exchange for `mech` on a connection with these channel bindings.
    /// `plus_offered` says whether the server advertised `-PLUS` mechanisms on this
    /// connection: then a client answering `y` ("I could bind, but you do not offer it")
    /// has seen a stripped mechanism list, and the exchange fails (RFC 5802 §6).
    ///
    /// The edge answers `invalid-mechanism` itself for a mechanism it did not offer on
    /// this connection (e.g. `-PLUS` without TLS) instead of starting a session.
    pub fn new(mech: Mechanism, cb: ChannelBindings, plus_offered: bool) -> Self {
        Self {
            mech,
            cb,
            plus_offered,
            decoy: None,
            state: State::Start { challenged: false },
        }
    }

    /// Uses this decoy for unknown accounts instead of the process-wide default (a random
    /// secret per process with [`RECOMMENDED_ITERATIONS`](crate::RECOMMENDED_ITERATIONS)).
    /// A cluster should configure one shared secret and its real iteration count.
    pub fn with_decoy(mut self, decoy: Decoy) -> Self {
        self.decoy = Some(decoy);
        self
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Whether the next [`provide_credentials`](Self::provide_credentials) call runs
    /// PBKDF2 (PLAIN) and therefore belongs on a blocking thread. For SCRAM it only
    /// computes a few HMACs.
    pub fn credentials_check_is_expensive(&self) -> bool {
        matches!(self.state, State::PlainLookup { .. })
    }

    /// Feeds the client's (already base64-decoded) data: the initial response from
    /// `<auth/>` (empty if none) or a `<response/>`.
    pub fn step(&mut self, input: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start { challenged } if input.is_empty() => {
                // RFC 6120 §6.4.2: no initial response → empty challenge, once. Neither
                // PLAIN nor SCRAM has a valid empty first message.
                if challenged {
                    return Step::Failure(Failure::MalformedRequest);
                }
                self.state = State::Start { challenged: true };
                Step::Challenge(Vec::new())
            }
            State::Start { .. } => match self.mech {
                Mechanism::Plain => self.plain_first(input),
                _ => self.scram_first(input),
            },
            State::ScramFinal { run, parsed, decoy } => {
                self.scram_final(input, *run, parsed, decoy)
            }
            State::ScramLookup { .. } | State::PlainLookup { .. } | State::Done => {
                Step::Failure(Failure::MalformedRequest)
            }
        }
    }

    /// Continues after [`Step::NeedCredentials`] with the account's credentials
    /// (`None` = no such account).
    ///
    /// For PLAIN this runs PBKDF2 (also for an unknown account, so timing does not tell
    /// it apart): see [`credentials_check_is_expensive`](Self::credentials_check_is_expensive).
    pub fn provide_credentials(&mut self, creds: Option<&StoredCredentials>) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ScramLookup {
                client_first,
                parsed,
            } => self.scram_start(&client_first, parsed, creds),
            State::PlainLookup {
                username,
                authzid,
                password,
            } => {
                let verified = match creds {
                    Some(creds) => creds.verify_plain(&password),
                    None => {
                        // Same PBKDF2 cost as a real account, result ignored.
                        let _ = self.decoy().credentials(&username).verify_plain(&password);
                        false
                    }
                };
                if verified {
                    Step::Success {
                        username,
                        authzid,
                        additional_data: None,
                    }
                } else {
                    Step::Failure(Failure::NotAuthorized)
                }
            }
            State::Start { .. } | State::ScramFinal { .. } | State::Done => {
                Step::Failure(Failure::MalformedRequest)
            }
        }
    }

    /// The client sent `<abort/>`: ends the exchange.
    pub fn abort(&mut self) -> Step {
        self.state = State::Done;
        Step::Failure(Failure::Aborted)
    }

    fn decoy(&self) -> &Decoy {
        self.decoy
            .as_ref()
            .unwrap_or_else(|| Decoy::process_default())
    }

    fn plain_first(&mut self, input: &[u8]) -> Step {
        // rsasl parses `authzid NUL authcid NUL passwd`, SASLprep's authcid and password,
        // and reports the pieces through the validate callback.
        let parsed = Run::start(Mechanism::Plain, false, ChannelBindings::default(), None)
            .map_err(|_| Failure::TemporaryAuthFailure)
            .and_then(|mut run| match run.step(input) {
                Ok((true, _)) => run.validated().ok_or(Failure::MalformedRequest),
                Ok((false, _)) | Err(RunError::Rejected) => Err(Failure::MalformedRequest),
                Err(RunError::Internal) => Err(Failure::TemporaryAuthFailure),
            });
        let validated = match parsed {
            Ok(v) => v,
            Err(failure) => return Step::Failure(failure),
        };
        let (Some(username), Some(password)) = (validated.authid, validated.password) else {
            return Step::Failure(Failure::MalformedRequest);
        };
        // RFC 4616: the password is UTF-8; rsasl passes other bytes through unprepared.
        let Ok(password) = String::from_utf8(password) else {
            return Step::Failure(Failure::MalformedRequest);
        };
        let authzid = validated.authzid.filter(|a| !a.is_empty());
        self.state = State::PlainLookup {
            username: username.clone(),
            authzid,
            password,
        };
        Step::NeedCredentials { username }
    }

    fn scram_first(&mut self, input: &[u8]) -> Step {
        let parsed = match scram_msg::parse_client_first(input) {
            Ok(parsed) => parsed,
            Err(failure) => return Step::Failure(failure),
        };
        // Settled before the account lookup: none of this depends on the account, so
        // failing early reveals nothing about it.
        let binding_ok = match (&parsed.cb_flag, self.mech.is_plus()) {
            (CbFlag::Used(name), true) => {
                if self.cb.get(name).is_none() {
                    // A type we do not have (e.g. tls-unique, or tls-exporter on a
                    // TLS 1.2 connection without it): the binding cannot be verified.
                    return Step::Failure(Failure::NotAuthorized);
                }
                true
            }
            // -PLUS means binding; `p=` on a plain mechanism contradicts the mechanism.
            (_, true) | (CbFlag::Used(_), false) => false,
            (CbFlag::NotAdvertised, false) if self.plus_offered => {
                // The client can bind and we offered -PLUS, yet it believes we did not:
                // someone removed -PLUS from the list on the way (downgrade).
                return Step::Failure(Failure::NotAuthorized);
            }
            (CbFlag::NotAdvertised | CbFlag::NotSupported, false) => true,
        };
        if !binding_ok {
            return Step::Failure(Failure::MalformedRequest);
        }
        let username = parsed.username.clone();
        self.state = State::ScramLookup {
            client_first: input.to_vec(),
            parsed,
        };
        Step::NeedCredentials { username }
    }

    fn scram_start(
        &mut self,
        client_first: &[u8],
        parsed: ClientFirst,
        creds: Option<&StoredCredentials>,
    ) -> Step {
        let Some(hash) = self.mech.scram_hash() else {
            return Step::Failure(Failure::TemporaryAuthFailure);
        };
        let (keys, decoy) = match creds {
            Some(creds) => (creds.keys(hash).clone(), false),
            None => (
                self.decoy()
                    .credentials(&parsed.username)
                    .keys(hash)
                    .clone(),
                true,
            ),
        };
        // Wrong-sized keys are a store problem, not the client's; rsasl would report them
        // as a mechanism error indistinguishable from a bad message.
        let key_len = match hash {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        };
        if keys.stored_key.len() != key_len
            || keys.server_key.len() != key_len
            || keys.iterations == 0
            || keys.salt.is_empty()
        {
            return Step::Failure(Failure::TemporaryAuthFailure);
        }
        let mut run = match Run::start(self.mech, self.plus_offered, self.cb.clone(), Some(keys)) {
            Ok(run) => run,
            Err(_) => return Step::Failure(Failure::TemporaryAuthFailure),
        };
        match run.step(client_first) {
            Ok((false, server_first)) => {
                self.state = State::ScramFinal {
                    run: Box::new(run),
                    parsed,
                    decoy,
                };
                Step::Challenge(server_first)
            }
            // The message passed our stricter checks, so rsasl objecting is unexpected.
            Ok((true, _)) | Err(RunError::Internal) => Step::Failure(Failure::TemporaryAuthFailure),
            Err(RunError::Rejected) => Step::Failure(Failure::MalformedRequest),
        }
    }

    fn scram_final(
        &mut self,
        input: &[u8],
        mut run: Run,
        parsed: ClientFirst,
        decoy: bool,
    ) -> Step {
        if let Err(failure) = scram_msg::check_client_final(input) {
            return Step::Failure(failure);
        }
        match run.step(input) {
            // rsasl writes `v=…` and calls validate only for a correct proof and matching
            // channel binding; otherwise it writes `e=…` (invalid-proof,
            // channel-bindings-dont-match), which XMPP reports as not-authorized without
            // the detail.
            Ok((true, server_final)) => match run.validated() {
                Some(_) if !decoy && server_final.starts_with(b"v=") => Step::Success {
                    username: parsed.username,
                    authzid: parsed.authzid,
                    additional_data: Some(server_final),
                },
                _ => Step::Failure(Failure::NotAuthorized),
            },
            Ok((false, _)) | Err(RunError::Internal) => {
                Step::Failure(Failure::TemporaryAuthFailure)
            }
            Err(RunError::Rejected) => Step::Failure(Failure::MalformedRequest),
        }
    }
}
