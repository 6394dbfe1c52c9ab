//! Conformance checks for [`Locations`]: bind and replace, compare-and-set on the
//! connection id for update and unbind (a stale connection never touches its
//! successor's entry), isolation of users whose JIDs are string prefixes of one
//! another, and the per-edge index.

use super::{fresh, ok};
use crate::{Location, Locations};
use jid::BareJid;

fn jid(s: &str) -> BareJid {
    BareJid::new(s).unwrap_or_else(|e| panic!("test JID {s:?}: {e}"))
}

fn user(check: &str) -> BareJid {
    jid(&format!("u@{}.conformance.test", fresh(check)))
}

/// Users whose JIDs are string prefixes of one another (`al@d` of `al@dx` and of
/// `al@d.x`) or whose local parts are (`al` of `alice`), and a domain-only JID.
fn prefix_family(check: &str) -> Vec<BareJid> {
    let d = format!("{}.test", fresh(check));
    ["al@{d}", "alice@{d}", "al@{d}x", "al@{d}.x", "{d}"]
        .iter()
        .map(|p| jid(&p.replace("{d}", &d)))
        .collect()
}

fn loc(edge: &str, conn: u64) -> Location {
    Location {
        edge: edge.to_owned(),
        conn,
        available: true,
        priority: 5,
        presence: Some(format!("<presence><status>{conn}</status></presence>").into_bytes()),
        roster_interested: true,
        blocklist_interested: false,
    }
}

async fn resources(l: &dyn Locations, u: &BareJid) -> Vec<(String, Location)> {
    let mut r = ok(l.resources(u).await, "resources");
    r.sort_by(|a, b| a.0.cmp(&b.0));
    r
}

fn entries(items: &[(&str, &Location)]) -> Vec<(String, Location)> {
    items
        .iter()
        .map(|(r, l)| ((*r).to_owned(), (*l).clone()))
        .collect()
}

/// Binding records every field as given; binding a held resource again replaces
/// the entry (the newer session wins), leaving other resources alone.
pub async fn locations_bind_and_replace(l: &dyn Locations) {
    let u = user("bind");
    let edge = fresh("edge");
    assert!(
        resources(l, &u).await.is_empty(),
        "a new user has no resources"
    );
    let phone = loc(&edge, 1);
    let laptop = Location {
        edge: fresh("other-edge"),
        conn: u64::MAX,
        available: false,
        priority: -128,
        presence: None,
        roster_interested: false,
        blocklist_interested: true,
    };
    ok(l.bind(&u, "phone", &phone).await, "bind");
    ok(l.bind(&u, "laptop ☺", &laptop).await, "bind");
    assert_eq!(
        resources(l, &u).await,
        entries(&[("laptop ☺", &laptop), ("phone", &phone)])
    );
    let successor = Location {
        presence: Some(Vec::new()),
        ..loc(&edge, 2)
    };
    ok(l.bind(&u, "phone", &successor).await, "rebind");
    assert_eq!(
        resources(l, &u).await,
        entries(&[("laptop ☺", &laptop), ("phone", &successor)]),
        "a rebind replaces the previous holder"
    );
}

/// `update` writes only while the connection (on its edge) still holds the
/// resource, and never creates an entry.
pub async fn locations_update_cas(l: &dyn Locations) {
    let u = user("update");
    let edge = fresh("edge");
    let held = loc(&edge, 7);
    ok(l.bind(&u, "r", &held).await, "bind");
    let newer = Location {
        available: false,
        priority: -1,
        presence: None,
        ..held.clone()
    };
    assert!(
        ok(l.update(&u, "r", &newer).await, "update"),
        "update by the holder"
    );
    assert_eq!(resources(l, &u).await, entries(&[("r", &newer)]));

    let stale = Location {
        priority: 99,
        ..loc(&edge, 6)
    };
    assert!(
        !ok(l.update(&u, "r", &stale).await, "update"),
        "update by another conn"
    );
    let moved = Location {
        edge: fresh("edge"),
        ..newer.clone()
    };
    assert!(
        !ok(l.update(&u, "r", &moved).await, "update"),
        "update from another edge"
    );
    assert!(
        !ok(l.update(&u, "other", &held).await, "update"),
        "update of an unbound resource"
    );
    assert_eq!(
        resources(l, &u).await,
        entries(&[("r", &newer)]),
        "failed updates must change nothing and create nothing"
    );
}

/// `unbind` removes only the holder's entry, once.
pub async fn locations_unbind_cas(l: &dyn Locations) {
    let u = user("unbind");
    let edge = fresh("edge");
    let (a, b) = (loc(&edge, 10), loc(&edge, 11));
    ok(l.bind(&u, "a", &a).await, "bind");
    ok(l.bind(&u, "b", &b).await, "bind");
    assert!(
        !ok(l.unbind(&u, "a", 11).await, "unbind"),
        "unbind by another conn"
    );
    assert!(
        !ok(l.unbind(&u, "nope", 10).await, "unbind"),
        "unbind of an unbound resource"
    );
    assert_eq!(resources(l, &u).await.len(), 2);
    assert!(
        ok(l.unbind(&u, "a", 10).await, "unbind"),
        "unbind by the holder"
    );
    assert!(
        !ok(l.unbind(&u, "a", 10).await, "unbind"),
        "a second unbind"
    );
    assert_eq!(resources(l, &u).await, entries(&[("b", &b)]));
    assert!(ok(l.unbind(&u, "b", 11).await, "unbind"));
    assert!(resources(l, &u).await.is_empty());
    ok(l.bind(&u, "a", &a).await, "bind after unbinding all");
    assert_eq!(resources(l, &u).await, entries(&[("a", &a)]));
}

