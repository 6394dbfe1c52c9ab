//! RFC 6121 Appendix A, end to end: every row of the four outbound (A.2) and four
//! inbound (A.3) subscription tables, plus the three pre-approved states of §3.4.
//!
//! Each row is its own case on a fresh user/contact pair, both online and interested
//! in the roster. The pair is driven into the row's state with real subscription
//! exchanges (and the state is checked on both rosters), then the row's stanza is sent
//! over the wire — by the user for A.2, by the contact for A.3 — and, after a barrier
//! through both accounts' actors ([`settle`]), the case checks:
//!
//! * both roster items (`subscription`, `ask`, `approved`), via roster get;
//! * a roster push on each side exactly when that side's item changed, showing the new
//!   item, and no push otherwise;
//! * whether the stanza reached the other party's client (ROUTE?/DELIVER?);
//! * the presence the RFC attaches to a change of subscription: current presence
//!   when the contact gains a subscription (§3.1.5, §3.4), unavailable presence when
//!   one ends (§3.2.2, §3.3.3);
//! * and that nothing else at all was delivered to either client.
//!
//! The contact is a local account, so an A.3 stanza has first passed the contact's
//! own A.2 rules; where those do not route it, the row's outcome ("no", no state
//! change) is what the user observes, but the user's A.3 handling of such a stanza
//! cannot be isolated without a second server.

use aviary_tests::im::{Client, is_presence, xml};
use aviary_tests::{TestServer, settle};
use std::sync::Arc;

/// A subscription state from the user's side (Appendix A.1 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    to: bool,
    from: bool,
    pending_out: bool,
    pending_in: bool,
    approved: bool,
}

fn state(name: &str) -> State {
    let mut s = State {
        to: false,
        from: false,
        pending_out: false,
        pending_in: false,
        approved: false,
    };
    let mut parts = name.split(" + ");
    match parts.next() {
        Some("None") => {}
        Some("To") => s.to = true,
        Some("From") => s.from = true,
        Some("Both") => (s.to, s.from) = (true, true),
        other => panic!("bad state {name:?}: {other:?}"),
    }
    for p in parts {
        match p {
            "Pending Out" => s.pending_out = true,
            "Pending In" => s.pending_in = true,
            "Pending Out/In" => (s.pending_out, s.pending_in) = (true, true),
            "Pre-Approved" => s.approved = true,
            other => panic!("bad state {name:?}: {other:?}"),
        }
    }
    s
}

fn subscription(to: bool, from: bool) -> &'static str {
    match (to, from) {
        (false, false) => "none",
        (true, false) => "to",
        (false, true) => "from",
        (true, true) => "both",
    }
}

impl State {
    /// The user's roster item for the contact, as [`aviary_tests::RosterItem::state`].
    fn user_item(&self) -> String {
        item_state(
            subscription(self.to, self.from),
            self.pending_out,
            self.approved,
        )
    }

    /// The contact's roster item for the user: the mirror image.
    fn contact_item(&self, contact_approved: bool) -> String {
        item_state(
            subscription(self.from, self.to),
            self.pending_in,
            contact_approved,
        )
    }
}

fn item_state(sub: &str, ask: bool, approved: bool) -> String {
    let mut s = sub.to_owned();
    if ask {
        s.push_str("+ask=subscribe");
    }
    if approved {
        s.push_str("+approved");
    }
    s
}

/// A missing item shows as "none".
async fn visible(c: &mut Client, jid: &str) -> String {
    c.roster_item(jid)
        .await
        .map_or_else(|| "none".to_owned(), |i| i.state())
}

/// The nine A.1 states in A.1's order, then the §3.4 pre-approved ones.
const STATES: [&str; 12] = [
    "None",
    "None + Pending Out",
    "None + Pending In",
    "None + Pending Out/In",
    "To",
    "To + Pending In",
    "From",
    "From + Pending Out",
    "Both",
    "None + Pre-Approved",
    "None + Pending Out + Pre-Approved",
    "To + Pre-Approved",
];

/// One row: (existing state, ROUTE?/DELIVER?, new state or "no state change"), as in
/// the RFC's tables. ROUTE? is checked where it is observable: by the contact's
/// client receiving the stanza.
type Row = (&'static str, bool, &'static str);

const SAME: &str = "no state change";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// A.2: the user sends the stanza to the contact.
    Outbound,
    /// A.3: the contact sends the stanza to the user.
    Inbound,
}

