//! Conformance checks for [`OfflineStore`](crate::OfflineStore): order, ids, the
//! cap and removal.

use super::{fresh_domain, jid, ok, prefix_family};
use crate::Stores;
use crate::records::OfflineRecord;
use jid::BareJid;

pub(super) async fn push(stores: &Stores, user: &BareJid, stanza: &str, max: usize) -> bool {
    ok(
        stores
            .offline
            .push_offline(user, stanza.as_bytes(), max)
            .await,
        "push_offline",
    )
}

pub(super) async fn load(stores: &Stores, user: &BareJid) -> Vec<OfflineRecord> {
    ok(stores.offline.load_offline(user).await, "load_offline")
}

async fn load_all(stores: &Stores, users: &[BareJid]) -> Vec<Vec<OfflineRecord>> {
    let mut out = Vec::new();
    for u in users {
        out.push(load(stores, u).await);
    }
    out
}

fn stanzas(records: &[OfflineRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.stanza).into_owned())
        .collect()
}

/// Messages come back in push order with strictly increasing ids.
pub async fn offline_order_and_ids(stores: &Stores) {
    let user = jid(&format!("u@{}", fresh_domain("offline-order")));
    assert!(
        load(stores, &user).await.is_empty(),
        "a new queue must be empty"
    );
    let sent: Vec<String> = (0..12).map(|i| format!("<message id='m{i}'/>")).collect();
    for s in &sent {
        assert!(
            push(stores, &user, s, 100).await,
            "push below the cap refused"
        );
    }
    let got = load(stores, &user).await;
    assert_eq!(stanzas(&got), sent, "delivery order must be push order");
    assert!(
        got.windows(2).all(|w| w[0].id < w[1].id),
        "ids must increase: {:?}",
        got.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert_eq!(
        ok(stores.offline.count_offline(&user).await, "count_offline"),
        sent.len()
    );
    ok(stores.offline.delete_offline(&user).await, "delete_offline");
    assert!(
        load(stores, &user).await.is_empty(),
        "delete_offline must empty the queue"
    );
    assert_eq!(
        ok(stores.offline.count_offline(&user).await, "count_offline"),
        0,
        "count after delete_offline"
    );
    assert!(
        push(stores, &user, "<message/>", 1).await,
        "a deleted queue must accept messages again"
    );
}

/// The cap counts what is queued now: full refuses, draining makes room, 0 refuses.
pub async fn offline_cap(stores: &Stores) {
    let user = jid(&format!("u@{}", fresh_domain("offline-cap")));
    assert!(
        !push(stores, &user, "zero", 0).await,
        "max 0 must store nothing"
    );
    for i in 0..3 {
        assert!(
            push(stores, &user, &format!("m{i}"), 3).await,
            "push {i} of 3 refused"
        );
    }
    assert!(
        !push(stores, &user, "m3", 3).await,
        "push over the cap accepted"
    );
    assert!(
        push(stores, &user, "m3", 4).await,
        "a larger cap must accept"
    );
    assert_eq!(
        ok(stores.offline.count_offline(&user).await, "count_offline"),
        4
    );
    assert_eq!(
        stanzas(&load(stores, &user).await),
        ["m0", "m1", "m2", "m3"],
        "a refused push must store nothing"
    );
    let first = load(stores, &user).await[0].id;
    ok(
        stores.offline.remove_offline(&user, first).await,
        "remove_offline",
    );
    assert!(
        push(stores, &user, "m4", 4).await,
        "removing a message must make room"
    );
    assert!(
        !push(stores, &user, "m5", 4).await,
        "push over the cap accepted after a removal"
    );
}

/// `remove_offline(n)` removes exactly the ids up to n, is safe to retry, and
/// later messages get ids above every removed one.
pub async fn offline_remove_through(stores: &Stores) {
    let user = jid(&format!("u@{}", fresh_domain("offline-remove")));
    for i in 0..5 {
        push(stores, &user, &format!("m{i}"), 100).await;
    }
    let all = load(stores, &user).await;
    ok(
        stores.offline.remove_offline(&user, all[2].id).await,
        "remove_offline",
    );
    assert_eq!(
        load(stores, &user).await,
        all[3..],
        "remove_offline must remove ids <= last_id only"
    );
    assert_eq!(
        ok(stores.offline.count_offline(&user).await, "count_offline"),
        2,
        "count after remove_offline"
    );
    ok(
        stores.offline.remove_offline(&user, all[2].id).await,
        "remove_offline (retry)",
    );
    assert_eq!(
        load(stores, &user).await,
        all[3..],
        "a retried remove_offline changed the queue"
    );
    let last = all[4].id;
    ok(
        stores.offline.remove_offline(&user, last).await,
        "remove_offline",
    );
    assert!(
        load(stores, &user).await.is_empty(),
        "remove through the last id must empty the queue"
    );
    assert_eq!(
        ok(stores.offline.count_offline(&user).await, "count_offline"),
        0
    );
    push(stores, &user, "late", 100).await;
    let late = load(stores, &user).await;
    assert_eq!(stanzas(&late), ["late"]);
    assert!(
        late[0].id > last,
        "id {} reused after the queue was drained through {last}",
        late[0].id
    );
    ok(
        stores.offline.remove_offline(&user, last).await,
        "remove_offline (late retry)",
    );
    assert_eq!(
        load(stores, &user).await,
        late,
        "a retry of an old remove_offline removed a newer message"
    );
}

/// Queues, caps and deletion are per user, also for prefix-related JIDs.
pub async fn offline_isolates_users(stores: &Stores) {
    let family = prefix_family(&fresh_domain("offline-iso"));
    for u in &family {
        for i in 0..2 {
            assert!(
                push(stores, u, &format!("{u} {i}"), 2).await,
                "{u}'s cap counted someone else's messages"
            );
        }
    }
    let before: Vec<_> = load_all(stores, &family).await;
    ok(
        stores.offline.remove_offline(&family[0], u64::MAX).await,
        "remove_offline",
    );
    assert!(load(stores, &family[0]).await.is_empty());
    ok(
        stores.offline.delete_offline(&family[0]).await,
        "delete_offline",
    );
    for (u, b) in family.iter().zip(&before).skip(1) {
        assert_eq!(
            &load(stores, u).await,
            b,
            "removing {}'s messages changed {u}'s",
            family[0]
        );
        assert_eq!(
            ok(stores.offline.count_offline(u).await, "count_offline"),
            2,
            "{u}'s count changed"
        );
    }
    push(stores, &family[0], "again", 2).await;
    let first = load(stores, &family[0]).await;
    for u in &family[1..] {
        ok(stores.offline.delete_offline(u).await, "delete_offline");
        assert!(
            load(stores, u).await.is_empty(),
            "delete_offline must empty {u}'s queue"
        );
    }
    assert_eq!(
        load(stores, &family[0]).await,
        first,
        "deleting longer JIDs' queues changed {}'s",
        family[0]
    );
}
