//! The glue to rsasl: builds a one-shot rsasl server session whose callback answers
//! from credentials already in hand, runs its steps, and reads the outcome back.
//!
//! rsasl's callbacks are synchronous while our credential lookup is not, so the state
//! machine in `server.rs` never runs rsasl before it has the credentials: it validates
//! the client-first message itself (that step involves no cryptography), asks the edge
//! for the account, and only then starts rsasl and feeds it the same client-first
//! message. Everything rsasl needs is therefore known when its callback fires.

use std::sync::{Arc, OnceLock};

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::plain::PLAIN;
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::scram::{SCRAM_SHA1, SCRAM_SHA1_PLUS, SCRAM_SHA256, SCRAM_SHA256_PLUS};
use rsasl::prelude::{
    ChannelBindingCallback, Mechanism as RsaslMechanism, Mechname, Registry, SASLConfig,
    SASLServer, Session, SessionError, State, Validation,
};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, ValidationError};

use crate::credentials::ScramKeys;
use crate::mechanism::{ChannelBindings, Mechanism};

/// What rsasl's `validate` callback saw. rsasl calls it only once the exchange has
/// succeeded from the mechanism's point of view: a verified SCRAM proof, or a
/// well-formed PLAIN message (whose password we still have to check).
pub(crate) struct Validated {
    pub(crate) authid: Option<String>,
    pub(crate) authzid: Option<String>,
    pub(crate) password: Option<Vec<u8>>,
}

impl std::fmt::Debug for Validated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validated")
            .field("authid", &self.authid)
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}

struct Outcome;
impl Validation for Outcome {
    type Value = Validated;
}

/// Answers rsasl's questions from credentials fetched before the session started.
struct Answers {
    keys: Option<ScramKeys>,
}

impl SessionCallback for Answers {
    fn callback(
        &self,
        _session_data: &SessionData,
        _context: &Context,
        request: &mut Request,
    ) -> Result<(), SessionError> {
        if let Some(keys) = &self.keys {
            request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                keys.iterations,
                &keys.salt,
                &keys.stored_key,
                &keys.server_key,
            ))?;
        }
        Ok(())
    }

    fn validate(
        &self,
        _session_data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        validate.with::<Outcome, _>(|| {
            Ok(Validated {
                authid: context.get_ref::<AuthId>().map(str::to_owned),
                authzid: context.get_ref::<AuthzId>().map(str::to_owned),
                password: context.get_ref::<Password>().map(<[u8]>::to_vec),
            })
        })?;
        Ok(())
    }
}

/// Hands rsasl the binding data of this connection by type name.
struct Bindings(ChannelBindings);

impl ChannelBindingCallback for Bindings {
    fn get_cb_data(&self, cbname: &str) -> Option<&[u8]> {
        self.0.get(cbname)
    }
}

/// The registry a session starts from. rsasl decides whether a non-PLUS SCRAM server
/// rejects the `y` flag (downgrade detection, RFC 5802 §6) by looking for the -PLUS
/// variant in the configured list, so that variant is listed exactly when the server
/// advertised it.
fn registry(mech: Mechanism, plus_offered: bool) -> Registry {
    static SHA256: OnceLock<[RsaslMechanism; 1]> = OnceLock::new();
    static SHA256_AND_PLUS: OnceLock<[RsaslMechanism; 2]> = OnceLock::new();
    static SHA256_PLUS: OnceLock<[RsaslMechanism; 1]> = OnceLock::new();
    static SHA1: OnceLock<[RsaslMechanism; 1]> = OnceLock::new();
    static SHA1_AND_PLUS: OnceLock<[RsaslMechanism; 2]> = OnceLock::new();
    static SHA1_PLUS: OnceLock<[RsaslMechanism; 1]> = OnceLock::new();
    static PLAIN_ONLY: OnceLock<[RsaslMechanism; 1]> = OnceLock::new();
    let list: &'static [RsaslMechanism] = match (mech, plus_offered) {
        (Mechanism::ScramSha256, false) => SHA256.get_or_init(|| [SCRAM_SHA256]),
        (Mechanism::ScramSha256, true) => {
            SHA256_AND_PLUS.get_or_init(|| [SCRAM_SHA256, SCRAM_SHA256_PLUS])
        }
        (Mechanism::ScramSha256Plus, _) => SHA256_PLUS.get_or_init(|| [SCRAM_SHA256_PLUS]),
        (Mechanism::ScramSha1, false) => SHA1.get_or_init(|| [SCRAM_SHA1]),
        (Mechanism::ScramSha1, true) => SHA1_AND_PLUS.get_or_init(|| [SCRAM_SHA1, SCRAM_SHA1_PLUS]),
        (Mechanism::ScramSha1Plus, _) => SHA1_PLUS.get_or_init(|| [SCRAM_SHA1_PLUS]),
        (Mechanism::Plain, _) => PLAIN_ONLY.get_or_init(|| [PLAIN]),
    };
    Registry::with_mechanisms(list)
}

/// Why an rsasl run did not produce an outcome.
#[derive(Debug)]
pub(crate) enum RunError {
    /// rsasl rejected the input (parse, base64, protocol).
    Rejected,
    /// rsasl could not be set up or misbehaved; not the client's fault.
    Internal,
}

/// One rsasl server session for one authentication exchange.
pub(crate) struct Run {
    session: Session<Outcome, Bindings>,
}

impl Run {
    /// Starts a session that will answer SCRAM questions with `keys` (`None` for PLAIN).
    pub(crate) fn start(
        mech: Mechanism,
        plus_offered: bool,
        cb: ChannelBindings,
        keys: Option<ScramKeys>,
    ) -> Result<Self, RunError> {
        let config: Arc<SASLConfig> = SASLConfig::builder()
            .with_registry(registry(mech, plus_offered))
            .with_callback(Answers { keys })
            .map_err(|_| RunError::Internal)?;
        let name = Mechname::parse(mech.name().as_bytes()).map_err(|_| RunError::Internal)?;
        let session = SASLServer::<Outcome, Bindings>::with_cb(config, Bindings(cb))
            .start_suggested(name)
            .map_err(|_| RunError::Internal)?;
        Ok(Self { session })
    }

    /// Feeds one client message; returns whether the mechanism finished, and what it
    /// wrote for the client.
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<(bool, Vec<u8>), RunError> {
        let mut out = Vec::new();
        match self.session.step(Some(input), &mut out) {
            Ok(State::Running) => Ok((false, out)),
            Ok(State::Finished(_)) => Ok((true, out)),
            Err(
                SessionError::MechanismError(_)
                | SessionError::MissingChannelBindingData(_)
                | SessionError::InputDataRequired,
            ) => Err(RunError::Rejected),
            Err(_) => Err(RunError::Internal),
        }
    }

    /// What the validate callback recorded, if rsasl called it.
    pub(crate) fn validated(&mut self) -> Option<Validated> {
        self.session.validation()
    }
}
