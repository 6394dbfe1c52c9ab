//! An IM-level test client on top of [`RawClient`]: roster, presence and message
//! helpers for the RFC 6121 / XEP conformance suites, with an inbox so that waiting
//! for one stanza never loses another.
//!
//! # Asserting that something is NOT delivered: barriers
//!
//! A negative assertion is only meaningful once everything that could have caused the
//! delivery has been processed. Waiting "long enough" is not a proof, so the suites
//! use iq round trips through the user actors that own the state instead:
//!
//! * Every stanza a client sends goes to its own account's actor first; stanzas for
//!   another account go from there to that account's actor; each actor handles its
//!   mailbox in order and delivers to a connection in order.
//! * [`Client::sync`] pings the account's own bare JID. The ping passes through this
//!   account's actor (outbound) and its answer passes through it again (inbound), so
//!   when the answer arrives, everything this account's actor had queued for this
//!   connection before has arrived too.
//! * [`Client::sync_via`] pings another account's bare JID. RFC 6121 §8.5.2 makes the
//!   server answer such an iq on the account's behalf, so the ping is processed by
//!   *that* account's actor, after everything this client sent to it before, and the
//!   answer comes back through this account's actor, after anything that actor
//!   routed back to us before (auto-replies, presence).
//! * [`settle`] combines them for a pair: `a.sync_via(b)`, `b.sync_via(a)`, `a.sync()`.
//!   After it, both clients hold everything the two actors produced in answer to what
//!   either sent before, including one level of knock-on effects (a stanza, the other
//!   side's reaction, and the reaction to that).
//!
//! A barrier across a third account needs its own round trip; tests say which one
//! they use. Positive assertions never sleep: they wait for the expected stanza with
//! [`STEP_TIMEOUT`].
//!
//! On a cluster, the same round trips still order events, because each account's
//! actor is the single writer of its state wherever it runs.

use crate::fixture::TestServer;
use crate::raw::{RawClient, STEP_TIMEOUT};
use aviary_xmpp::{Element, Event, ns};
use std::collections::VecDeque;
use std::time::Duration;

mod roster;
mod stanzas;

pub use roster::{RosterItem, RosterPush, RosterResult};
pub use stanzas::*;

/// A registered account.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    /// `user@domain`.
    pub bare: String,
}

impl TestServer {
    /// Registers a unique account (see [`TestServer::new_account`]).
    pub async fn account(&self, prefix: &str) -> Account {
        let (user, password) = self.new_account(prefix).await;
        let bare = self.bare(&user);
        Account {
            user,
            password,
            bare,
        }
    }

    /// Registers a unique account in `domain`, one of the served domains.
    pub async fn account_in(&self, domain: &str, prefix: &str) -> Account {
        let user = self.unique_user(prefix);
        let password = format!("pw-{user}");
        self.register_in(domain, &user, &password)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        Account {
            bare: format!("{user}@{domain}"),
            user,
            password,
        }
    }

    /// A bound client for `acct` at party `party`'s endpoint, not yet available and not
    /// yet interested in the roster.
    pub async fn connect(&self, party: usize, acct: &Account, resource: &str) -> Client {
        let domain = acct
            .bare
            .split_once('@')
            .map_or(self.domain.as_str(), |(_, d)| d);
        let raw = RawClient::login(
            self.endpoint(party),
            domain,
            &acct.user,
            &acct.password,
            Some(resource),
        )
        .await
        .unwrap_or_else(|e| panic!("login {}/{resource}: {e:#}", acct.bare));
        Client::new(raw, acct)
    }

    /// A client that requested the roster (an interested resource, RFC 6121 §2.1.6)
    /// and sent initial presence (an available resource, §4.2).
    pub async fn online(&self, party: usize, acct: &Account, resource: &str) -> Client {
        let mut c = self.connect(party, acct, resource).await;
        c.roster_get(None).await;
        c.available(None).await;
        c
    }
}

/// A logged-in client with an inbox.
pub struct Client {
    raw: RawClient,
    /// The account this client is logged in to.
    pub account: Account,
    /// The bound full JID.
    pub jid: String,
    pub bare: String,
    pub domain: String,
    inbox: VecDeque<Element>,
    seq: u64,
}

impl Client {
    pub fn new(raw: RawClient, acct: &Account) -> Client {
        let jid = raw.jid.clone().expect("a bound client");
        Client {
            domain: raw.domain.clone(),
            account: acct.clone(),
            raw,
            jid,
            bare: acct.bare.clone(),
            inbox: VecDeque::new(),
            seq: 0,
        }
    }

    /// The stream features offered after authentication.
    pub fn features(&self) -> &Element {
        self.raw.features.as_ref().expect("features")
    }

    pub fn raw(&mut self) -> &mut RawClient {
        &mut self.raw
    }

