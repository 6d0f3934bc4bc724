//! The `Store` suite: every function runs against SQLite and PostgreSQL (see `on_every_backend!`),
//! so the two implementations give the same answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use rand_core::RngCore;
use stacknet_hub::store::{
    ApiKeyRecord, DocRecord, EvidenceRow, KeyRole, ModelPrice, PaperworkRecord, PayoutRecord, PayoutState,
    StackRecord, Store, UnbondingRecord, UsageCounts, UsageRow, LATENCY_BUCKETS,
};
use stacknet_protocol::contract::PriceTerms;
use stacknet_protocol::{Amount, ContractId, NodeKeyId, PaperworkId, StackId, Timestamp};

use crate::TestDb;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(1_790_000_000_000 + ms).unwrap()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A paperwork with fresh ids and leaf; `n` tells records apart in failure messages.
fn record(n: i64) -> PaperworkRecord {
    PaperworkRecord {
        id: PaperworkId::random(),
        contract: ContractId::random().to_string(),
        node_key: NodeKeyId::random(),
        json: format!("{{\"n\":{n}}}"),
        leaf_hash: random_bytes(),
        accepted_at: at(n),
        hold: (n % 2 == 0).then(|| format!("hold_{n}")),
        cost: Amount::from_micros(n * 1_000),
    }
}

fn records(n: usize) -> Vec<PaperworkRecord> {
    (0..n).map(|i| record(i64::try_from(i).unwrap())).collect()
}

fn ids(records: &[PaperworkRecord]) -> Vec<PaperworkId> {
    records.iter().map(|r| r.id).collect()
}

fn payout(node: NodeKeyId, created: i64) -> PayoutRecord {
    PayoutRecord {
        id: format!("po_{}", hex::encode(random_bytes::<16>())),
        node_key: node,
        amount: Amount::from_micros(2_500_000),
        destination: "acct_1Abc".into(),
        state: PayoutState::Pending,
        attempts: 0,
        last_error: None,
        created_at: at(created),
        updated_at: at(created),
    }
}

fn terms(input_per_mtok: i64) -> PriceTerms {
    PriceTerms {
        input_per_mtok: Amount::from_micros(input_per_mtok),
        output_per_mtok: Amount::from_micros(2 * input_per_mtok),
        per_request: Amount::ZERO,
        per_unit: Amount::from_micros(7),
    }
}

pub async fn stacks_and_api_keys_round_trip(db: &TestDb) {
    let store = &db.store;
    let later = StackRecord {
        id: StackId::random(),
        name: "later".into(),
        created_at: at(20),
    };
    let earlier = StackRecord {
        id: StackId::random(),
        name: "earlier".into(),
        created_at: at(10),
    };
    store.create_stack(later.clone()).await.unwrap();
    store.create_stack(earlier.clone()).await.unwrap();
    assert_eq!(store.stacks().await.unwrap(), vec![earlier, later.clone()]);

    let key = ApiKeyRecord {
        hash: random_bytes(),
        prefix: "sk_live_ab12".into(),
        stack: later.id,
        created_at: at(30),
        revoked_at: None,
        role: KeyRole::Owner,
    };
    store.create_api_key(key.clone()).await.unwrap();
    let client = ApiKeyRecord {
        hash: random_bytes(),
        prefix: "sk_live_cd34".into(),
        role: KeyRole::Client,
        ..key.clone()
    };
    store.create_api_key(client.clone()).await.unwrap();
    let mut keys = store.api_keys().await.unwrap();
    keys.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    assert_eq!(keys, vec![key.clone(), client.clone()], "each key keeps its role");
    assert_eq!(
        store
            .revoke_key(client.prefix.clone(), at(31))
            .await
            .unwrap()
            .len(),
        1
    );
    let orphan = ApiKeyRecord {
        hash: random_bytes(),
        stack: StackId::random(),
        ..key.clone()
    };
    assert!(
        store.create_api_key(orphan).await.is_err(),
        "a key needs its Stack"
    );
    assert!(
        store.create_stack(later).await.is_err(),
        "a Stack id is created once"
    );
    let live = |keys: Vec<ApiKeyRecord>| {
        keys.into_iter()
            .filter(|k| k.revoked_at.is_none())
            .collect::<Vec<_>>()
    };
    assert_eq!(live(store.api_keys().await.unwrap()), vec![key.clone()]);

    // Revoking by prefix; the change is among those since the version seen before it.
    let before = store.api_keys_since(0).await.unwrap();
    assert_eq!(live(before.records), vec![key.clone()]);
    let revoked = store.revoke_key(key.prefix.clone(), at(40)).await.unwrap();
    let expected = ApiKeyRecord {
        revoked_at: Some(at(40)),
        ..key.clone()
    };
    assert_eq!(revoked, vec![expected.clone()]);
    assert!(store
        .revoke_key(key.prefix.clone(), at(50))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .revoke_key("sk_unknown".into(), at(50))
        .await
        .unwrap()
        .is_empty());
    let after = store.api_keys_since(before.version + 1).await.unwrap();
    assert_eq!(after.records, vec![expected.clone()]);
    assert!(after.version > before.version);
    assert_eq!(live(store.api_keys().await.unwrap()), Vec::<ApiKeyRecord>::new());
    assert!(store.api_keys().await.unwrap().contains(&expected));
}

