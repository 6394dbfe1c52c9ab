//! The presence-subscription state machine of RFC 6121 §3 and Appendix A, as pure
//! functions over one roster item's state.
//!
//! The user's server keeps, for each contact, which way presence flows (`subscription`),
//! whether either side has an unanswered request (`pending_out`, `pending_in`) and
//! whether the user pre-approved a request (§3.4). [`outbound`] decides what a
//! subscription stanza the user sends does to that state and whether it is routed;
//! [`inbound`] does the same for one a contact sends, and says whether it reaches the
//! user or is answered by the server. The presence side effects of a transition
//! (sending current or unavailable presence, roster pushes) belong to the caller.
//!
//! The code derives each cell from a few rules rather than a 9×8 lookup so the reason
//! for every cell can be written next to it; the tests list Appendix A row by row.

use aviary_xmpp::PresenceType;

/// RFC 6121 §2.1.2.5 subscription attribute values (of a roster item).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    /// The value of the roster item's `subscription` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses a `subscription` attribute value. `remove` is not a state (it only
    /// appears in roster sets and pushes), so it is `None` here like any other word.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    fn from_directions(to: bool, from: bool) -> Self {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }

    fn with_to(self, to: bool) -> Self {
        Self::from_directions(to, self.has_from())
    }

    fn with_from(self, from: bool) -> Self {
        Self::from_directions(self.has_to(), from)
    }
}

/// The relationship between the user and one contact, as RFC 6121 Appendix A names it
/// ("None + Pending Out/In", "To + Pending In", ...), plus pre-approval (§3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContactState {
    pub subscription: Subscription,
    /// The user asked to subscribe to the contact, unanswered (roster `ask='subscribe'`).
    pub pending_out: bool,
    /// The contact asked to subscribe to the user, and the user has not answered.
    pub pending_in: bool,
    /// The user pre-approved a future request from the contact (§3.4; roster
    /// `approved='true'`).
    pub approved: bool,
}

impl ContactState {
    const fn of(subscription: Subscription, pending_out: bool, pending_in: bool) -> Self {
        ContactState {
            subscription,
            pending_out,
            pending_in,
            approved: false,
        }
    }

    /// The nine defined states of Appendix A.1 (plus approved=false); for tests and docs.
    pub fn defined_states() -> [ContactState; 9] {
        use Subscription::{Both, From, None, To};
        [
            Self::of(None, false, false),
            Self::of(None, true, false),
            Self::of(None, false, true),
            Self::of(None, true, true),
            Self::of(To, false, false),
            Self::of(To, false, true),
            Self::of(From, false, false),
            Self::of(From, true, false),
            Self::of(Both, false, false),
        ]
    }

    /// "None + Pending Out/In" etc. (Appendix A.1 names; " + Pre-Approved" appended
    /// when approved). An inconsistent state gets a name built the same way.
    pub fn name(&self) -> String {
        let mut name = String::from(match self.subscription {
            Subscription::None => "None",
            Subscription::To => "To",
            Subscription::From => "From",
            Subscription::Both => "Both",
        });
        name.push_str(match (self.pending_out, self.pending_in) {
            (true, true) => " + Pending Out/In",
            (true, false) => " + Pending Out",
            (false, true) => " + Pending In",
            (false, false) => "",
        });
        if self.approved {
            name.push_str(" + Pre-Approved");
        }
        name
    }

    /// Drops the flags that contradict the subscription, so a state read back from a
    /// store that some other code wrote badly still yields a consistent result: a
    /// request cannot be pending in a direction that is already subscribed, and a
    /// pre-approval means nothing once the contact has `From`. Approval plus an
    /// unanswered request cannot be reached (§3.4: `subscribed` with a request pending
    /// is an approval, and a request arriving while pre-approved is approved at once);
    /// the approval goes, so the user still decides on the request.
    fn normalized(self) -> Self {
        let to = self.subscription.has_to();
        let from = self.subscription.has_from();
        ContactState {
            subscription: self.subscription,
            pending_out: self.pending_out && !to,
            pending_in: self.pending_in && !from,
            approved: self.approved && !from && !self.pending_in,
        }
    }
}

