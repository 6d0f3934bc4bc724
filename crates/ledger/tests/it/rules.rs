//! The rules every batch obeys, whatever it does: idempotent ids, floors, all-or-nothing, no
//! overflow, no malformed entry; every test runs on both backends.

use stacknet_ledger::{AccountId, Entry, LedgerError, Post, Reason, Transfer, Void, MAX_BATCH_ENTRIES};
use stacknet_protocol::{NodeKeyId, StackId, UserId};

use crate::support::*;

fn user() -> AccountId {
    AccountId::user(UserId::random())
}

pub async fn a_replayed_id_returns_the_first_outcome_and_moves_nothing(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    let batch = vec![topup("t1", &alice, 100), hold("h1", &alice, 40, Some(9_000))];
    let first = store.create_transfers(batch.clone()).await.unwrap();
    store.post(id("p1"), id("h1"), micros(15)).await.unwrap();
    let again = store.create_transfers(batch).await.unwrap();
    assert!(again.iter().all(|o| o.replayed));
    let strip = |o: &stacknet_ledger::TransferOutcome| stacknet_ledger::TransferOutcome {
        replayed: false,
        ..o.clone()
    };
    assert_eq!(
        again.iter().map(strip).collect::<Vec<_>>(),
        first,
        "the first outcome, though the hold was posted since"
    );
    let post_again = store.post(id("p1"), id("h1"), micros(15)).await.unwrap();
    assert!(post_again.replayed);
    assert_eq!((post_again.amount, post_again.released), (micros(15), micros(25)));
    assert_eq!(store.balance(alice).await.unwrap().posted, micros(85));
    assert_balanced(store).await;
}

pub async fn a_reused_id_with_a_different_field_is_refused_naming_the_field(ctx: &Ctx) {
    let store = &*ctx.store;
    let (alice, bob) = (user(), user());
    let original = Transfer::hold(
        id("h1"),
        alice.clone(),
        AccountId::escrow(),
        micros(40),
        Some(at(9_000)),
    );
    store
        .create_transfers(vec![topup("t1", &alice, 100), original.clone().into()])
        .await
        .unwrap();
    store.post(id("p1"), id("h1"), micros(10)).await.unwrap();
    let variants: Vec<(&str, Entry)> = vec![
        (
            "debit",
            Transfer {
                debit: bob.clone(),
                ..original.clone()
            }
            .into(),
        ),
        (
            "credit",
            Transfer {
                credit: AccountId::treasury(),
                ..original.clone()
            }
            .into(),
        ),
        (
            "amount",
            Transfer {
                amount: micros(41),
                ..original.clone()
            }
            .into(),
        ),
        (
            "reason",
            Transfer {
                reason: Reason::Fee,
                ..original.clone()
            }
            .into(),
        ),
        (
            "pending",
            Transfer {
                pending: false,
                expires_at: None,
                ..original.clone()
            }
            .into(),
        ),
        (
            "expires_at",
            Transfer {
                expires_at: None,
                ..original.clone()
            }
            .into(),
        ),
        ("kind", Void::new(id("h1"), id("t1")).into()),
        ("pending_id", Post::new(id("p1"), id("t1"), micros(10)).into()),
        ("amount", Post::new(id("p1"), id("h1"), micros(11)).into()),
        (
            "reason",
            Post {
                reason: Reason::Refund,
                ..Post::new(id("p1"), id("h1"), micros(10))
            }
            .into(),
        ),
    ];
    for (field, entry) in variants {
        let err = store.create_transfers(vec![entry.clone()]).await.unwrap_err();
        assert!(
            matches!(&err, LedgerError::IdReused { field: f, id } if *f == field && id == entry.id()),
            "{entry:?}: {err}"
        );
    }
    assert_eq!(store.balance(alice).await.unwrap().posted, micros(90));
    assert_balanced(store).await;
}