pub async fn documents_keep_every_version_once_and_counters_add_up(db: &TestDb) {
    let store = &db.store;
    let stack = StackId::random();
    let doc = |id: &str, version: u64, json: &str| DocRecord {
        kind: "skill".into(),
        id: id.into(),
        version,
        stack: Some(stack),
        json: json.into(),
        created_at: at(i64::try_from(version).unwrap()),
    };
    assert!(store.put_doc(doc("skill_a", 1, "{\"v\":1}")).await.unwrap());
    // A version is written once: the second writer of version 1 loses, and nothing changes.
    assert!(!store
        .put_doc(doc("skill_a", 1, "{\"v\":\"other\"}"))
        .await
        .unwrap());
    let first = store.docs_since(0).await.unwrap();
    assert_eq!(first.records, vec![doc("skill_a", 1, "{\"v\":1}")]);
    assert!(store.put_doc(doc("skill_a", 2, "{\"v\":2}")).await.unwrap());
    let model = DocRecord {
        kind: "model".into(),
        stack: None,
        ..doc("m", 1, "{}")
    };
    assert!(store.put_doc(model.clone()).await.unwrap());
    // What was written since the last version seen (its own version may come again).
    let later = store.docs_since(first.version + 1).await.unwrap();
    assert_eq!(later.records, vec![doc("skill_a", 2, "{\"v\":2}"), model]);
    assert!(later.version > first.version);
    assert_eq!(
        store
            .doc_versions("skill".into(), "skill_a".into())
            .await
            .unwrap(),
        vec![doc("skill_a", 1, "{\"v\":1}"), doc("skill_a", 2, "{\"v\":2}")]
    );
    assert!(store
        .doc_versions("skill".into(), "none".into())
        .await
        .unwrap()
        .is_empty());

    store
        .add_counts(vec![("a".into(), 2), ("b".into(), 1), ("a".into(), 3)])
        .await
        .unwrap();
    store.add_counts(vec![("a".into(), 1)]).await.unwrap();
    assert_eq!(
        store
            .counts(vec!["b".into(), "a".into(), "never".into()])
            .await
            .unwrap(),
        vec![1, 6, 0]
    );
}

pub async fn set_price_replaces_and_prices_sort_bytewise(db: &TestDb) {
    let store = &db.store;
    let price = |model: &str, input, ms| ModelPrice {
        model: model.into(),
        price: terms(input),
        updated_at: at(ms),
    };
    store.set_price(price("gpt4", 1, 1)).await.unwrap();
    store.set_price(price("gpt-4o", 2, 2)).await.unwrap();
    store.set_price(price("gpt4", 3, 3)).await.unwrap();
    // Bytewise, '-' sorts before '4'; a locale that skips punctuation would put "gpt4" first.
    assert_eq!(
        store.prices().await.unwrap(),
        vec![price("gpt-4o", 2, 2), price("gpt4", 3, 3)]
    );
    // Only what changed since a version comes back (with that version's rows again).
    let seen = store.prices_since(0).await.unwrap();
    assert_eq!(seen.records.last(), Some(&price("gpt4", 3, 3)));
    store.set_price(price("gpt-4o", 4, 4)).await.unwrap();
    let changed = store.prices_since(seen.version + 1).await.unwrap();
    assert_eq!(changed.records, vec![price("gpt-4o", 4, 4)]);
    assert!(changed.version > seen.version);
}

