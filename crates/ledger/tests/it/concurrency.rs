//! Many callers at once: no overdraft, no double application, refusals isolated from their neighbours.
//! On PostgreSQL every caller has its own connection; on SQLite two stores share the file, as two hubs would.

use std::sync::Arc;

use stacknet_ledger::{AccountId, LedgerError, LedgerStore, TransferOutcome};
use stacknet_protocol::UserId;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support::*;

const CALLERS: usize = 50;

/// Stores for `n` callers: on PostgreSQL one pool with a connection per caller; on SQLite two
/// independent stores (two writers contending for the file's lock).
async fn stores_for(ctx: &Ctx, n: usize) -> Vec<Arc<dyn LedgerStore>> {
    match ctx.backend {
        Backend::Postgres => vec![ctx.open_another(n).await],
        Backend::Sqlite => vec![ctx.store.clone(), ctx.open_another(1).await],
    }
}

/// Runs `n` calls at once (released together by a barrier) and returns their results in caller order.
async fn race<T, F>(stores: Vec<Arc<dyn LedgerStore>>, n: usize, call: F) -> Vec<Result<T, LedgerError>>
where
    T: Send + 'static,
    F: Fn(Arc<dyn LedgerStore>, usize) -> stacknet_ledger::StoreFuture<'static, T> + Send + Sync + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let call = Arc::new(call);
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (store, barrier, call) = (stores[i % stores.len()].clone(), barrier.clone(), call.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            (i, call(store, i).await)
        });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

pub async fn fifty_simultaneous_holds_on_a_balance_for_one_admit_exactly_one(ctx: &Ctx) {
    let alice = AccountId::user(UserId::random());
    ctx.store
        .create_transfers(vec![topup("t1", &alice, 1_000)])
        .await
        .unwrap();
    let stores = stores_for(ctx, CALLERS).await;
    let who = alice.clone();
    let results = race(stores, CALLERS, move |store, i| {
        let entry = hold(&format!("hold-{i}"), &who, 1_000, None);
        Box::pin(async move { store.create_transfers(vec![entry]).await })
    })
    .await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::InsufficientFunds { .. })))
        .count();
    assert_eq!((admitted, refused), (1, CALLERS - 1), "{results:?}");
    let b = ctx.store.balance(alice).await.unwrap();
    assert_eq!((b.posted, b.debits_pending), (micros(1_000), micros(1_000)));
    assert_balanced(&*ctx.store).await;
}

pub async fn racing_copies_of_one_id_apply_it_once(ctx: &Ctx) {
    let alice = AccountId::user(UserId::random());
    ctx.store
        .create_transfers(vec![topup("t1", &alice, 1_000)])
        .await
        .unwrap();
    let stores = stores_for(ctx, 20).await;
    let who = alice.clone();
    let results = race(stores, 20, move |store, _| {
        let entry = hold("the-hold", &who, 10, None);
        Box::pin(async move { store.create_transfers(vec![entry]).await })
    })
    .await;
    let outcomes: Vec<TransferOutcome> = results.into_iter().map(|r| r.unwrap().remove(0)).collect();
    assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
    assert_eq!(ctx.store.balance(alice).await.unwrap().debits_pending, micros(10));
    assert_balanced(&*ctx.store).await;
}

pub async fn racing_captures_of_one_hold_resolve_it_once(ctx: &Ctx) {
    let alice = AccountId::user(UserId::random());
    ctx.store
        .create_transfers(vec![topup("t1", &alice, 100), hold("h1", &alice, 100, None)])
        .await
        .unwrap();
    let stores = stores_for(ctx, 20).await;
    let results = race(stores, 20, |store, i| {
        Box::pin(async move {
            store
                .post(id(&format!("capture-{i}")), id("h1"), micros(100))
                .await
        })
    })
    .await;
    let resolved = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::AlreadyResolved { .. })))
        .count();
    assert_eq!(
        (results.iter().filter(|r| r.is_ok()).count(), resolved),
        (1, 19),
        "{results:?}"
    );
    assert_eq!(
        ctx.store.balance(AccountId::escrow()).await.unwrap().posted,
        micros(100)
    );
    assert_balanced(&*ctx.store).await;
}

/// Batches committed together (SQLite's group commit) still succeed or fail one by one.
pub async fn a_refused_batch_does_not_take_its_neighbours_down(ctx: &Ctx) {
    let users: Arc<Vec<AccountId>> = Arc::new((0..40).map(|_| AccountId::user(UserId::random())).collect());
    let stores = stores_for(ctx, 40).await;
    let batch_users = users.clone();
    let results = race(stores, 40, move |store, i| {
        let user = batch_users[i].clone();
        let mut batch = vec![topup(&format!("t{i}"), &user, 50)];
        if i % 2 == 1 {
            batch.push(hold(&format!("h{i}"), &user, 51, None));
        }
        Box::pin(async move { store.create_transfers(batch).await })
    })
    .await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), i % 2 == 0, "caller {i}: {result:?}");
    }
    let balances = ctx.store.balances(users.to_vec()).await.unwrap();
    for (i, b) in balances.iter().enumerate() {
        assert_eq!(b.posted, micros(if i % 2 == 0 { 50 } else { 0 }), "user {i}");
    }
    assert_balanced(&*ctx.store).await;
}