/// Drives a fresh pair into `s` with real exchanges; both clients are online and
/// interested; their inboxes are empty on return.
async fn pair_in(server: &TestServer, s: State, tag: &str) -> (Client, Client) {
    let ua = server.account(&format!("u{tag}-")).await;
    let ca = server.account(&format!("c{tag}-")).await;
    let mut u = server.online(0, &ua, "user").await;
    let mut c = server.online(1, &ca, "contact").await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    if s.to {
        u.presence(Some("subscribe"), Some(&cb)).await;
        c.expect_presence(&ub, Some("subscribe")).await;
        c.presence(Some("subscribed"), Some(&ub)).await;
        u.expect_presence(&cb, Some("subscribed")).await;
    }
    if s.from {
        c.presence(Some("subscribe"), Some(&ub)).await;
        u.expect_presence(&cb, Some("subscribe")).await;
        u.presence(Some("subscribed"), Some(&cb)).await;
        c.expect_presence(&ub, Some("subscribed")).await;
    }
    if s.pending_out {
        u.presence(Some("subscribe"), Some(&cb)).await;
        c.expect_presence(&ub, Some("subscribe")).await;
    }
    if s.pending_in {
        c.presence(Some("subscribe"), Some(&ub)).await;
        u.expect_presence(&cb, Some("subscribe")).await;
    }
    if s.approved {
        u.presence(Some("subscribed"), Some(&cb)).await;
        u.expect_roster_push(&cb).await;
    }
    settle(&mut u, &mut c).await;
    assert_eq!(
        visible(&mut u, &cb).await,
        s.user_item(),
        "setup: user's item"
    );
    assert_eq!(
        visible(&mut c, &ub).await,
        s.contact_item(false),
        "setup: contact's item"
    );
    u.take_inbox();
    c.take_inbox();
    (u, c)
}

async fn run_case(server: &TestServer, dir: Dir, kind: &str, row: Row, contact_approves: bool) {
    let (before_name, passes, after_name) = row;
    let before = state(before_name);
    let after = if after_name == SAME {
        before
    } else {
        state(after_name)
    };
    let (mut u, mut c) = pair_in(server, before, kind).await;
    let (ub, cb) = (u.bare.clone(), c.bare.clone());
    match dir {
        Dir::Outbound => u.presence(Some(kind), Some(&cb)).await,
        Dir::Inbound => c.presence(Some(kind), Some(&ub)).await,
    }
    settle(&mut u, &mut c).await;

    // §3.4: a pre-approved request is answered by the user's server.
    let auto_approved = dir == Dir::Inbound && kind == "subscribe" && before.approved;
    // Roster pushes: one exactly when the item visibly changed, showing the new item.
    let (u_old, u_new) = (before.user_item(), after.user_item());
    let (c_old, c_new) = (
        before.contact_item(false),
        after.contact_item(contact_approves),
    );
    let mut c_want = Vec::new();
    if auto_approved {
        // The contact's own request shows first (ask='subscribe', §3.1.2), then
        // the automatic approval.
        let asked = State {
            pending_in: true,
            ..before
        };
        c_want.push(asked.contact_item(false));
    }
    if c_old != c_new {
        c_want.push(c_new.clone());
    }
    let u_want = if u_old != u_new {
        vec![u_new.clone()]
    } else {
        vec![]
    };
    for (who, client, peer, want) in [
        ("user", &mut u, &cb, u_want),
        ("contact", &mut c, &ub, c_want),
    ] {
        let pushes: Vec<String> = client
            .take_roster_pushes()
            .await
            .into_iter()
            .map(|p| {
                assert_eq!(&p.item.jid, peer, "{who}: push for another item");
                p.item.state()
            })
            .collect();
        assert_eq!(pushes, want, "{who}'s roster pushes");
    }
    // The stanza itself, and what the server sends with it.
    let (sender_bare, receiver) = match dir {
        Dir::Outbound => (ub.clone(), &mut c),
        Dir::Inbound => (cb.clone(), &mut u),
    };
    let got = receiver.take_where(|e| is_presence(e, &sender_bare, Some(kind)));
    assert_eq!(
        got.len(),
        usize::from(passes),
        "{kind} delivered to the {}: {:?}",
        if dir == Dir::Outbound {
            "contact"
        } else {
            "user"
        },
        got.iter().map(xml).collect::<Vec<_>>()
    );
    if auto_approved {
        let r = c.take_where(|e| is_presence(e, &ub, Some("subscribed")));
        assert_eq!(r.len(), 1, "the contact gets the automatic subscribed");
    }
    // §3.1.5 / §3.4: presence follows a new subscription; §3.2.2 / §3.3.3:
    // unavailable presence follows a cancelled one.
    let (uj, cj) = (u.jid.clone(), c.jid.clone());
    for (gained, lost, receiver, sender) in [
        (after.to && !before.to, before.to && !after.to, &mut u, &cj),
        (
            after.from && !before.from,
            before.from && !after.from,
            &mut c,
            &uj,
        ),
    ] {
        let avail = receiver.take_where(|e| is_presence(e, sender, None)).len();
        let unavail = receiver
            .take_where(|e| is_presence(e, sender, Some("unavailable")))
            .len();
        assert_eq!(
            (avail, unavail),
            (usize::from(gained), usize::from(lost)),
            "presence from {sender} to {} (available, unavailable)",
            receiver.jid
        );
    }
    for client in [&mut u, &mut c] {
        let extra = client.inbox_xml();
        assert!(
            client.take_inbox().is_empty(),
            "{} received unexpected stanzas: {extra}",
            client.jid
        );
    }
    assert_eq!(visible(&mut u, &cb).await, u_new, "user's item");
    assert_eq!(visible(&mut c, &ub).await, c_new, "contact's item");
}

