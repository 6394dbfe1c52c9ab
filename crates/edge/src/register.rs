//! In-band registration (XEP-0077) before authentication: the registration form and
//! account creation. Offered only when enabled in the configuration and only on an
//! encrypted stream (unless TLS is not required), and limited per client address.

use crate::EdgeContext;
use crate::xml_stream::{Ended, XmlStream};
use aviary_sasl::StoredCredentials;
use aviary_xmpp::{
    BareJid, Element, IqType, Stanza, StanzaError, StanzaErrorCondition, StreamError,
    StreamErrorCondition, ns,
};
use std::net::SocketAddr;

/// Handles one iq received before authentication while registration is open.
pub(crate) async fn handle_unauthenticated(
    edge: &EdgeContext,
    s: &mut XmlStream,
    peer: SocketAddr,
    el: Element,
) -> Result<(), Ended> {
    let iq = match Stanza::from_element(el) {
        Ok(iq) => iq,
        Err(_) => {
            return Err(s
                .fail(StreamError::new(StreamErrorCondition::BadFormat))
                .await);
        }
    };
    let query = iq
        .iq_payload()
        .filter(|p| p.is("query", ns::REGISTER))
        .cloned();
    let (Some(kind), Some(query)) = (iq.iq_type(), query) else {
        return Err(s
            .fail(StreamError::with_text(
                StreamErrorCondition::NotAuthorized,
                "Only registration is possible before authentication",
            ))
            .await);
    };
    let reply = match kind {
        IqType::Get => iq.iq_result(Some(registration_form())),
        IqType::Set => match register(edge, &s.domain, peer, &query).await {
            Ok(()) => iq.iq_result(None),
            Err(e) => match iq.error_reply(e) {
                Some(r) => r,
                None => return Ok(()),
            },
        },
        IqType::Result | IqType::Error => return Ok(()),
    };
    let mut reply = reply;
    reply.from = None;
    reply.to = None;
    s.send(&reply.into_element()).await
}

/// XEP-0077 §3.1: the fields we need.
fn registration_form() -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(
            Element::new("instructions", ns::REGISTER)
                .with_text("Choose a username and password for use with this service."),
        )
        .with_child(Element::new("username", ns::REGISTER))
        .with_child(Element::new("password", ns::REGISTER))
}

async fn register(
    edge: &EdgeContext,
    domain: &str,
    peer: SocketAddr,
    query: &Element,
) -> Result<(), StanzaError> {
    if query.has_child("remove", ns::REGISTER) {
        // XEP-0077 §3.2: cancellation needs an authenticated stream.
        return Err(StanzaError::new(StanzaErrorCondition::NotAuthorized));
    }
    let username = query
        .child_text("username", ns::REGISTER)
        .map(|u| u.trim().to_owned())
        .unwrap_or_default();
    let password = query
        .child_text("password", ns::REGISTER)
        .map(|p| p.into_owned())
        .unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("A username and a password are required"));
    }
    if username.contains(['@', '/']) {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("The username may not contain '@' or '/'"));
    }
    let Ok(jid) = BareJid::new(&format!("{username}@{domain}")) else {
        return Err(StanzaError::new(StanzaErrorCondition::NotAcceptable)
            .with_text("That username is not allowed"));
    };
    if edge.registrations.is_limited(&peer.ip()) {
        return Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
            .with_text("Too many registrations from this address; try again later"));
    }
    let iterations = edge.config.scram_iterations;
    let creds =
        tokio::task::spawn_blocking(move || StoredCredentials::derive(&password, iterations))
            .await
            .map_err(|_| StanzaError::new(StanzaErrorCondition::InternalServerError))?
            .map_err(|_| {
                StanzaError::new(StanzaErrorCondition::NotAcceptable)
                    .with_text("That password is not allowed")
            })?;
    match edge.accounts.create(&jid, &creds.to_bytes()).await {
        Ok(true) => {
            edge.registrations.record(&peer.ip());
            tracing::info!(user = %jid, "account registered in-band");
            Ok(())
        }
        Ok(false) => Err(StanzaError::new(StanzaErrorCondition::Conflict)
            .with_text("That username is already taken")),
        Err(e) => {
            tracing::warn!(error = %e, "registration failed");
            Err(StanzaError::new(StanzaErrorCondition::InternalServerError))
        }
    }
}