pub async fn append_gives_contiguous_indexes_and_a_logged_id_keeps_its_first(db: &TestDb) {
    let store = &db.store;
    let r = records(6);
    assert_eq!(
        store.append_paperwork(Vec::new()).await.unwrap(),
        Vec::<u64>::new()
    );
    let first = vec![r[0].clone(), r[1].clone(), r[2].clone()];
    assert_eq!(store.append_paperwork(first.clone()).await.unwrap(), [0, 1, 2]);
    let mixed = vec![r[3].clone(), r[1].clone(), r[4].clone()];
    assert_eq!(store.append_paperwork(mixed).await.unwrap(), [3, 1, 4]);
    // A repeat inside one batch is appended once.
    let twice = vec![r[5].clone(), r[5].clone(), r[0].clone()];
    assert_eq!(store.append_paperwork(twice).await.unwrap(), [5, 5, 0]);
    assert_eq!(store.append_paperwork(first).await.unwrap(), [0, 1, 2]);

    let logged = store.paperwork(r[4].id).await.unwrap().unwrap();
    assert_eq!(logged.index, 4);
    assert_eq!(logged.record, r[4]);
    assert!(!logged.captured);
    assert_eq!(logged.filed_at, None);
    assert_eq!(store.paperwork(PaperworkId::random()).await.unwrap(), None);
    assert_eq!(store.leaf_hashes(0).await.unwrap().len(), 6);
}

pub async fn a_batch_with_a_conflicting_contract_appends_nothing(db: &TestDb) {
    let store = &db.store;
    let r = records(3);
    assert_eq!(store.append_paperwork(vec![r[0].clone()]).await.unwrap(), [0]);
    // A new paperwork under a contract already logged breaks the batch, which then leaves no trace.
    let clash = PaperworkRecord {
        contract: r[0].contract.clone(),
        ..r[2].clone()
    };
    assert!(store.append_paperwork(vec![r[1].clone(), clash]).await.is_err());
    assert_eq!(store.paperwork(r[1].id).await.unwrap(), None);
    assert_eq!(
        store
            .append_paperwork(vec![r[2].clone(), r[1].clone()])
            .await
            .unwrap(),
        [1, 2]
    );
}

pub async fn leaf_hashes_start_at_the_index_asked_for(db: &TestDb) {
    let store = &db.store;
    let r = records(5);
    store.append_paperwork(r[..2].to_vec()).await.unwrap();
    store.append_paperwork(r[2..].to_vec()).await.unwrap();
    let leaves: Vec<[u8; 32]> = r.iter().map(|p| p.leaf_hash).collect();
    assert_eq!(store.leaf_hashes(0).await.unwrap(), leaves);
    assert_eq!(store.leaf_hashes(3).await.unwrap(), leaves[3..]);
    assert!(store.leaf_hashes(5).await.unwrap().is_empty());
    assert!(store.leaf_hashes(u64::MAX).await.unwrap().is_empty());
}

