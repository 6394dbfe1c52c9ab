//! Conformance checks for [`AccountStore`](crate::AccountStore).

use super::{fresh_domain, jid, ok};
use crate::Stores;
use jid::BareJid;

/// Create, read, replace and delete credentials; `create_many` skips existing
/// accounts; a deleted account can be created again.
pub async fn accounts_lifecycle(stores: &Stores) {
    let d = fresh_domain("accounts");
    let (a, b, c) = (
        jid(&format!("a@{d}")),
        jid(&format!("b@{d}")),
        jid(&format!("c@{d}")),
    );
    let acc = &stores.accounts;
    assert_eq!(
        ok(acc.credentials(&a).await, "credentials"),
        None,
        "unknown account has credentials"
    );
    assert!(
        ok(acc.create(&a, b"c1").await, "create"),
        "create of a new account returned false"
    );
    assert!(
        !ok(acc.create(&a, b"c2").await, "create"),
        "second create returned true"
    );
    assert_eq!(
        ok(acc.credentials(&a).await, "credentials").as_deref(),
        Some(&b"c1"[..]),
        "second create changed the credentials"
    );
    assert!(
        ok(acc.set_credentials(&a, b"c3").await, "set_credentials"),
        "set_credentials of an account returned false"
    );
    assert!(
        !ok(acc.set_credentials(&b, b"x").await, "set_credentials"),
        "set_credentials of no account returned true"
    );
    assert_eq!(
        ok(acc.credentials(&b).await, "credentials"),
        None,
        "set_credentials created an account"
    );
    assert_eq!(
        ok(acc.credentials(&a).await, "credentials").as_deref(),
        Some(&b"c3"[..]),
        "set_credentials did not replace"
    );
    let batch = vec![
        (a.clone(), b"no".to_vec()),
        (b.clone(), b"cb".to_vec()),
        (c.clone(), vec![]),
    ];
    assert_eq!(
        ok(acc.create_many(batch).await, "create_many"),
        2,
        "create_many must skip existing accounts"
    );
    assert_eq!(
        ok(acc.credentials(&a).await, "credentials").as_deref(),
        Some(&b"c3"[..]),
        "create_many overwrote an account"
    );
    assert_eq!(
        ok(acc.credentials(&c).await, "credentials").as_deref(),
        Some(&b""[..]),
        "empty credentials are credentials"
    );
    assert!(
        ok(acc.delete(&a).await, "delete"),
        "delete of an account returned false"
    );
    assert!(
        !ok(acc.delete(&a).await, "delete"),
        "second delete returned true"
    );
    assert_eq!(
        ok(acc.credentials(&a).await, "credentials"),
        None,
        "deleted account has credentials"
    );
    assert_eq!(
        ok(acc.credentials(&b).await, "credentials").as_deref(),
        Some(&b"cb"[..]),
        "delete touched another account"
    );
    assert!(
        ok(acc.create(&a, b"c4").await, "create"),
        "re-creating a deleted account failed"
    );
}

/// `list` returns only the domain's accounts, in order, in pages.
pub async fn accounts_list_pages_by_domain(stores: &Stores) {
    let d = fresh_domain("list");
    let mine: Vec<BareJid> = ["a", "al", "alice", "b", "zed"]
        .iter()
        .map(|l| jid(&format!("{l}@{d}")))
        .collect();
    // Neighbours that sort among them or share a string prefix with the domain.
    let others = [format!("al@{d}x"), format!("b@sub.{d}"), format!("a@x{d}")];
    let mut all: Vec<(BareJid, Vec<u8>)> = others.iter().map(|j| (jid(j), vec![1])).collect();
    all.extend(mine.iter().rev().map(|j| (j.clone(), vec![1])));
    ok(stores.accounts.create_many(all).await, "create_many");

    let list = |after: Option<BareJid>, limit| {
        let accounts = stores.accounts.clone();
        let d = d.clone();
        async move { ok(accounts.list(&d, after.as_ref(), limit).await, "list") }
    };
    assert_eq!(list(None, 100).await, mine, "list of a whole domain");
    assert_eq!(
        list(None, 0).await,
        Vec::<BareJid>::new(),
        "limit 0 must return nothing"
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(after.clone(), 2).await;
        assert!(page.len() <= 2, "a page exceeded its limit: {page:?}");
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
        paged.extend(page);
    }
    assert_eq!(
        paged, mine,
        "paging by 2 must give the whole domain once, in order"
    );
    let between = jid(&format!("alf@{d}"));
    assert_eq!(
        list(Some(between), 2).await,
        mine[2..4],
        "`after` need not be an account"
    );
}
