//! Conformance checks for [`BlockStore`](crate::BlockStore): set semantics and
//! isolation.

use super::{fresh_domain, jid, ok, prefix_family};
use crate::Stores;
use jid::BareJid;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) async fn blocklist(stores: &Stores, user: &BareJid) -> Vec<String> {
    ok(stores.blocks.load_blocklist(user).await, "load_blocklist")
}

/// A block list is a set of strings of any JID form, listed in byte order.
pub async fn blocklist_set_semantics(stores: &Stores) {
    let d = fresh_domain("blocks");
    let user = jid(&format!("u@{d}"));
    let b = &stores.blocks;
    assert!(
        blocklist(stores, &user).await.is_empty(),
        "a new block list must be empty"
    );
    let (dom, bare, full) = (
        format!("spam.{d}"),
        format!("troll@{d}"),
        format!("troll@{d}/phone"),
    );
    ok(
        b.block(
            &user,
            &[full.clone(), bare.clone(), dom.clone(), bare.clone()],
        )
        .await,
        "block",
    );
    ok(b.block(&user, std::slice::from_ref(&bare)).await, "block");
    let mut want = vec![dom.clone(), bare.clone(), full.clone()];
    want.sort();
    assert_eq!(
        blocklist(stores, &user).await,
        want,
        "blocking twice must store once, in byte order"
    );
    ok(
        b.unblock(&user, &[bare.clone(), format!("never@{d}")])
            .await,
        "unblock",
    );
    assert_eq!(
        blocklist(stores, &user).await,
        strings(&[&dom, &full]),
        "unblock must remove just those items"
    );
    ok(b.unblock(&user, &[]).await, "unblock of nothing");
    ok(b.block(&user, &[]).await, "block of nothing");
    ok(b.unblock_all(&user).await, "unblock_all");
    assert!(
        blocklist(stores, &user).await.is_empty(),
        "unblock_all must empty the list"
    );
    ok(b.unblock_all(&user).await, "unblock_all of an empty list");
    ok(b.block(&user, std::slice::from_ref(&bare)).await, "block");
    assert_eq!(
        blocklist(stores, &user).await,
        strings(&[&bare]),
        "blocking after unblock_all"
    );
}

/// Block lists are per user, also for prefix-related JIDs.
pub async fn blocklist_isolates_users(stores: &Stores) {
    let family = prefix_family(&fresh_domain("blocks-iso"));
    for u in &family {
        ok(
            stores
                .blocks
                .block(
                    u,
                    &[
                        format!("x.{}", u.domain()),
                        format!("by-{}", u.node().map_or("", |n| n.as_str())),
                    ],
                )
                .await,
            "block",
        );
    }
    let mut before = Vec::new();
    for u in &family {
        before.push(blocklist(stores, u).await);
    }
    ok(stores.blocks.unblock_all(&family[0]).await, "unblock_all");
    assert!(blocklist(stores, &family[0]).await.is_empty());
    for (u, b) in family.iter().zip(&before).skip(1) {
        assert_eq!(
            &blocklist(stores, u).await,
            b,
            "unblock_all of {} changed {u}'s list",
            family[0]
        );
    }
    ok(
        stores.blocks.block(&family[0], &strings(&["kept"])).await,
        "block",
    );
    for u in &family[1..] {
        ok(stores.blocks.unblock_all(u).await, "unblock_all");
    }
    assert_eq!(
        blocklist(stores, &family[0]).await,
        strings(&["kept"]),
        "unblock_all of longer JIDs changed {}'s list",
        family[0]
    );
}