/// The race the compare-and-set exists for: a client reconnects (new connection
/// binds the same resource) before the old connection's cleanup runs. The old
/// connection can neither update nor remove its successor's entry.
pub async fn locations_stale_connection_loses(l: &dyn Locations) {
    let u = user("stale");
    let (old_edge, new_edge) = (fresh("edge"), fresh("edge"));
    let old = loc(&old_edge, 100);
    ok(l.bind(&u, "phone", &old).await, "bind");
    let new = loc(&new_edge, 200);
    ok(l.bind(&u, "phone", &new).await, "successor bind");
    let late = Location {
        available: false,
        ..old.clone()
    };
    assert!(
        !ok(l.update(&u, "phone", &late).await, "update"),
        "stale update won"
    );
    assert!(
        !ok(l.unbind(&u, "phone", old.conn).await, "unbind"),
        "stale unbind won"
    );
    assert_eq!(resources(l, &u).await, entries(&[("phone", &new)]));
    // The same connection id on another edge is another connection too.
    let impostor = Location {
        edge: old_edge.clone(),
        ..new.clone()
    };
    assert!(!ok(l.update(&u, "phone", &impostor).await, "update"));
    assert_eq!(resources(l, &u).await, entries(&[("phone", &new)]));
}

/// Every operation on one user leaves users with prefix-related JIDs alone.
pub async fn locations_isolate_users(l: &dyn Locations) {
    let family = prefix_family("iso");
    let edge = fresh("edge");
    for (i, u) in family.iter().enumerate() {
        ok(l.bind(u, "r", &loc(&edge, i as u64)).await, "bind");
        ok(l.bind(u, "r2", &loc(&edge, 50 + i as u64)).await, "bind");
    }
    let mut before = Vec::new();
    for u in &family {
        before.push(resources(l, u).await);
    }
    let first = &family[0];
    // Every member holds "r" with conn = its index; operations on `first` use the
    // others' conn ids too, which must not reach them.
    for i in 1..family.len() as u64 {
        assert!(!ok(l.unbind(first, "r", i).await, "unbind"));
        assert!(!ok(l.update(first, "r", &loc(&edge, i)).await, "update"));
    }
    assert!(ok(l.unbind(first, "r", 0).await, "unbind"));
    let changed = Location {
        priority: -3,
        ..loc(&edge, 50)
    };
    assert!(ok(l.update(first, "r2", &changed).await, "update"));
    assert_eq!(resources(l, first).await, entries(&[("r2", &changed)]));
    for (u, want) in family.iter().zip(&before).skip(1) {
        assert_eq!(
            &resources(l, u).await,
            want,
            "operations on {first} changed {u}"
        );
    }
}

/// `users_on_edge` lists (at least) every user bound on the edge, including users
/// whose resources moved on; `forget_edge` drops that edge's index and nothing else.
pub async fn locations_edge_index(l: &dyn Locations) {
    let (e1, e2) = (fresh("edge-1"), fresh("edge-2"));
    assert!(ok(l.users_on_edge(&e1).await, "users_on_edge").is_empty());
    let family = prefix_family("edge");
    let (on_e1, on_e2) = family.split_at(3);
    for (i, u) in on_e1.iter().enumerate() {
        ok(l.bind(u, "r", &loc(&e1, i as u64)).await, "bind");
    }
    for (i, u) in on_e2.iter().enumerate() {
        ok(l.bind(u, "r", &loc(&e2, 10 + i as u64)).await, "bind");
    }
    // A user who left e1 for e2 may still be listed under e1 (a superset is
    // allowed), but must be listed under e2.
    ok(l.bind(&on_e1[2], "r", &loc(&e2, 20)).await, "bind");
    let listed = |edge: String| async move {
        let mut users = ok(l.users_on_edge(&edge).await, "users_on_edge");
        users.sort();
        users.dedup();
        users
    };
    let users1 = listed(e1.clone()).await;
    for u in on_e1 {
        assert!(
            users1.contains(u),
            "{u} missing under its edge {e1}: {users1:?}"
        );
    }
    let users2 = listed(e2.clone()).await;
    for u in on_e2.iter().chain([&on_e1[2]]) {
        assert!(
            users2.contains(u),
            "{u} missing under its edge {e2}: {users2:?}"
        );
    }

    let kept = resources(l, &on_e1[0]).await;
    ok(l.forget_edge(&e1).await, "forget_edge");
    assert!(
        listed(e1.clone()).await.is_empty(),
        "forget_edge left users behind"
    );
    assert_eq!(
        listed(e2.clone()).await,
        users2,
        "forget_edge touched another edge"
    );
    assert_eq!(
        resources(l, &on_e1[0]).await,
        kept,
        "forget_edge touched locations"
    );
    ok(l.forget_edge(&e1).await, "forget_edge of a forgotten edge");
    ok(l.bind(&on_e1[0], "again", &loc(&e1, 30)).await, "bind");
    assert_eq!(
        listed(e1).await,
        vec![on_e1[0].clone()],
        "index rebuilt by bind"
    );
}