pub async fn uncaptured_lists_until_marked_captured_with_the_amount_moved(db: &TestDb) {
    let store = &db.store;
    let r = records(3);
    store.append_paperwork(r.clone()).await.unwrap();
    let pending = store.uncaptured().await.unwrap();
    assert_eq!(pending.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(pending.iter().map(|p| p.record.clone()).collect::<Vec<_>>(), r);

    // The ledger refused the first capture (its hold had expired): nothing was moved.
    let captured = vec![
        (r[0].id, Amount::ZERO),
        (r[2].id, Amount::from_micros(1_234)),
        (PaperworkId::random(), Amount::from_micros(5)),
    ];
    store.mark_captured(captured).await.unwrap();
    let pending = store.uncaptured().await.unwrap();
    assert_eq!(pending.iter().map(|p| p.record.id).collect::<Vec<_>>(), [r[1].id]);
    let first = store.paperwork(r[0].id).await.unwrap().unwrap();
    assert_eq!((first.captured, first.record.cost), (true, Amount::ZERO));
    let third = store.paperwork(r[2].id).await.unwrap().unwrap();
    assert_eq!(
        (third.captured, third.record.cost),
        (true, Amount::from_micros(1_234))
    );

    store.mark_captured(Vec::new()).await.unwrap();
    store.mark_captured(vec![(r[1].id, r[1].cost)]).await.unwrap();
    assert!(store.uncaptured().await.unwrap().is_empty());
}

pub async fn paperwork_many_answers_in_the_order_asked(db: &TestDb) {
    let store = &db.store;
    let r = records(3);
    store.append_paperwork(r.clone()).await.unwrap();
    let asked = vec![r[2].id, PaperworkId::random(), r[0].id, r[2].id];
    let found: Vec<Option<(u64, PaperworkId)>> = store
        .paperwork_many(asked)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.map(|p| (p.index, p.record.id)))
        .collect();
    assert_eq!(
        found,
        [Some((2, r[2].id)), None, Some((0, r[0].id)), Some((2, r[2].id))]
    );
    assert!(store.paperwork_many(Vec::new()).await.unwrap().is_empty());
}

pub async fn a_settlement_claims_only_unfiled_paperwork_and_stays_open_until_finished(db: &TestDb) {
    let store = &db.store;
    let r = records(4);
    store.append_paperwork(r.clone()).await.unwrap();
    assert!(store.open_settlements().await.unwrap().is_empty());

    let first = vec![r[2].id, r[0].id];
    let claimed = store
        .begin_settlement("st_1".into(), first, at(100))
        .await
        .unwrap();
    assert_eq!(claimed, [r[2].id, r[0].id]);
    let second = vec![r[0].id, r[1].id, r[1].id, PaperworkId::random()];
    let claimed = store
        .begin_settlement("st_2".into(), second, at(200))
        .await
        .unwrap();
    assert_eq!(claimed, [r[1].id], "r0 is filed already; r1 is claimed once");
    // Nothing left to claim: no settlement is recorded.
    let third = vec![r[0].id, r[2].id];
    assert!(store
        .begin_settlement("st_3".into(), third, at(300))
        .await
        .unwrap()
        .is_empty());

    let filed: Vec<Option<Timestamp>> = store
        .paperwork_many(ids(&r))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.unwrap().filed_at)
        .collect();
    assert_eq!(
        filed,
        [Some(at(100)), Some(at(200)), Some(at(100)), None],
        "first times stay"
    );

    let open: Vec<(String, Vec<u64>)> = store
        .open_settlements()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, logged)| (id, logged.iter().map(|p| p.index).collect()))
        .collect();
    assert_eq!(
        open,
        [("st_1".to_owned(), vec![0, 2]), ("st_2".to_owned(), vec![1])]
    );

    store.finish_settlement("st_1".into()).await.unwrap();
    let open = store.open_settlements().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "st_2");
    assert_eq!(
        open[0].1.iter().map(|p| p.record.clone()).collect::<Vec<_>>(),
        [r[1].clone()]
    );
    store.finish_settlement("st_2".into()).await.unwrap();
    assert!(store.open_settlements().await.unwrap().is_empty());
}

