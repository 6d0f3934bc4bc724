#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ledger's one test suite, run against every store: SQLite always, PostgreSQL in tests marked
//! `#[ignore]` (they need `STACKNET_TEST_DATABASE_URL`; `scripts/test.sh` runs them with
//! `--include-ignored`, and one run without the variable fails).

mod behaviour;
mod concurrency;
mod filing;
mod model;
mod payout;
mod property;
mod rules;
mod sequence;
mod stake;
mod support;

/// One `#[test]` per backend for each suite function `module::name(&Ctx)`.
macro_rules! on_every_backend {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                use crate::support::{harness, Backend, Setup};
                let h = harness(Backend::Sqlite, Setup::default());
                h.block_on(crate::$module::$name(&h.ctx));
            })*
        }
        mod postgres {
            $(#[test]
            #[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
            fn $name() {
                use crate::support::{harness, Backend, Setup};
                let h = harness(Backend::Postgres, Setup::default());
                h.block_on(crate::$module::$name(&h.ctx));
            })*
        }
    };
}

on_every_backend! {
    behaviour::a_hold_reserves_the_balance_and_a_void_releases_it,
    behaviour::a_partial_capture_moves_the_captured_part_and_releases_the_rest,
    behaviour::a_hold_resolves_once_and_never_for_more_than_it_holds,
    behaviour::expire_due_releases_only_holds_past_their_deadline,
    rules::a_replayed_id_returns_the_first_outcome_and_moves_nothing,
    rules::a_reused_id_with_a_different_field_is_refused_naming_the_field,
    rules::floors_hold_for_every_kind_but_the_outside_world,
    rules::a_batch_applies_all_or_nothing,
    rules::overflow_is_refused_not_wrapped,
    rules::malformed_entries_are_refused_before_anything_moves,
    behaviour::a_statement_lists_both_sides_in_order_and_pages,
    concurrency::fifty_simultaneous_holds_on_a_balance_for_one_admit_exactly_one,
    concurrency::racing_copies_of_one_id_apply_it_once,
    concurrency::racing_captures_of_one_hold_resolve_it_once,
    concurrency::a_refused_batch_does_not_take_its_neighbours_down,
}

#[test]
fn sqlite_property() {
    property::random_sequences_keep_the_books_balanced_and_agree_with_the_model(support::Backend::Sqlite);
}

#[test]
#[ignore = "needs PostgreSQL (STACKNET_TEST_DATABASE_URL); scripts/test.sh runs it"]
fn postgres_property() {
    property::random_sequences_keep_the_books_balanced_and_agree_with_the_model(support::Backend::Postgres);
}

#[test]
fn open_picks_the_store_from_the_url() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("l.sqlite").display());
    rt.block_on(async {
        let store = stacknet_ledger::open(&url).await.unwrap();
        assert!(store.sum_check().await.unwrap().is_balanced());
        let err = stacknet_ledger::open("mysql://root:secret@db/x")
            .await
            .unwrap_err();
        assert!(
            !err.to_string().contains("secret"),
            "a password must not leak into errors: {err}"
        );
        assert!(stacknet_ledger::open("sqlite://").await.is_err());
    });
}
