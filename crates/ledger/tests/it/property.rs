//! Random sequences of what the hub does with money (top-up, hold, capture, void, expire, filing
//! with its split and warm bonus, payout, confirmed and failed payout, bond, unbond and withdraw,
//! replays and reused ids), each from empty books but for the stacks' and nodes' funding. After
//! every batch and every expiry: the books balance, nothing is below its floor, the open holds
//! equal the escrow's pending credits, the escrow holds exactly the captured cost not yet filed,
//! each payout-pending account holds exactly its open payouts, each stake and unbonding account
//! exactly what its bond, unbond and withdraw transfers moved, and the store agrees with the naive
//! model in `model.rs`, outcome for outcome, refusal for refusal, balance for balance.
//!
//! Size: `CASES` sequences per backend, one per proptest case, each of 1 to `MAX_STEPS` operations, on
//! one database wiped between cases (a fresh file or schema per case would cost more than the case).

use std::collections::BTreeMap;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stacknet_ledger::{AccountId, LedgerError, LedgerStore, TransferOutcome};

use crate::model::Model;
use crate::sequence::{op, Batch, Op, World};
use crate::support::*;

pub const CASES: u32 = 10_000;
const MAX_STEPS: usize = 14;

async fn run_sequence(store: &dyn LedgerStore, tally: &Tally, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut state = World::new();
    let mut model = Model::default();
    let funding = state.funding();
    step(store, tally, &mut state, &mut model, funding).await?;
    for op in &ops {
        if let Op::Expire { advance } = op {
            state.clock += i64::from(*advance);
            let now = at(state.clock);
            let expected = model.expire_due(now);
            let got = store.expire_due(now).await.unwrap();
            let key = if got.is_empty() { "none" } else { "released" };
            *tally.lock().unwrap().entry(format!("expire:{key}")).or_default() += 1;
            prop_assert_eq!(got, expected, "expire at {}", now);
            check(store, &state, &model).await?;
            continue;
        }
        // A refused batch ends its operation, as the hub stops a filing whose settlement failed.
        for sent in state.plan(op, &model)? {
            let applied = step(store, tally, &mut state, &mut model, sent).await?;
            check(store, &state, &model).await?;
            if !applied {
                break;
            }
        }
    }
    Ok(())
}

/// How often each operation had each result, so a run shows it exercised refusals as well as successes.
type Tally = Mutex<BTreeMap<String, u64>>;

fn count(tally: &Tally, label: &str, result: &Result<Vec<TransferOutcome>, LedgerError>) {
    let key = match result {
        Ok(outcomes) if outcomes.iter().all(|o| o.replayed) => "replayed".to_owned(),
        Ok(_) => "applied".to_owned(),
        Err(e) => format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("?")
            .to_owned(),
    };
    *tally.lock().unwrap().entry(format!("{label}:{key}")).or_default() += 1;
}

/// Sends one batch to the model and the store; true when it was applied.
async fn step(
    store: &dyn LedgerStore,
    tally: &Tally,
    state: &mut World,
    model: &mut Model,
    sent: Batch,
) -> Result<bool, TestCaseError> {
    let expected = model.apply(&sent.entries);
    let got = store.create_transfers(sent.entries.clone()).await;
    count(tally, sent.label, &got);
    match (&expected, &got) {
        (Ok(want), Ok(have)) => prop_assert_eq!(want, have),
        (Err(want), Err(have)) => prop_assert_eq!(want.to_string(), have.to_string()),
        _ => prop_assert!(false, "{:?}: model {:?}, store {:?}", sent.entries, expected, got),
    }
    prop_assert!(
        sent.expect.met_by(&got),
        "{} {:?}: expected {:?}, got {:?}",
        sent.label,
        sent.entries,
        sent.expect,
        got
    );
    match got {
        Ok(outcomes) => {
            state.record(sent, &outcomes);
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

/// The invariants, the hub's records against the books, and store and model agreeing on every balance.
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
    let of = |account: &AccountId| balances[accounts.iter().position(|a| a == account).unwrap()];
    // Every hold in this test is in favour of the escrow: its pending credits are exactly the open holds.
    let escrow = of(&AccountId::escrow());
    prop_assert_eq!(i128::from(escrow.credits_pending.micros()), open_amount);
    // What was captured stays in escrow until it is filed, and filing takes exactly that out.
    prop_assert_eq!(
        i128::from(escrow.posted.micros()),
        state.awaiting_filing(),
        "escrow against captured, unfiled paperwork"
    );
    for nk in &state.nodes {
        let pending = of(&AccountId::payout_pending(*nk));
        prop_assert_eq!(
            i128::from(pending.posted.micros()),
            state.open_payouts(*nk),
            "payout-pending of {} against its open payouts",
            nk
        );
        let (staked, unbonding) = state.stake_of(*nk);
        prop_assert_eq!(
            (
                i128::from(of(&AccountId::stake(*nk)).posted.micros()),
                i128::from(of(&AccountId::unbonding(*nk)).posted.micros())
            ),
            (staked, unbonding),
            "stake and unbonding of {} against its stake moves",
            nk
        );
    }
    Ok(())
}

pub fn random_sequences_keep_the_books_balanced_and_agree_with_the_model(backend: Backend) {
    let h = harness(
        backend,
        Setup {
            durable: false,
            ..Setup::default()
        },
    );
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