pub async fn racing_settlements_claim_each_paperwork_once(db: &TestDb) {
    const FILERS: usize = 8;
    let r = records(20);
    db.store.append_paperwork(r.clone()).await.unwrap();
    let replica = db.replica().await;
    let filers = (0..FILERS).map(|n| {
        let store = if n % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        // Overlapping sets, in different orders.
        let mut ids = ids(&r);
        ids.rotate_left(n * 3 % r.len());
        ids.truncate(12);
        if n % 3 == 0 {
            ids.reverse();
        }
        let settlement = format!("st_{n}");
        tokio::spawn(async move { store.begin_settlement(settlement, ids, at(100)).await.unwrap() })
    });
    let mut claimed: Vec<PaperworkId> = futures_util::future::join_all(filers)
        .await
        .into_iter()
        .flat_map(|c| c.unwrap())
        .collect();
    let mut all = ids(&r);
    all.sort();
    claimed.sort();
    assert_eq!(claimed, all, "every paperwork is claimed exactly once");
    let open = db.store.open_settlements().await.unwrap();
    assert_eq!(open.iter().map(|(_, p)| p.len()).sum::<usize>(), r.len());
}

pub async fn claim_event_is_true_only_the_first_time(db: &TestDb) {
    let store = &db.store;
    assert!(store.claim_event("webhook", "evt_1".into(), at(1)).await.unwrap());
    assert!(!store.claim_event("webhook", "evt_1".into(), at(2)).await.unwrap());
    assert!(store.claim_event("nonce", "evt_1".into(), at(3)).await.unwrap());
    assert!(store.claim_event("webhook", "evt_2".into(), at(4)).await.unwrap());

    // Racing claims, as from two replicas receiving one retried webhook: exactly one wins.
    let replica = db.replica().await;
    let claims = (0..8).map(|i| {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        tokio::spawn(async move {
            store
                .claim_event("webhook", "evt_race".into(), at(5))
                .await
                .unwrap()
        })
    });
    let won = futures_util::future::join_all(claims).await;
    assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
}

/// Defect #11: nonces of signed requests are held until they expire, then forgotten by the next
/// claim; events claimed for good stay.
pub async fn nonces_are_held_until_they_expire(db: &TestDb) {
    let store = &db.store;
    assert!(store.claim_event("webhook", "evt_1".into(), at(1)).await.unwrap());
    for i in 0..5 {
        let nonce = format!("n{i}");
        assert!(store
            .claim_nonce("node_request", nonce, at(2), at(10))
            .await
            .unwrap());
    }
    assert!(!store
        .claim_nonce("node_request", "n0".into(), at(9), at(20))
        .await
        .unwrap());
    assert!(store
        .claim_nonce("filing", "n0".into(), at(9), at(20))
        .await
        .unwrap());
    assert_eq!(store.events_held("node_request").await.unwrap(), 5);
    assert!(store
        .claim_nonce("node_request", "n9".into(), at(11), at(30))
        .await
        .unwrap());
    assert_eq!(
        store.events_held("node_request").await.unwrap(),
        1,
        "the expired ones are gone"
    );
    assert_eq!(
        store.events_held("filing").await.unwrap(),
        1,
        "another kind's are not"
    );
    assert_eq!(store.events_held("webhook").await.unwrap(), 1, "events are kept");
}