    pub fn next_id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}-{}", self.seq)
    }

    pub async fn send(&mut self, el: &Element) {
        self.raw
            .send(el)
            .await
            .unwrap_or_else(|e| panic!("{}: send failed: {e:#}", self.jid));
    }

    pub async fn send_xml(&mut self, xml: &str) {
        self.raw
            .send_xml(xml)
            .await
            .unwrap_or_else(|e| panic!("{}: send failed: {e:#}", self.jid));
    }

    /// The first stanza (already received or arriving within [`STEP_TIMEOUT`]) for
    /// which `pred` holds; everything else stays in the inbox.
    pub async fn recv(&mut self, what: &str, mut pred: impl FnMut(&Element) -> bool) -> Element {
        if let Some(i) = self.inbox.iter().position(&mut pred) {
            return self.inbox.remove(i).expect("present");
        }
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.raw.next_event_within(left).await {
                Ok(Event::Element(el)) if pred(&el) => return el,
                Ok(Event::Element(el)) => self.inbox.push_back(el),
                Ok(other) => panic!(
                    "{}: waiting for {what}, got {other:?}; inbox: {}",
                    self.jid,
                    self.inbox_xml()
                ),
                Err(e) => panic!(
                    "{}: waiting for {what}: {e:#}; inbox: {}",
                    self.jid,
                    self.inbox_xml()
                ),
            }
        }
    }

    /// Like [`Client::recv`], but gives up after `limit` and returns `None`.
    pub async fn recv_within(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(i) = self.inbox.iter().position(&mut pred) {
            return self.inbox.remove(i);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.raw.next_event_within(left).await {
                Ok(Event::Element(el)) if pred(&el) => return Some(el),
                Ok(Event::Element(el)) => self.inbox.push_back(el),
                Ok(other) => panic!("{}: unexpected {other:?}", self.jid),
                Err(e) if e.to_string().contains("timed out") => return None,
                Err(e) => panic!("{}: {e:#}", self.jid),
            }
        }
    }

    /// Waits until the full JID `full` is no longer bound, i.e. until the server has
    /// processed the end of that stream (closing a stream returns before that). An iq
    /// to a bound resource is delivered to it (and a closing stream never answers);
    /// to a missing one the server answers with an error (RFC 6121 §8.5.3.2.3), so
    /// this pings until the error comes.
    pub async fn wait_until_unbound(&mut self, full: &str) {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let prefix = self.next_id("gone");
        let mut n = 0;
        loop {
            n += 1;
            let id = format!("{prefix}-{n}");
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("to", full)
                .with_attr("id", id.clone())
                .with_child(Element::new("ping", ns::PING));
            self.send(&iq).await;
            let answer = self
                .recv_within(Duration::from_millis(200), |e| {
                    e.name() == "iq" && e.attr("id") == Some(id.as_str())
                })
                .await;
            if answer.is_some_and(|a| a.attr("type") == Some("error")) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {full} is still bound",
                self.jid
            );
        }
        // Late answers to earlier pings are of no interest.
        self.take_where(|e| {
            e.name() == "iq"
                && e.attr("id")
                    .is_some_and(|id| id.starts_with(&format!("{prefix}-")))
        });
    }

    /// Removes and returns everything received so far (call after a barrier).
    pub fn take_inbox(&mut self) -> Vec<Element> {
        self.inbox.drain(..).collect()
    }

    /// Removes and returns the received stanzas for which `pred` holds.
    pub fn take_where(&mut self, mut pred: impl FnMut(&Element) -> bool) -> Vec<Element> {
        let (taken, kept): (Vec<_>, Vec<_>) = self.inbox.drain(..).partition(|e| pred(e));
        self.inbox = kept.into();
        taken
    }

    pub fn inbox_xml(&self) -> String {
        let all: Vec<String> = self.inbox.iter().map(xml).collect();
        format!("[{}]", all.join(", "))
    }

    /// Sends an iq (adding an id if it has none) and waits for its result or error.
    pub async fn iq(&mut self, mut el: Element) -> Element {
        let id = match el.attr("id") {
            Some(id) => id.to_owned(),
            None => {
                let id = self.next_id("iq");
                el.set_attr("id", id.clone());
                id
            }
        };
        self.send(&el).await;
        let what = format!("the answer to {}", xml(&el));
        self.recv(&what, |e| {
            e.name() == "iq"
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// Like [`Client::iq`], and the answer must be a result.
    pub async fn iq_ok(&mut self, el: Element) -> Element {
        let sent = xml(&el);
        let r = self.iq(el).await;
        assert_eq!(
            r.attr("type"),
            Some("result"),
            "{}: {sent} failed: {}",
            self.jid,
            xml(&r)
        );
        r
    }

    pub async fn ping(&mut self, to: &str) -> Element {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", to)
            .with_child(Element::new("ping", ns::PING));
        self.iq(iq).await
    }

    /// Barrier through this account's own actor (see the module docs). It pings the
    /// account's own bare JID rather than the server, so that it still works when the
    /// user blocks the server's domain (XEP-0191).
    pub async fn sync(&mut self) {
        let bare = self.bare.clone();
        let r = self.ping(&bare).await;
        assert_eq!(r.attr("type"), Some("result"), "self ping: {}", xml(&r));
    }

    /// Barrier through `bare`'s actor (see the module docs).
    pub async fn sync_via(&mut self, bare: &str) {
        self.ping(bare).await;
    }

    /// After [`Client::sync`], fails if any received stanza matches `pred`.
    pub async fn assert_none(&mut self, what: &str, mut pred: impl FnMut(&Element) -> bool) {
        self.sync().await;
        let bad: Vec<String> = self.inbox.iter().filter(|e| pred(e)).map(xml).collect();
        assert!(
            bad.is_empty(),
            "{}: expected no {what}, got {}",
            self.jid,
            bad.join(", ")
        );
    }

    /// After [`Client::sync`], fails if anything at all was received.
    pub async fn assert_quiet(&mut self, context: &str) {
        self.assert_none(&format!("stanza ({context})"), |_| true)
            .await;
    }

    // ---- presence (RFC 6121 §3, §4) ----

    /// Sends a presence stanza.
    pub async fn presence(&mut self, type_: Option<&str>, to: Option<&str>) {
        let mut p = Element::new("presence", ns::CLIENT);
        if let Some(t) = type_ {
            p.set_attr("type", t);
        }
        if let Some(to) = to {
            p.set_attr("to", to);
        }
        self.send(&p).await;
    }

    /// Broadcasts available presence (initial or update) and waits until the server
    /// has processed it: RFC 6121 §4.2.2 / §4.4.2 send it back to the sender too.
    pub async fn available(&mut self, priority: Option<i8>) {
        self.available_with(priority, None).await;
    }

    /// Like [`Client::available`], with a `<status/>` text.
    pub async fn available_with(&mut self, priority: Option<i8>, status: Option<&str>) {
        let mut p = Element::new("presence", ns::CLIENT);
        if let Some(prio) = priority {
            p.append_child(Element::new("priority", ns::CLIENT).with_text(prio.to_string()));
        }
        if let Some(s) = status {
            p.append_child(Element::new("status", ns::CLIENT).with_text(s));
        }
        self.send(&p).await;
        let me = self.jid.clone();
        self.recv("our own presence back", |e| {
            is_presence(e, &me, None) && status.is_none_or(|s| status_of(e).as_deref() == Some(s))
        })
        .await;
    }

    /// Waits for a presence stanza from exactly `from` with this `type` (`None`:
    /// available).
    pub async fn expect_presence(&mut self, from: &str, type_: Option<&str>) -> Element {
        let what = format!("presence type={type_:?} from {from}");
        self.recv(&what, |e| is_presence(e, from, type_)).await
    }

    // ---- messages (RFC 6121 §5) ----

    /// Sends a message with a body.
    pub async fn message(&mut self, to: &str, type_: &str, body: &str) {
        let m = message(to, type_, body);
        self.send(&m).await;
    }

    /// Waits for a message whose body is `body`.
    pub async fn expect_body(&mut self, body: &str) -> Element {
        let what = format!("a message with body {body:?}");
        self.recv(&what, |e| {
            e.name() == "message" && e.child_text("body", ns::CLIENT).as_deref() == Some(body)
        })
        .await
    }

    /// Waits for an error stanza of `kind` (`message`, `presence`, `iq`) and returns
    /// its defined condition.
    pub async fn expect_error(&mut self, kind: &str, from: &str) -> (Element, String) {
        let what = format!("a {kind} error from {from}");
        let el = self
            .recv(&what, |e| {
                e.name() == kind && e.attr("type") == Some("error") && e.attr("from") == Some(from)
            })
            .await;
        let cond = error_condition(&el).unwrap_or_else(|| panic!("no condition: {}", xml(&el)));
        (el, cond)
    }

    /// Ends the stream cleanly (`</stream:stream>`) and waits for the server's close.
    pub async fn close(self) {
        let jid = self.jid.clone();
        self.raw
            .close()
            .await
            .unwrap_or_else(|e| panic!("{jid}: close: {e:#}"));
    }

    /// Drops the TCP connection without closing the stream.
    pub fn abort(self) {
        self.raw.abort();
    }
}

/// `u` asks for a subscription to `c`'s presence and `c` approves: `u` then has
/// `to` and `c` has `from` (RFC 6121 §3.1). Both must be available. Waits for every
/// step, settles, and leaves both inboxes empty.
pub async fn subscribe_to(u: &mut Client, c: &mut Client) {
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    u.presence(Some("subscribe"), Some(&cb)).await;
    c.expect_presence(&ub, Some("subscribe")).await;
    c.presence(Some("subscribed"), Some(&ub)).await;
    u.expect_presence(&cb, Some("subscribed")).await;
    settle(u, c).await;
    u.take_inbox();
    c.take_inbox();
}

/// A mutual subscription (`both` on each side), as [`subscribe_to`] both ways.
pub async fn subscribe_both(u: &mut Client, c: &mut Client) {
    subscribe_to(u, c).await;
    subscribe_to(c, u).await;
}

/// Runs the pair barrier described in the module docs.
pub async fn settle(a: &mut Client, b: &mut Client) {
    let (ab, bb) = (a.bare.clone(), b.bare.clone());
    a.sync_via(&bb).await;
    b.sync_via(&ab).await;
    a.sync().await;
}
