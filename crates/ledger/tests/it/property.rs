//! Random sequences of what the hub does with money (top-up, hold, capture, void, expire, split,
//! payout, failed payout, replays and reused ids), each from empty books. After every step: the books
//! balance, nothing is below its floor, the open holds equal the escrow's pending credits, and the
//! store agrees with the naive model in `model.rs`, outcome for outcome, refusal for refusal, balance
//! for balance.
//!
//! Size: `CASES` sequences per backend, one per proptest case, each of 1 to `MAX_STEPS` steps, on one
//! database wiped between cases (a fresh file or schema per case would cost more than the case).

use std::collections::BTreeMap;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stacknet_ledger::{AccountId, Entry, LedgerError, LedgerStore, Reason, TransferOutcome};

use crate::model::Model;
use crate::sequence::{op, Op, World};
use crate::support::*;

pub const CASES: u32 = 10_000;
const MAX_STEPS: usize = 12;

async fn run_sequence(store: &dyn LedgerStore, tally: &Tally, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut state = World::new();
    let mut model = Model::default();
    // Every sequence starts with its users funded, so that most of what follows can succeed.
    let funding = state
        .users
        .clone()
        .into_iter()
        .map(|user| state.posted(world(), user, 1_000, Reason::Topup))
        .collect();
    step(store, tally, &mut state, &mut model, funding).await?;
    for op in &ops {
        if let Op::Expire { advance } = op {
            state.clock += i64::from(*advance);
            let now = at(state.clock);
            let expected = model.expire_due(now);
            prop_assert_eq!(
                store.expire_due(now).await.unwrap(),
                expected,
                "expire at {}",
                now
            );
        } else if let Some(batch) = state.batch(op, &model) {
            step(store, tally, &mut state, &mut model, batch).await?;
        }
        check(store, &state, &model).await?;
    }
    Ok(())
}

/// How often each result occurred, so a run shows it exercised refusals as well as successes.
type Tally = Mutex<BTreeMap<String, u64>>;

fn count(tally: &Tally, result: &Result<Vec<TransferOutcome>, LedgerError>) {
    let key = match result {
        Ok(outcomes) if outcomes.iter().all(|o| o.replayed) => "replayed".to_owned(),
        Ok(_) => "applied".to_owned(),
        Err(e) => format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("?")
            .to_owned(),
    };
    *tally.lock().unwrap().entry(key).or_default() += 1;
}

async fn step(
    store: &dyn LedgerStore,
    tally: &Tally,
    state: &mut World,
    model: &mut Model,
    batch: Vec<Entry>,
) -> Result<(), TestCaseError> {
    let expected = model.apply(&batch);
    let got = store.create_transfers(batch.clone()).await;
    count(tally, &got);
    match (&expected, &got) {
        (Ok(want), Ok(have)) => prop_assert_eq!(want, have),
        (Err(want), Err(have)) => prop_assert_eq!(want.to_string(), have.to_string()),
        _ => prop_assert!(false, "{batch:?}: model {expected:?}, store {got:?}"),
    }
    if let Ok(outcomes) = got {
        let fresh = |o: &TransferOutcome| !o.replayed && o.state == stacknet_ledger::TransferState::Pending;
        state
            .holds
            .extend(outcomes.iter().filter(|o| fresh(o)).map(|o| o.id.clone()));
        state.applied.push(batch);
    }
    Ok(())
}

/// The invariants, and store and model agreeing on every balance.
async fn check(store: &dyn LedgerStore, state: &World, model: &Model) -> Result<(), TestCaseError> {
    let accounts = state.accounts();
    let (totals, balances) = tokio::join!(store.sum_check(), store.balances(accounts.clone()));
    let (totals, balances) = (totals.unwrap(), balances.unwrap());
    prop_assert!(totals.is_balanced(), "{:?}", totals);
    let (open, open_amount) = model.open_holds();
    prop_assert_eq!((totals.open_holds, totals.open_hold_amount), (open, open_amount));
    for (account, balance) in accounts.iter().zip(&balances) {
        let want = model.balance(account);
        let have = (
            balance.posted.micros(),
            balance.debits_pending.micros(),
            balance.credits_pending.micros(),
        );
        let want = (want.posted, want.debits_pending, want.credits_pending);
        prop_assert_eq!(
            (i128::from(have.0), i128::from(have.1), i128::from(have.2)),
            want,
            "{}",
            account
        );
        if account.floor() == stacknet_ledger::Floor::Zero {
            prop_assert!(
                balance.available().micros() >= 0,
                "{} below its floor: {:?}",
                account,
                balance
            );
        }
    }
    // Every hold in this test is in favour of the escrow: its pending credits are exactly the open holds.
    let escrow = &balances[accounts.iter().position(|a| *a == AccountId::escrow()).unwrap()];
    prop_assert_eq!(i128::from(escrow.credits_pending.micros()), open_amount);
    Ok(())
}

pub fn random_sequences_keep_the_books_balanced_and_agree_with_the_model(backend: Backend) {
    let Some(h) = harness(
        backend,
        Setup {
            durable: false,
            ..Setup::default()
        },
    ) else {
        return;
    };
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let tally = Tally::default();
    let result = runner.run(&proptest::collection::vec(op(), 1..=MAX_STEPS), |ops| {
        h.block_on(async {
            h.ctx.wipe().await;
            run_sequence(&*h.ctx.store, &tally, ops).await
        })
    });
    eprintln!(
        "{backend:?}: {CASES} sequences in {:.1} s; batches: {:?}",
        started.elapsed().as_secs_f64(),
        tally.lock().unwrap()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