pub async fn payout_updates_only_from_the_states_named(db: &TestDb) {
    let store = &db.store;
    let p = payout(NodeKeyId::random(), 1);
    store.create_payout(p.clone()).await.unwrap();
    assert!(
        store.create_payout(p.clone()).await.is_err(),
        "a payout id is created once"
    );
    assert_eq!(store.payout(p.id.clone()).await.unwrap(), Some(p.clone()));

    const PENDING: &[PayoutState] = &[PayoutState::Pending];
    const SENT: &[PayoutState] = &[PayoutState::Sent];
    const OPEN: &[PayoutState] = &[PayoutState::Pending, PayoutState::Sent];
    let moved = store
        .update_payout(p.id.clone(), SENT, PayoutState::Confirmed, 1, None, at(2))
        .await
        .unwrap();
    assert!(!moved, "not sent yet");
    assert_eq!(store.payout(p.id.clone()).await.unwrap(), Some(p.clone()));

    let error = Some("503 from the endpoint".to_owned());
    let moved = store
        .update_payout(p.id.clone(), PENDING, PayoutState::Sent, 1, error.clone(), at(3))
        .await
        .unwrap();
    assert!(moved);
    let sent = PayoutRecord {
        state: PayoutState::Sent,
        attempts: 1,
        last_error: error,
        updated_at: at(3),
        ..p.clone()
    };
    assert_eq!(store.payout(p.id.clone()).await.unwrap(), Some(sent));

    // A retry and a callback at once: one of them moves it.
    let replica = db.replica().await;
    let racers = (0..8).map(|i| {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        let id = p.id.clone();
        tokio::spawn(async move {
            store
                .update_payout(id, OPEN, PayoutState::Confirmed, 2, None, at(4))
                .await
                .unwrap()
        })
    });
    let moved = futures_util::future::join_all(racers).await;
    assert_eq!(moved.into_iter().filter(|m| *m.as_ref().unwrap()).count(), 1);
    let confirmed = store.payout(p.id.clone()).await.unwrap().unwrap();
    assert_eq!(
        (confirmed.state, confirmed.attempts, confirmed.last_error),
        (PayoutState::Confirmed, 2, None)
    );

    let unknown = store
        .update_payout("po_0".into(), OPEN, PayoutState::Failed, 1, None, at(5))
        .await
        .unwrap();
    assert!(!unknown);
    assert_eq!(store.payout("po_0".into()).await.unwrap(), None);
}

pub async fn payouts_by_state_and_by_node_oldest_first(db: &TestDb) {
    let store = &db.store;
    let (one, two) = (NodeKeyId::random(), NodeKeyId::random());
    let (newer, older, other) = (payout(one, 20), payout(one, 10), payout(two, 30));
    assert!(store.payouts_in(PayoutState::Pending).await.unwrap().is_empty());
    for p in [&newer, &older, &other] {
        store.create_payout(p.clone()).await.unwrap();
    }
    let moved = store
        .update_payout(
            other.id.clone(),
            &[PayoutState::Pending],
            PayoutState::Sent,
            1,
            None,
            at(40),
        )
        .await
        .unwrap();
    assert!(moved);
    let other = PayoutRecord {
        state: PayoutState::Sent,
        attempts: 1,
        updated_at: at(40),
        ..other
    };

    let pending = store.payouts_in(PayoutState::Pending).await.unwrap();
    assert_eq!(pending, vec![older.clone(), newer.clone()]);
    assert_eq!(
        store.payouts_in(PayoutState::Sent).await.unwrap(),
        vec![other.clone()]
    );
    assert!(store.payouts_in(PayoutState::Failed).await.unwrap().is_empty());
    assert_eq!(store.payouts_of(one).await.unwrap(), vec![older, newer]);
    assert_eq!(store.payouts_of(two).await.unwrap(), vec![other]);
    assert!(store.payouts_of(NodeKeyId::random()).await.unwrap().is_empty());
}

pub async fn concurrent_appends_from_two_replicas_fill_the_log_without_gaps(db: &TestDb) {
    const TASKS: usize = 8;
    const BATCHES: usize = 10;
    const BATCH_LEN: usize = 5;
    let replica = db.replica().await;
    let appenders = (0..TASKS).map(|task| {
        let store: Arc<dyn Store> = if task % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        tokio::spawn(async move {
            let mut appended = Vec::new();
            for _ in 0..BATCHES {
                let batch = records(BATCH_LEN);
                let indexes = store.append_paperwork(batch.clone()).await.unwrap();
                // Appends are serialised, so a batch's new records sit side by side.
                let start = indexes[0];
                let end = start + u64::try_from(BATCH_LEN).unwrap();
                assert_eq!(indexes, (start..end).collect::<Vec<_>>());
                appended.extend(batch.into_iter().zip(indexes));
            }
            appended
        })
    });
    let appended: Vec<(PaperworkRecord, u64)> = futures_util::future::join_all(appenders)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();

    let total = TASKS * BATCHES * BATCH_LEN;
    let indexes: BTreeSet<u64> = appended.iter().map(|(_, i)| *i).collect();
    assert_eq!(indexes.len(), total, "an index was given twice");
    assert_eq!(indexes, (0..u64::try_from(total).unwrap()).collect());
    let leaves = db.store.leaf_hashes(0).await.unwrap();
    for (record, index) in &appended {
        assert_eq!(leaves[usize::try_from(*index).unwrap()], record.leaf_hash);
    }
}