/// What the user's server does with a subscription stanza the USER sends to a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub new: ContactState,
    /// Route the stanza to the contact. When the user grants the contact `From`
    /// (§3.1.5) the server also sends the user's current presence to the contact, and
    /// when it takes `From` away (§3.2.2) the user's unavailable presence; that is
    /// presence logic for the caller.
    pub route: bool,
}

/// What the user's server does with a subscription stanza FROM a contact to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub new: ContactState,
    /// Deliver the stanza to the user's available resources (or keep it for later
    /// delivery, for `subscribe`). A delivered `unsubscribe` that removes `From`
    /// also obliges the server to send the user's unavailable presence to the contact
    /// (§3.3.3); that is presence logic for the caller.
    pub deliver: bool,
    /// A reply the server sends on the user's behalf to the contact. Only ever
    /// `Subscribed`, answering a `subscribe` from a contact that already has `From`
    /// (§3.1.3; this is how a contact's server that lost state resynchronises) or that
    /// the user pre-approved (§3.4; `From` is granted now, so the caller also sends the
    /// user's current presence, as for §3.1.5). `unsubscribed` is never auto-sent from
    /// roster state: §3.1.3's `unsubscribed` answers a request for a user who does not
    /// exist, which is decided before any roster item is looked at.
    pub auto_reply: Option<PresenceType>,
}

/// Applies a subscription stanza the user sends to the contact (RFC 6121 A.2).
/// Any other presence type leaves the state as it is and is not routed here.
#[must_use]
pub fn outbound(state: ContactState, kind: PresenceType) -> Outbound {
    let mut new = state.normalized();
    let route = match kind {
        // A.2.1. Routed in every state: A.2 requires routing every `subscribe` and
        // `unsubscribe` so that a contact's server that lost state can resynchronise
        // (and, if the user already has `To`, simply auto-reply `subscribed`, §3.1.3).
        PresenceType::Subscribe => {
            if !new.subscription.has_to() {
                new.pending_out = true;
            }
            true
        }
        // A.2.2. Routed in every state, for the same reason.
        PresenceType::Unsubscribe => {
            new.subscription = new.subscription.with_to(false);
            new.pending_out = false;
            true
        }
        // A.2.3.
        PresenceType::Subscribed => {
            if new.subscription.has_from() {
                // Already approved: nothing to tell the contact.
                false
            } else if new.pending_in {
                // Answers the contact's request.
                new.subscription = new.subscription.with_from(true);
                new.pending_in = false;
                new.approved = false;
                true
            } else {
                // No request to answer: §3.4 pre-approval, kept locally until the
                // contact asks, so the contact learns nothing now.
                new.approved = true;
                false
            }
        }
        // A.2.4. Cancels a pre-approval in every state (note [1] of the table); only
        // routed when there is a subscription or a request to deny, as otherwise the
        // contact's server holds nothing that it could change.
        PresenceType::Unsubscribed => {
            let route = new.subscription.has_from() || new.pending_in;
            new.subscription = new.subscription.with_from(false);
            new.pending_in = false;
            new.approved = false;
            route
        }
        PresenceType::Available
        | PresenceType::Unavailable
        | PresenceType::Probe
        | PresenceType::Error => {
            return Outbound {
                new: state,
                route: false,
            };
        }
    };
    Outbound { new, route }
}

