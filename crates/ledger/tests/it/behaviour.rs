//! Holds and statements as a caller sees them, one behaviour per test; every test runs on both backends.

use stacknet_ledger::{AccountId, Balance, EntryKind, LedgerError, Reason, Transfer, TransferState};
use stacknet_protocol::UserId;

use crate::support::*;

fn user() -> AccountId {
    AccountId::user(UserId::random())
}

pub async fn a_hold_reserves_the_balance_and_a_void_releases_it(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    store
        .create_transfers(vec![topup("t1", &alice, 100)])
        .await
        .unwrap();
    let held = store
        .create_transfers(vec![hold("h1", &alice, 70, None)])
        .await
        .unwrap();
    assert_eq!(held[0].state, TransferState::Pending);
    let b = store.balance(alice.clone()).await.unwrap();
    assert_eq!(
        (b.posted, b.debits_pending, b.available()),
        (micros(100), micros(70), micros(30))
    );
    assert_eq!(
        store.balance(AccountId::escrow()).await.unwrap().credits_pending,
        micros(70)
    );

    // Only what is available can be held again.
    let err = store
        .create_transfers(vec![hold("h2", &alice, 31, None)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientFunds { available, amount, .. }
        if available == micros(30) && amount == micros(31)),
        "{err}"
    );

    let voided = store.void(id("v1"), id("h1")).await.unwrap();
    assert_eq!(
        (voided.amount, voided.released, voided.state),
        (micros(70), micros(70), TransferState::Voided)
    );
    assert_eq!(
        store.balance(alice.clone()).await.unwrap(),
        Balance {
            posted: micros(100),
            ..Balance::default()
        }
    );
    assert_eq!(
        store.transfer(id("h1")).await.unwrap().unwrap().state,
        TransferState::Voided
    );
    assert_balanced(store).await;
}

pub async fn a_partial_capture_moves_the_captured_part_and_releases_the_rest(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    store
        .create_transfers(vec![topup("t1", &alice, 100), hold("h1", &alice, 60, None)])
        .await
        .unwrap();
    let posted = store.post(id("p1"), id("h1"), micros(25)).await.unwrap();
    assert_eq!(
        (posted.amount, posted.released, posted.state),
        (micros(25), micros(35), TransferState::Posted)
    );
    assert_eq!(
        (posted.debit.clone(), posted.credit.clone()),
        (alice.clone(), AccountId::escrow())
    );
    let b = store.balance(alice.clone()).await.unwrap();
    assert_eq!(
        (b.posted, b.debits_pending, b.available()),
        (micros(75), micros(0), micros(75))
    );
    let escrow = store.balance(AccountId::escrow()).await.unwrap();
    assert_eq!((escrow.posted, escrow.credits_pending), (micros(25), micros(0)));
    assert_eq!(
        store.transfer(id("h1")).await.unwrap().unwrap().state,
        TransferState::Posted
    );
    assert_balanced(store).await;
}

pub async fn a_hold_resolves_once_and_never_for_more_than_it_holds(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    store
        .create_transfers(vec![topup("t1", &alice, 100), hold("h1", &alice, 50, None)])
        .await
        .unwrap();
    let err = store.post(id("p1"), id("h1"), micros(51)).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::ExceedsHold { held, amount, .. } if held == micros(50) && amount == micros(51))
    );
    store.post(id("p2"), id("h1"), micros(50)).await.unwrap();
    let err = store.void(id("v1"), id("h1")).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::AlreadyResolved {
                state: TransferState::Posted,
                ..
            }
        ),
        "{err}"
    );
    let err = store.post(id("p3"), id("t1"), micros(1)).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotAHold { .. }), "{err}");
    let err = store.post(id("p4"), id("p2"), micros(1)).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotAHold { .. }), "{err}");
    let err = store.void(id("v2"), id("nothing")).await.unwrap_err();
    assert!(matches!(err, LedgerError::PendingNotFound { .. }), "{err}");
    assert_eq!(store.balance(alice).await.unwrap().posted, micros(50));
    assert_balanced(store).await;
}

pub async fn expire_due_releases_only_holds_past_their_deadline(ctx: &Ctx) {
    let store = &*ctx.store;
    let alice = user();
    store
        .create_transfers(vec![
            topup("t1", &alice, 100),
            hold("early", &alice, 10, Some(1_000)),
            hold("late", &alice, 20, Some(2_000)),
            hold("never", &alice, 30, None),
        ])
        .await
        .unwrap();
    assert!(store.expire_due(at(999)).await.unwrap().is_empty());
    assert_eq!(store.expire_due(at(1_000)).await.unwrap(), vec![id("early")]);
    assert!(
        store.expire_due(at(1_500)).await.unwrap().is_empty(),
        "an expired hold expires once"
    );
    assert_eq!(
        store.balance(alice.clone()).await.unwrap().debits_pending,
        micros(50)
    );

    let err = store.post(id("p1"), id("early"), micros(10)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::AlreadyResolved {
                state: TransferState::Expired,
                ..
            }
        ),
        "{err}"
    );
    // Posted before the sweep: the post wins, and the sweep leaves it alone.
    store.post(id("p2"), id("late"), micros(20)).await.unwrap();
    assert!(store.expire_due(at(5_000)).await.unwrap().is_empty());
    let b = store.balance(alice).await.unwrap();
    assert_eq!((b.posted, b.debits_pending), (micros(80), micros(30)));
    assert_balanced(store).await;
}

pub async fn a_statement_lists_both_sides_in_order_and_pages(ctx: &Ctx) {
    let store = &*ctx.store;
    let (alice, bob) = (user(), user());
    store
        .create_transfers(vec![topup("t1", &alice, 100), topup("t2", &bob, 5)])
        .await
        .unwrap();
    store
        .create_transfers(vec![hold("h1", &alice, 30, None)])
        .await
        .unwrap();
    store.post(id("p1"), id("h1"), micros(30)).await.unwrap();
    store
        .create_transfers(vec![Transfer::posted(
            id("x1"),
            alice.clone(),
            bob.clone(),
            micros(5),
            Reason::Refund,
        )
        .into()])
        .await
        .unwrap();
    let lines = store.transfers_of(alice.clone(), 100, None).await.unwrap();
    let ids: Vec<&str> = lines.iter().map(|l| l.transfer.id.as_str()).collect();
    assert_eq!(ids, ["t1", "h1", "p1", "x1"]);
    assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        lines[1].transfer.state,
        TransferState::Posted,
        "the hold shows it was captured"
    );
    assert_eq!(
        (lines[2].transfer.kind, lines[2].transfer.pending_id.clone()),
        (EntryKind::Post, Some(id("h1")))
    );

    let first = store.transfers_of(alice.clone(), 2, None).await.unwrap();
    let rest = store
        .transfers_of(alice.clone(), 2, Some(first[1].seq))
        .await
        .unwrap();
    assert_eq!(first.into_iter().chain(rest).collect::<Vec<_>>(), lines);
    let bobs: Vec<String> = store
        .transfers_of(bob, 10, None)
        .await
        .unwrap()
        .iter()
        .map(|l| l.transfer.id.to_string())
        .collect();
    assert_eq!(bobs, ["t2", "x1"]);
}