pub async fn a_broken_connection_is_replaced(db: &TestDb) {
    let store = &db.store;
    let stack = StackRecord {
        id: StackId::random(),
        name: "survivor".into(),
        created_at: at(1),
    };
    store.create_stack(stack.clone()).await.unwrap();
    db.break_connections().await;
    // A call may still draw a connection that died while idle and fail; the pool then drops it and
    // opens a fresh one, so at most one failure per pooled connection.
    let mut failures = 0;
    let stacks = loop {
        match store.stacks().await {
            Ok(stacks) => break stacks,
            Err(e) if failures < stacknet_hub::store::POOL_SIZE => {
                eprintln!("after the break: {e}");
                failures += 1;
            }
            Err(e) => panic!("the store did not reconnect: {e}"),
        }
    };
    assert_eq!(stacks, [stack]);
    assert!(store
        .claim_event("webhook", "evt_after".into(), at(2))
        .await
        .unwrap());
}

/// Schema names go into SQL unquoted by the driver: anything but `[a-z_][a-z0-9_]{0,62}` is refused
/// before a connection is tried.
#[test]
fn pg_store_refuses_a_schema_name_it_cannot_quote() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nowhere = "postgres://nobody@127.0.0.1:1/none";
    for bad in [
        "",
        "Hub",
        "hub-1",
        "1hub",
        "hub\"; DROP SCHEMA public; --",
        &"h".repeat(64),
    ] {
        let refused = rt.block_on(stacknet_hub::store::PgStore::connect(nowhere, bad));
        assert!(
            matches!(refused, Err(stacknet_hub::store::StoreError::BadSchemaName(_))),
            "{bad:?}: {refused:?}"
        );
    }
}

pub async fn unbondings_are_recorded_once_listed_by_maturity_and_leave_when_withdrawn(db: &TestDb) {
    let store: &Arc<dyn Store> = &db.store;
    let (one, two) = (NodeKeyId::random(), NodeKeyId::random());
    let unbonding = |id: &str, node: NodeKeyId, matures: i64| UnbondingRecord {
        id: id.to_owned(),
        node_key: node,
        amount: Amount::from_micros(matures * 10),
        created_at: at(0),
        withdrawable_at: at(matures),
        withdrawn_at: None,
    };
    let (late, early, other) = (
        unbonding("unbond:b", one, 20),
        unbonding("unbond:a", one, 10),
        unbonding("unbond:c", two, 5),
    );
    for u in [&late, &early, &other] {
        store.add_unbonding(u.clone()).await.unwrap();
    }
    // The same id again (a retry) keeps the first record, even with other fields.
    store.add_unbonding(unbonding("unbond:b", one, 99)).await.unwrap();
    assert_eq!(
        store.unbondings_of(one).await.unwrap(),
        vec![early.clone(), late.clone()]
    );
    store
        .mark_withdrawn(vec![early.id.clone(), "unbond:none".into()], at(30))
        .await
        .unwrap();
    assert_eq!(store.unbondings_of(one).await.unwrap(), vec![late.clone()]);
    assert_eq!(store.unbondings_of(two).await.unwrap(), vec![other]);
    assert!(store.unbondings_of(NodeKeyId::random()).await.unwrap().is_empty());
    // Removing (a record whose ledger move never happened) takes open records only.
    store.remove_unbonding(early.id.clone()).await.unwrap();
    store.remove_unbonding(late.id.clone()).await.unwrap();
    assert!(store.unbondings_of(one).await.unwrap().is_empty());
    store.add_unbonding(early.clone()).await.unwrap();
    assert!(
        store.unbondings_of(one).await.unwrap().is_empty(),
        "the withdrawn record stayed, so its id is still taken"
    );
}