/// Applies a subscription stanza the contact sends to the user (RFC 6121 A.3).
/// Any other presence type leaves the state as it is and is not delivered here.
#[must_use]
pub fn inbound(state: ContactState, kind: PresenceType) -> Inbound {
    let mut new = state.normalized();
    let mut auto_reply = None;
    let deliver = match kind {
        // A.3.1.
        PresenceType::Subscribe => {
            if new.subscription.has_from() {
                // §3.1.3: the contact is already subscribed; the user is not asked
                // again, and the contact's server hears `subscribed` again.
                auto_reply = Some(PresenceType::Subscribed);
                false
            } else if new.approved {
                // §3.4: the user said yes in advance, so the server answers for them.
                new.subscription = new.subscription.with_from(true);
                new.pending_in = false;
                new.approved = false;
                auto_reply = Some(PresenceType::Subscribed);
                false
            } else if new.pending_in {
                // The user already holds this request; a second copy adds nothing.
                false
            } else {
                new.pending_in = true;
                true
            }
        }
        // A.3.2. Withdraws the contact's subscription or its unanswered request; in
        // any other state there is nothing to withdraw and the user is not bothered.
        PresenceType::Unsubscribe => {
            let deliver = new.subscription.has_from() || new.pending_in;
            new.subscription = new.subscription.with_from(false);
            new.pending_in = false;
            deliver
        }
        // A.3.3. Only an answer to the user's own request counts (§3.1.6): an
        // unsolicited `subscribed` must not grant the user a subscription. (After
        // normalising, `pending_out` implies the user has no `To` yet.)
        PresenceType::Subscribed => {
            if new.pending_out {
                new.subscription = new.subscription.with_to(true);
                new.pending_out = false;
                true
            } else {
                false
            }
        }
        // A.3.4. Ends the user's subscription or denies the user's request.
        PresenceType::Unsubscribed => {
            let deliver = new.subscription.has_to() || new.pending_out;
            new.subscription = new.subscription.with_to(false);
            new.pending_out = false;
            deliver
        }
        PresenceType::Available
        | PresenceType::Unavailable
        | PresenceType::Probe
        | PresenceType::Error => {
            return Inbound {
                new: state,
                deliver: false,
                auto_reply: None,
            };
        }
    };
    Inbound {
        new,
        deliver,
        auto_reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUBSCRIPTION_KINDS: [PresenceType; 4] = [
        PresenceType::Subscribe,
        PresenceType::Subscribed,
        PresenceType::Unsubscribe,
        PresenceType::Unsubscribed,
    ];
    const ALL_KINDS: [PresenceType; 8] = [
        PresenceType::Available,
        PresenceType::Unavailable,
        PresenceType::Subscribe,
        PresenceType::Subscribed,
        PresenceType::Unsubscribe,
        PresenceType::Unsubscribed,
        PresenceType::Probe,
        PresenceType::Error,
    ];

    /// The nine states of A.1 and the three in which a pre-approval can exist.
    fn consistent_states() -> Vec<ContactState> {
        let mut states = ContactState::defined_states().to_vec();
        for s in ContactState::defined_states() {
            if !s.subscription.has_from() && !s.pending_in {
                states.push(ContactState {
                    approved: true,
                    ..s
                });
            }
        }
        states
    }

    fn state(name: &str) -> ContactState {
        let found = consistent_states().into_iter().find(|s| s.name() == name);
        found.unwrap_or_else(|| panic!("no state is named {name:?}"))
    }

    /// One row of a table laid out like Appendix A's:
    /// `"EXISTING STATE" | ROUTE?/DELIVER? | "NEW STATE" or no state change [| auto-reply]`.
    struct Row {
        state: ContactState,
        passes: bool,
        new: ContactState,
        auto_reply: Option<PresenceType>,
    }

    fn rows(table: &str) -> Vec<(String, Row)> {
        let lines = table.lines().map(str::trim).filter(|l| !l.is_empty());
        lines
            .map(|line| {
                let cols: Vec<_> = line
                    .split('|')
                    .map(|c| c.trim().trim_matches('"'))
                    .collect();
                let state = state(cols[0]);
                let passes = match cols[1] {
                    "yes" => true,
                    "no" => false,
                    other => panic!("{line:?}: ROUTE?/DELIVER? is {other:?}"),
                };
                let new = match cols[2] {
                    "no state change" => state,
                    name => self::state(name),
                };
                let auto_reply = match cols.get(3) {
                    None => None,
                    Some(&"subscribed") => Some(PresenceType::Subscribed),
                    Some(other) => panic!("{line:?}: auto-reply is {other:?}"),
                };
                let row = Row {
                    state,
                    passes,
                    new,
                    auto_reply,
                };
                (line.to_owned(), row)
            })
            .collect()
    }

    fn check_outbound(kind: PresenceType, table: &str) -> Vec<ContactState> {
        let rows = rows(table);
        for (line, row) in &rows {
            let want = Outbound {
                new: row.new,
                route: row.passes,
            };
            assert_eq!(row.auto_reply, None, "{line:?}: outbound has no auto-reply");
            assert_eq!(outbound(row.state, kind), want, "outbound {kind:?}: {line}");
        }
        rows.iter().map(|(_, row)| row.state).collect()
    }

    fn check_inbound(kind: PresenceType, table: &str) -> Vec<ContactState> {
        let rows = rows(table);
        for (line, row) in &rows {
            let want = Inbound {
                new: row.new,
                deliver: row.passes,
                auto_reply: row.auto_reply,
            };
            assert_eq!(inbound(row.state, kind), want, "inbound {kind:?}: {line}");
        }
        rows.iter().map(|(_, row)| row.state).collect()
    }

    /// Each table of Appendix A has one row per A.1 state, in A.1's order.
    fn assert_is_a_1(listed: Vec<ContactState>) {
        assert_eq!(listed, ContactState::defined_states());
    }

    #[test]
    fn rfc6121_a_2_1_outbound_subscribe() {
        // The RFC's table has no ROUTE? column: A.2 routes every outbound `subscribe`.
        let table = r#"
            "None"                  | yes | "None + Pending Out"
            "None + Pending Out"    | yes | no state change
            "None + Pending In"     | yes | "None + Pending Out/In"
            "None + Pending Out/In" | yes | no state change
            "To"                    | yes | no state change
            "To + Pending In"       | yes | no state change
            "From"                  | yes | "From + Pending Out"
            "From + Pending Out"    | yes | no state change
            "Both"                  | yes | no state change
        "#;
        assert_is_a_1(check_outbound(PresenceType::Subscribe, table));
    }

    #[test]
    fn rfc6121_a_2_2_outbound_unsubscribe() {
        // No ROUTE? column either: every outbound `unsubscribe` is routed.
        let table = r#"
            "None"                  | yes | no state change
            "None + Pending Out"    | yes | "None"
            "None + Pending In"     | yes | no state change
            "None + Pending Out/In" | yes | "None + Pending In"
            "To"                    | yes | "None"
            "To + Pending In"       | yes | "None + Pending In"
            "From"                  | yes | no state change
            "From + Pending Out"    | yes | "From"
            "Both"                  | yes | "From"
        "#;
        assert_is_a_1(check_outbound(PresenceType::Unsubscribe, table));
    }

    #[test]
    fn rfc6121_a_2_3_outbound_subscribed() {
        // The RFC's "pre-approval" cells, written as the state they produce.
        let table = r#"
            "None"                  | no  | "None + Pre-Approved"
            "None + Pending Out"    | no  | "None + Pending Out + Pre-Approved"
            "None + Pending In"     | yes | "From"
            "None + Pending Out/In" | yes | "From + Pending Out"
            "To"                    | no  | "To + Pre-Approved"
            "To + Pending In"       | yes | "Both"
            "From"                  | no  | no state change
            "From + Pending Out"    | no  | no state change
            "Both"                  | no  | no state change
        "#;
        assert_is_a_1(check_outbound(PresenceType::Subscribed, table));
    }

    #[test]
    fn rfc6121_a_2_4_outbound_unsubscribed() {
        let table = r#"
            "None"                  | no  | no state change
            "None + Pending Out"    | no  | no state change
            "None + Pending In"     | yes | "None"
            "None + Pending Out/In" | yes | "None + Pending Out"
            "To"                    | no  | no state change
            "To + Pending In"       | yes | "To"
            "From"                  | yes | "None"
            "From + Pending Out"    | yes | "None + Pending Out"
            "Both"                  | yes | "To"
        "#;
        assert_is_a_1(check_outbound(PresenceType::Unsubscribed, table));
    }

    #[test]
    fn rfc6121_a_3_1_inbound_subscribe() {
        // The RFC's "no *" rows: not delivered, and the server replies `subscribed`
        // for the user (§3.1.3).
        let table = r#"
            "None"                  | yes | "None + Pending In"
            "None + Pending Out"    | yes | "None + Pending Out/In"
            "None + Pending In"     | no  | no state change
            "None + Pending Out/In" | no  | no state change
            "To"                    | yes | "To + Pending In"
            "To + Pending In"       | no  | no state change
            "From"                  | no  | no state change | subscribed
            "From + Pending Out"    | no  | no state change | subscribed
            "Both"                  | no  | no state change | subscribed
        "#;
        assert_is_a_1(check_inbound(PresenceType::Subscribe, table));
    }

    #[test]
    fn rfc6121_a_3_2_inbound_unsubscribe() {
        let table = r#"
            "None"                  | no  | no state change
            "None + Pending Out"    | no  | no state change
            "None + Pending In"     | yes | "None"
            "None + Pending Out/In" | yes | "None + Pending Out"
            "To"                    | no  | no state change
            "To + Pending In"       | yes | "To"
            "From"                  | yes | "None"
            "From + Pending Out"    | yes | "None + Pending Out"
            "Both"                  | yes | "To"
        "#;
        assert_is_a_1(check_inbound(PresenceType::Unsubscribe, table));
    }

    #[test]
    fn rfc6121_a_3_3_inbound_subscribed() {
        let table = r#"
            "None"                  | no  | no state change
            "None + Pending Out"    | yes | "To"
            "None + Pending In"     | no  | no state change
            "None + Pending Out/In" | yes | "To + Pending In"
            "To"                    | no  | no state change
            "To + Pending In"       | no  | no state change
            "From"                  | no  | no state change
            "From + Pending Out"    | yes | "Both"
            "Both"                  | no  | no state change
        "#;
        assert_is_a_1(check_inbound(PresenceType::Subscribed, table));
    }

    #[test]
    fn rfc6121_a_3_4_inbound_unsubscribed() {
        let table = r#"
            "None"                  | no  | no state change
            "None + Pending Out"    | yes | "None"
            "None + Pending In"     | no  | no state change
            "None + Pending Out/In" | yes | "None + Pending In"
            "To"                    | yes | "None"
            "To + Pending In"       | yes | "None + Pending In"
            "From"                  | no  | no state change
            "From + Pending Out"    | yes | "From"
            "Both"                  | yes | "From"
        "#;
        assert_is_a_1(check_inbound(PresenceType::Unsubscribed, table));
    }

    /// §3.4 has no table; these follow A.2/A.3 with the approval carried along,
    /// dropped by outbound `unsubscribed` (A.2.4 note [1]) and used up by a request.
    #[test]
    fn rfc6121_3_4_pre_approved_outbound() {
        let table = r#"
            subscribe    | "None + Pre-Approved"               | yes | "None + Pending Out + Pre-Approved"
            subscribe    | "None + Pending Out + Pre-Approved" | yes | no state change
            subscribe    | "To + Pre-Approved"                 | yes | no state change
            unsubscribe  | "None + Pre-Approved"               | yes | no state change
            unsubscribe  | "None + Pending Out + Pre-Approved" | yes | "None + Pre-Approved"
            unsubscribe  | "To + Pre-Approved"                 | yes | "None + Pre-Approved"
            subscribed   | "None + Pre-Approved"               | no  | no state change
            subscribed   | "None + Pending Out + Pre-Approved" | no  | no state change
            subscribed   | "To + Pre-Approved"                 | no  | no state change
            unsubscribed | "None + Pre-Approved"               | no  | "None"
            unsubscribed | "None + Pending Out + Pre-Approved" | no  | "None + Pending Out"
            unsubscribed | "To + Pre-Approved"                 | no  | "To"
        "#;
        for kind in SUBSCRIPTION_KINDS {
            let listed = check_outbound(kind, &rows_for(kind, table));
            assert_eq!(listed, pre_approved_states(), "{kind:?}");
        }
    }

    #[test]
    fn rfc6121_3_4_pre_approved_inbound() {
        let table = r#"
            subscribe    | "None + Pre-Approved"               | no  | "From"               | subscribed
            subscribe    | "None + Pending Out + Pre-Approved" | no  | "From + Pending Out" | subscribed
            subscribe    | "To + Pre-Approved"                 | no  | "Both"               | subscribed
            unsubscribe  | "None + Pre-Approved"               | no  | no state change
            unsubscribe  | "None + Pending Out + Pre-Approved" | no  | no state change
            unsubscribe  | "To + Pre-Approved"                 | no  | no state change
            subscribed   | "None + Pre-Approved"               | no  | no state change
            subscribed   | "None + Pending Out + Pre-Approved" | yes | "To + Pre-Approved"
            subscribed   | "To + Pre-Approved"                 | no  | no state change
            unsubscribed | "None + Pre-Approved"               | no  | no state change
            unsubscribed | "None + Pending Out + Pre-Approved" | yes | "None + Pre-Approved"
            unsubscribed | "To + Pre-Approved"                 | yes | "None + Pre-Approved"
        "#;
        for kind in SUBSCRIPTION_KINDS {
            let listed = check_inbound(kind, &rows_for(kind, table));
            assert_eq!(listed, pre_approved_states(), "{kind:?}");
        }
    }

    /// The rows of a table whose first column names the stanza type `kind`.
    fn rows_for(kind: PresenceType, table: &str) -> String {
        let name = kind.name().unwrap_or_default();
        let rows = table.lines().filter_map(|line| {
            let (first, rest) = line.split_once('|')?;
            (first.trim() == name).then_some(rest)
        });
        rows.collect::<Vec<_>>().join("\n")
    }

    fn pre_approved_states() -> Vec<ContactState> {
        let states = consistent_states().into_iter();
        states.filter(|s| s.approved).collect()
    }

    #[test]
    fn rfc6121_a_1_state_names() {
        let names: Vec<_> = consistent_states().iter().map(ContactState::name).collect();
        assert_eq!(
            names,
            [
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
            ]
        );
        assert_eq!(ContactState::default(), state("None"));
    }

    #[test]
    fn rfc6121_2_1_2_5_subscription_attribute() {
        for (sub, name, to, from) in [
            (Subscription::None, "none", false, false),
            (Subscription::To, "to", true, false),
            (Subscription::From, "from", false, true),
            (Subscription::Both, "both", true, true),
        ] {
            assert_eq!(sub.name(), name);
            assert_eq!(Subscription::from_name(name), Some(sub));
            assert_eq!((sub.has_to(), sub.has_from()), (to, from), "{name}");
        }
        for bad in ["remove", "None", "", "both "] {
            assert_eq!(Subscription::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn inconsistent_stored_state_is_normalised_before_a_transition() {
        let everything = ContactState {
            subscription: Subscription::Both,
            pending_out: true,
            pending_in: true,
            approved: true,
        };
        let got = inbound(everything, PresenceType::Subscribe);
        assert_eq!(got.new, state("Both"));
        assert_eq!(got.auto_reply, Some(PresenceType::Subscribed));

        let to_asking = ContactState {
            pending_out: true,
            ..state("To")
        };
        assert_eq!(
            outbound(to_asking, PresenceType::Subscribe).new,
            state("To")
        );

        // A pending request outranks a pre-approval: the user is still asked.
        let asked_and_approved = ContactState {
            approved: true,
            ..state("None + Pending In")
        };
        let got = inbound(asked_and_approved, PresenceType::Subscribe);
        assert_eq!(got.new, state("None + Pending In"));
        assert_eq!(got.auto_reply, None);
    }

    fn is_consistent(s: ContactState) -> bool {
        s == s.normalized()
    }

    fn any_state() -> impl Strategy<Value = ContactState> {
        (0u8..4, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(sub, out, inn, ap)| {
            ContactState {
                subscription: Subscription::from_directions(sub & 1 != 0, sub & 2 != 0),
                pending_out: out,
                pending_in: inn,
                approved: ap,
            }
        })
    }

    fn any_kind() -> impl Strategy<Value = PresenceType> {
        prop::sample::select(ALL_KINDS.to_vec())
    }

    fn subscription_kind() -> impl Strategy<Value = PresenceType> {
        prop::sample::select(SUBSCRIPTION_KINDS.to_vec())
    }

    /// A user and a contact on lossless links: what one routes, the other receives,
    /// and an auto-reply goes straight back.
    fn exchange(sender: &mut ContactState, receiver: &mut ContactState, kind: PresenceType) {
        let out = outbound(*sender, kind);
        *sender = out.new;
        if out.route {
            let got = inbound(*receiver, kind);
            *receiver = got.new;
            if let Some(reply) = got.auto_reply {
                *sender = inbound(*sender, reply).new;
            }
        }
    }

    proptest! {
        #[test]
        fn transitions_yield_consistent_states(s in any_state(), kind in subscription_kind()) {
            for new in [outbound(s, kind).new, inbound(s, kind).new] {
                prop_assert!(is_consistent(new), "{} -> {}", s.name(), new.name());
                // The named invariants, spelt out.
                prop_assert!(!(new.approved && new.subscription.has_from()));
                prop_assert!(!(new.pending_out && new.subscription.has_to()));
            }
        }

        #[test]
        fn outbound_subscribe_leaves_a_request_or_a_subscription(s in any_state()) {
            let out = outbound(s, PresenceType::Subscribe);
            prop_assert!(out.new.pending_out || s.subscription.has_to());
            prop_assert!(out.route);
        }

        #[test]
        fn inbound_subscribed_never_removes_from(s in any_state()) {
            let new = inbound(s, PresenceType::Subscribed).new;
            prop_assert_eq!(new.subscription.has_from(), s.subscription.has_from());
        }

        #[test]
        fn other_presence_types_change_nothing(s in any_state(), kind in any_kind()) {
            prop_assume!(!kind.is_subscription());
            prop_assert_eq!(outbound(s, kind), Outbound { new: s, route: false });
            prop_assert_eq!(inbound(s, kind), Inbound { new: s, deliver: false, auto_reply: None });
        }

        /// A repeated stanza changes nothing more and is neither delivered nor, apart
        /// from the always-routed `subscribe`/`unsubscribe`, routed again.
        #[test]
        fn repeats_are_absorbed(s in any_state(), kind in subscription_kind()) {
            let once = outbound(s, kind).new;
            let twice = outbound(once, kind);
            prop_assert_eq!(twice.new, once);
            if matches!(kind, PresenceType::Subscribed | PresenceType::Unsubscribed) {
                prop_assert!(!twice.route);
            }
            let once = inbound(s, kind).new;
            let twice = inbound(once, kind);
            prop_assert_eq!(twice.new, once);
            prop_assert!(!twice.deliver);
        }

        /// Appendix A's two halves fit together: with nothing lost, the user's view of
        /// the contact always mirrors the contact's view of the user.
        #[test]
        fn both_servers_stay_mirrored(
            steps in prop::collection::vec((any::<bool>(), subscription_kind()), 0..40)
        ) {
            let (mut user, mut contact) = (ContactState::default(), ContactState::default());
            for (by_user, kind) in steps {
                if by_user {
                    exchange(&mut user, &mut contact, kind);
                } else {
                    exchange(&mut contact, &mut user, kind);
                }
                prop_assert_eq!(user.subscription.has_to(), contact.subscription.has_from());
                prop_assert_eq!(user.subscription.has_from(), contact.subscription.has_to());
                prop_assert_eq!(user.pending_out, contact.pending_in);
                prop_assert_eq!(user.pending_in, contact.pending_out);
            }
        }
    }
}