pub async fn floors_hold_for_every_kind_but_the_outside_world(ctx: &Ctx) {
    let store = &*ctx.store;
    let node = AccountId::node(NodeKeyId::random());
    for (n, from) in [
        user(),
        AccountId::stack(StackId::random()),
        AccountId::treasury(),
        node.clone(),
    ]
    .iter()
    .enumerate()
    {
        let t = Transfer::posted(
            id(&format!("x{n}")),
            from.clone(),
            AccountId::escrow(),
            micros(1),
            Reason::Fee,
        );
        let err = store.create_transfers(vec![t.into()]).await.unwrap_err();
        assert!(
            matches!(&err, LedgerError::InsufficientFunds { account, available, .. }
            if account == from && *available == micros(0)),
            "{err}"
        );
    }
    // The outside world pays in without limit.
    store.create_transfers(vec![topup("t1", &node, 5)]).await.unwrap();
    assert_eq!(store.balance(world()).await.unwrap().posted, micros(-5));
    assert_balanced(store).await;
}

pub async fn a_batch_applies_all_or_nothing(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    let err = store
        .create_transfers(vec![
            topup("t1", &alice, 100),
            hold("h1", &alice, 60, None),
            hold("h2", &alice, 60, None),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::InsufficientFunds { id: failed, .. } if *failed == id("h2")),
        "{err}"
    );
    assert!(store.balance(alice.clone()).await.unwrap().is_zero());
    assert!(store.transfer(id("t1")).await.unwrap().is_none());
    assert!(store
        .transfers_of(alice.clone(), 10, None)
        .await
        .unwrap()
        .is_empty());
    // Nothing of the refused batch was kept, so its ids are still free.
    let other = AccountId::user(UserId::random());
    store
        .create_transfers(vec![topup("t1", &other, 7)])
        .await
        .unwrap();
    assert_eq!(store.sum_check().await.unwrap().open_holds, 0);
    assert_balanced(store).await;
}

pub async fn overflow_is_refused_not_wrapped(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    store
        .create_transfers(vec![topup("t1", &alice, i64::MAX)])
        .await
        .unwrap();
    let err = store
        .create_transfers(vec![topup("t2", &alice, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Overflow { account, .. } if *account == alice),
        "{err}"
    );
    // The world's own balance reaches i64::MIN and stops there.
    let bob = user();
    store.create_transfers(vec![topup("t3", &bob, 1)]).await.unwrap();
    let err = store
        .create_transfers(vec![topup("t4", &bob, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Overflow { account, .. } if *account == world()),
        "{err}"
    );
    assert_eq!(store.balance(world()).await.unwrap().posted, micros(i64::MIN));
    assert_balanced(store).await;
}

pub async fn malformed_entries_are_refused_before_anything_moves(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    let cases: Vec<Entry> = vec![
        topup("zero", &alice, 0),
        topup("negative", &alice, -5),
        Transfer::posted(id("same"), alice.clone(), alice.clone(), micros(1), Reason::Fee).into(),
        Transfer {
            expires_at: Some(at(5)),
            ..Transfer::posted(id("exp"), world(), alice.clone(), micros(1), Reason::Topup)
        }
        .into(),
        Post::new(id("p0"), id("h"), micros(0)).into(),
    ];
    for entry in cases {
        let err = store
            .create_transfers(vec![topup("ok", &alice, 1), entry.clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::NotPositive { .. }
                    | LedgerError::SameAccount { .. }
                    | LedgerError::ExpiryWithoutHold { .. }
            ),
            "{entry:?}: {err}"
        );
    }
    let too_many = (0..=MAX_BATCH_ENTRIES)
        .map(|n| topup(&format!("b{n}"), &alice, 1))
        .collect();
    assert!(matches!(
        store.create_transfers(too_many).await,
        Err(LedgerError::BatchTooLarge { .. })
    ));
    assert!(store.balance(alice).await.unwrap().is_zero());
    assert!(store.create_transfers(Vec::new()).await.unwrap().is_empty());
}