pub async fn a_suspension_keeps_the_time_of_the_latest_conviction(db: &TestDb) {
    let store: &Arc<dyn Store> = &db.store;
    let (one, two) = (NodeKeyId::random(), NodeKeyId::random());
    store.suspend(one, at(10)).await.unwrap();
    store.suspend(two, at(5)).await.unwrap();
    // A later conviction moves the time on; a retried earlier one does not move it back.
    store.suspend(one, at(30)).await.unwrap();
    store.suspend(one, at(20)).await.unwrap();
    let mut expected = vec![(one, at(30)), (two, at(5))];
    expected.sort_by_key(|(n, _)| n.to_string());
    let mut got: Vec<_> = store.suspended().await.unwrap();
    got.retain(|(n, _)| *n == one || *n == two);
    assert_eq!(got, expected);
}

pub async fn evidence_adds_into_its_node_day_and_kind_and_lists_in_order(db: &TestDb) {
    let store: &Arc<dyn Store> = &db.store;
    let (one, two) = (NodeKeyId::random(), NodeKeyId::random());
    let row = |node, day, kind: &str, count, sum_ms| EvidenceRow {
        node_key: node,
        day,
        kind: kind.to_owned(),
        count,
        sum_ms,
    };
    store
        .add_evidence(vec![
            row(one, 20_001, "served", 3, 30),
            row(two, 20_000, "dropped", 1, 0),
        ])
        .await
        .unwrap();
    // Another replica's flush adds into the same rows.
    store
        .add_evidence(vec![
            row(one, 20_001, "served", 2, 12),
            row(one, 20_000, "timeout", 1, 0),
        ])
        .await
        .unwrap();
    store.add_evidence(Vec::new()).await.unwrap();
    assert_eq!(
        store.evidence(Some(one)).await.unwrap(),
        vec![
            row(one, 20_000, "timeout", 1, 0),
            row(one, 20_001, "served", 5, 42)
        ]
    );
    let all = store.evidence(None).await.unwrap();
    assert_eq!(all.len(), 3);
    let keys: Vec<(String, i64)> = all.iter().map(|r| (r.node_key.to_string(), r.day)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "by node, then day");
    assert!(store
        .evidence(Some(NodeKeyId::random()))
        .await
        .unwrap()
        .is_empty());
}

pub async fn usage_adds_into_its_minute_and_reads_by_time_and_stack(db: &TestDb) {
    let store: &Arc<dyn Store> = &db.store;
    let (a, b) = (StackId::random(), StackId::random());
    let node = NodeKeyId::random();
    let row = |minute, stack, n: u64| {
        let mut latency = [0; LATENCY_BUCKETS];
        latency[0] = n;
        latency[LATENCY_BUCKETS - 1] = 1;
        UsageRow {
            minute,
            stack,
            node_key: node,
            model: "m<1>".to_owned(),
            workload: "chat".to_owned(),
            counts: UsageCounts {
                requests: n + 1,
                errors: 1,
                input_tokens: 10 * n,
                output_tokens: 20 * n,
                cost_micros: 100 * n,
                latency,
            },
        }
    };
    store
        .add_usage(vec![row(29_000_000, a, 2), row(29_000_001, b, 1)])
        .await
        .unwrap();
    // Another replica's flush adds into the same row.
    store.add_usage(vec![row(29_000_000, a, 3)]).await.unwrap();
    store.add_usage(Vec::new()).await.unwrap();
    let mut merged = row(29_000_000, a, 5);
    merged.counts.requests = 7;
    merged.counts.errors = 2;
    merged.counts.latency[LATENCY_BUCKETS - 1] = 2;
    assert_eq!(
        store.usage_since(29_000_000, Some(a)).await.unwrap(),
        vec![merged.clone()]
    );
    assert_eq!(
        store.usage_since(0, None).await.unwrap(),
        vec![merged, row(29_000_001, b, 1)],
        "every Stack's, oldest minute first"
    );
    assert_eq!(
        store.usage_since(29_000_001, None).await.unwrap(),
        vec![row(29_000_001, b, 1)]
    );
    assert!(store
        .usage_since(0, Some(StackId::random()))
        .await
        .unwrap()
        .is_empty());
}
