use stacknet_protocol::{Amount, StackId, Timestamp};

use super::*;
use crate::model::Reason;

fn id(s: &str) -> TransferId {
    TransferId::new(s).unwrap()
}

fn books_for(batch: &[Entry]) -> Books {
    let accounts = accounts_needed(batch, &[]);
    Books::new(accounts.into_iter().map(|a| (a, Balance::default())), [])
}

fn now() -> Timestamp {
    Timestamp::from_unix_ms(1_000).unwrap()
}

#[test]
fn a_hold_and_its_partial_capture_in_one_batch_leave_only_the_capture() {
    let world = AccountId::external("topup").unwrap();
    let stack = AccountId::stack(StackId::random());
    let batch: Vec<Entry> = vec![
        Transfer::posted(
            id("t"),
            world.clone(),
            stack.clone(),
            Amount::from_micros(100),
            Reason::Topup,
        )
        .into(),
        Transfer::hold(
            id("h"),
            stack.clone(),
            AccountId::escrow(),
            Amount::from_micros(60),
            None,
        )
        .into(),
        Post::new(id("p"), id("h"), Amount::from_micros(25)).into(),
    ];
    let mut books = books_for(&batch);
    let outcomes = books.apply(&batch, now()).unwrap();
    assert_eq!(outcomes[2].released, Amount::from_micros(35));
    let changes = books.changes();
    // The hold is written once, already posted; nothing existing was resolved.
    assert!(changes.resolved.is_empty());
    assert_eq!(changes.inserted[1].state, TransferState::Posted);
    let stack_balance = changes.accounts.iter().find(|(a, _)| **a == stack).unwrap().1;
    assert_eq!(stack_balance.posted, Amount::from_micros(75));
    assert_eq!(stack_balance.debits_pending, Amount::ZERO);
}

#[test]
fn ids_needed_include_the_holds_a_batch_resolves_once_and_sorted() {
    let batch: Vec<Entry> = vec![
        Void::new(id("v"), id("h")).into(),
        Post::new(id("a"), id("h"), Amount::from_micros(1)).into(),
    ];
    assert_eq!(ids_needed(&batch), vec![id("a"), id("h"), id("v")]);
}

#[test]
fn an_account_not_loaded_is_an_internal_error_not_a_panic() {
    let mut books = Books::new([], []);
    let t = Transfer::posted(
        id("t"),
        AccountId::treasury(),
        AccountId::escrow(),
        Amount::from_micros(1),
        Reason::Reward,
    );
    assert!(matches!(
        books.apply(&[t.into()], now()),
        Err(LedgerError::Internal(_))
    ));
}