/// Runs every row of a table as its own case, concurrently; reports all failures.
async fn table(dir: Dir, kind: &'static str, rows: &[Row], contact_approves: &[&str]) {
    let listed: Vec<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(listed, STATES, "one row per state, in A.1 order");
    let server = Arc::new(TestServer::start());
    let mut tasks = Vec::new();
    for &row in rows {
        let server = server.clone();
        let approves = contact_approves.contains(&row.0);
        tasks.push((
            row.0,
            tokio::spawn(async move { run_case(&server, dir, kind, row, approves).await }),
        ));
    }
    let mut failures = Vec::new();
    for (name, t) in tasks {
        if let Err(e) = t.await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failures.push(format!("{dir:?} {kind} in \"{name}\": {msg}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[tokio::test]
async fn rfc6121_a_2_1_outbound_subscribe() {
    // A.2.1 has no ROUTE? column: every outbound subscribe is routed. The contact's
    // client sees it where the contact's A.3.1 row delivers it.
    let rows = [
        ("None", true, "None + Pending Out"),
        ("None + Pending Out", false, SAME),
        ("None + Pending In", true, "None + Pending Out/In"),
        ("None + Pending Out/In", false, SAME),
        ("To", false, SAME),
        ("To + Pending In", false, SAME),
        ("From", true, "From + Pending Out"),
        ("From + Pending Out", false, SAME),
        ("Both", false, SAME),
        (
            "None + Pre-Approved",
            true,
            "None + Pending Out + Pre-Approved",
        ),
        ("None + Pending Out + Pre-Approved", false, SAME),
        ("To + Pre-Approved", false, SAME),
    ];
    table(Dir::Outbound, "subscribe", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_2_2_outbound_unsubscribe() {
    let rows = [
        ("None", false, SAME),
        ("None + Pending Out", true, "None"),
        ("None + Pending In", false, SAME),
        ("None + Pending Out/In", true, "None + Pending In"),
        ("To", true, "None"),
        ("To + Pending In", true, "None + Pending In"),
        ("From", false, SAME),
        ("From + Pending Out", true, "From"),
        ("Both", true, "From"),
        ("None + Pre-Approved", false, SAME),
        (
            "None + Pending Out + Pre-Approved",
            true,
            "None + Pre-Approved",
        ),
        ("To + Pre-Approved", true, "None + Pre-Approved"),
    ];
    table(Dir::Outbound, "unsubscribe", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_2_3_outbound_subscribed() {
    // "pre-approval" cells: the user's item gets approved='true' and nothing is sent.
    let rows = [
        ("None", false, "None + Pre-Approved"),
        (
            "None + Pending Out",
            false,
            "None + Pending Out + Pre-Approved",
        ),
        ("None + Pending In", true, "From"),
        ("None + Pending Out/In", true, "From + Pending Out"),
        ("To", false, "To + Pre-Approved"),
        ("To + Pending In", true, "Both"),
        ("From", false, SAME),
        ("From + Pending Out", false, SAME),
        ("Both", false, SAME),
        ("None + Pre-Approved", false, SAME),
        ("None + Pending Out + Pre-Approved", false, SAME),
        ("To + Pre-Approved", false, SAME),
    ];
    table(Dir::Outbound, "subscribed", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_2_4_outbound_unsubscribed() {
    // Note [1] of A.2.4: it also cancels a pre-approval, silently.
    let rows = [
        ("None", false, SAME),
        ("None + Pending Out", false, SAME),
        ("None + Pending In", true, "None"),
        ("None + Pending Out/In", true, "None + Pending Out"),
        ("To", false, SAME),
        ("To + Pending In", true, "To"),
        ("From", true, "None"),
        ("From + Pending Out", true, "None + Pending Out"),
        ("Both", true, "To"),
        ("None + Pre-Approved", false, "None"),
        (
            "None + Pending Out + Pre-Approved",
            false,
            "None + Pending Out",
        ),
        ("To + Pre-Approved", false, "To"),
    ];
    table(Dir::Outbound, "unsubscribed", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_3_1_inbound_subscribe() {
    // "no *" rows: the user's server answers `subscribed` itself (§3.1.3); with a
    // pre-approval it approves the request without asking the user (§3.4).
    let rows = [
        ("None", true, "None + Pending In"),
        ("None + Pending Out", true, "None + Pending Out/In"),
        ("None + Pending In", false, SAME),
        ("None + Pending Out/In", false, SAME),
        ("To", true, "To + Pending In"),
        ("To + Pending In", false, SAME),
        ("From", false, SAME),
        ("From + Pending Out", false, SAME),
        ("Both", false, SAME),
        ("None + Pre-Approved", false, "From"),
        (
            "None + Pending Out + Pre-Approved",
            false,
            "From + Pending Out",
        ),
        ("To + Pre-Approved", false, "Both"),
    ];
    table(Dir::Inbound, "subscribe", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_3_2_inbound_unsubscribe() {
    let rows = [
        ("None", false, SAME),
        ("None + Pending Out", false, SAME),
        ("None + Pending In", true, "None"),
        ("None + Pending Out/In", true, "None + Pending Out"),
        ("To", false, SAME),
        ("To + Pending In", true, "To"),
        ("From", true, "None"),
        ("From + Pending Out", true, "None + Pending Out"),
        ("Both", true, "To"),
        ("None + Pre-Approved", false, SAME),
        ("None + Pending Out + Pre-Approved", false, SAME),
        ("To + Pre-Approved", false, SAME),
    ];
    table(Dir::Inbound, "unsubscribe", &rows, &[]).await;
}

#[tokio::test]
async fn rfc6121_a_3_3_inbound_subscribed() {
    // Where the user has no request pending, the contact's `subscribed` is a
    // pre-approval on the contact's side (§3.4) and never reaches the user.
    let rows = [
        ("None", false, SAME),
        ("None + Pending Out", true, "To"),
        ("None + Pending In", false, SAME),
        ("None + Pending Out/In", true, "To + Pending In"),
        ("To", false, SAME),
        ("To + Pending In", false, SAME),
        ("From", false, SAME),
        ("From + Pending Out", true, "Both"),
        ("Both", false, SAME),
        ("None + Pre-Approved", false, SAME),
        (
            "None + Pending Out + Pre-Approved",
            true,
            "To + Pre-Approved",
        ),
        ("To + Pre-Approved", false, SAME),
    ];
    let contact_pre_approves = ["None", "None + Pending In", "From", "None + Pre-Approved"];
    table(Dir::Inbound, "subscribed", &rows, &contact_pre_approves).await;
}

#[tokio::test]
async fn rfc6121_a_3_4_inbound_unsubscribed() {
    let rows = [
        ("None", false, SAME),
        ("None + Pending Out", true, "None"),
        ("None + Pending In", false, SAME),
        ("None + Pending Out/In", true, "None + Pending In"),
        ("To", true, "None"),
        ("To + Pending In", true, "None + Pending In"),
        ("From", false, SAME),
        ("From + Pending Out", true, "From"),
        ("Both", true, "From"),
        ("None + Pre-Approved", false, SAME),
        (
            "None + Pending Out + Pre-Approved",
            true,
            "None + Pre-Approved",
        ),
        ("To + Pre-Approved", true, "None + Pre-Approved"),
    ];
    table(Dir::Inbound, "unsubscribed", &rows, &[]).await;
}
