//! The paperwork log and filing on PostgreSQL: the two calls that are a transaction rather than one
//! statement (an append under the schema's advisory lock; claiming paperwork for a settlement).

use std::collections::{HashMap, HashSet};

use stacknet_ledger::pg::{self, Lease};
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{is_conflict, PgStore};
use crate::store::codec::{hash32, logged, to_i64, to_u64, LogRow};
use crate::store::records::{LoggedPaperwork, PaperworkRecord};
use crate::store::traits::{LogStore, SettlementStore, StoreError, StoreFuture};

/// First half of the two-part advisory lock key that serialises appends; the second is the schema's.
const APPEND_LOCK_CLASS: i32 = 0x534b_4e50; // "SKNP"

/// The columns of a whole `paperwork_log` row, in the order [`log_of`] reads them.
macro_rules! log_columns {
    () => {
        "idx, id, contract, node_key, json, leaf_hash, accepted_at, hold, cost, captured, filed_at"
    };
}

const APPEND_LOCK: &str = "SELECT pg_advisory_xact_lock($1, $2)";
const NEXT_INDEX: &str = "SELECT COALESCE(MAX(idx) + 1, 0) FROM paperwork_log";
const LOGGED_INDEXES: &str = "SELECT id, idx FROM paperwork_log WHERE id = ANY($1)";
const INSERT_LOG: &str = "INSERT INTO paperwork_log
    (idx, id, contract, node_key, json, leaf_hash, accepted_at, hold, cost)
    SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BYTEA[],
                         $7::TEXT[], $8::TEXT[], $9::BIGINT[])";
/// Claims the unfiled ones of `$1`. The rows are locked in log order, so that two settlements racing
/// for overlapping paperwork queue instead of deadlocking; the one that waited then re-reads
/// `filed_at`, finds it set and leaves the row to the first.
const CLAIM_FOR_SETTLEMENT: &str = "UPDATE paperwork_log SET filed_at = $2, settlement = $3
    WHERE filed_at IS NULL AND idx IN (
        SELECT idx FROM paperwork_log WHERE id = ANY($1) AND filed_at IS NULL ORDER BY idx FOR UPDATE)
    RETURNING id";
const INSERT_SETTLEMENT: &str = "INSERT INTO settlements (id, created_at, done) VALUES ($1, $2, FALSE)";

impl PgStore {
    async fn append(&self, batch: Vec<PaperworkRecord>) -> Result<Vec<u64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut lease = self.pool.get().await?;
        let result = append_once(&mut lease, self.append_lock, &batch).await;
        lease.conn().end_transaction(result).await
    }

    async fn settle(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> Result<Vec<PaperworkId>, StoreError> {
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let at = at.to_string();
        let (settlement, texts_ref, at) = (&settlement, &texts, &at);
        let mut claimed = pg::retry(is_conflict, move || async move {
            let mut lease = self.pool.get().await?;
            let result = settle_once(&mut lease, settlement, texts_ref, at).await;
            lease.conn().end_transaction(result).await
        })
        .await?;
        // In the order given, each id once (as claiming them one by one would).
        Ok(ids
            .into_iter()
            .zip(texts)
            .filter_map(|(id, text)| claimed.remove(&text).then_some(id))
            .collect())
    }
}

/// One append in one transaction, left open on error for `PgConn::end_transaction` to roll back.
async fn append_once(
    lease: &mut Lease<'_>,
    lock: i32,
    batch: &[PaperworkRecord],
) -> Result<Vec<u64>, StoreError> {
    const T: &str = "paperwork_log";
    let ids: Vec<String> = batch.iter().map(|p| p.id.to_string()).collect();
    let lock_statement = lease.prepare(APPEND_LOCK).await?;
    let next_statement = lease.prepare(NEXT_INDEX).await?;
    let logged_statement = lease.prepare(LOGGED_INDEXES).await?;
    let insert = lease.prepare(INSERT_LOG).await?;
    let conn = lease.conn();
    conn.in_transaction = true;
    let client = &conn.client;
    // One round trip: the server runs these in order, so MAX(idx) is read after the lock is granted,
    // when every append that held it before has committed.
    let (_, _, next, found) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        async {
            client
                .execute(&lock_statement, &[&APPEND_LOCK_CLASS, &lock])
                .await
        },
        async { client.query_one(&next_statement, &[]).await },
        async { client.query(&logged_statement, &[&ids]).await },
    )?;
    let mut next: i64 = next.try_get(0)?;
    let mut known = found
        .iter()
        .map(|row| Ok((row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)?)))
        .collect::<Result<HashMap<_, _>, StoreError>>()?;
    let mut new = LogColumns::default();
    let mut indexes = Vec::with_capacity(batch.len());
    for (record, id) in batch.iter().zip(&ids) {
        // A repeat within the batch finds the index its first copy was given here.
        let idx = *known.entry(id.clone()).or_insert_with(|| {
            new.push(next, record, id);
            next += 1;
            next - 1
        });
        indexes.push(to_u64(T, idx)?);
    }
    if !new.idx.is_empty() {
        client.execute(&insert, &new.params()).await?;
    }
    client.batch_execute("COMMIT").await?;
    conn.in_transaction = false;
    Ok(indexes)
}

/// One `begin_settlement` in one transaction: the ids it claimed.
async fn settle_once(
    lease: &mut Lease<'_>,
    settlement: &str,
    ids: &[String],
    at: &str,
) -> Result<HashSet<String>, StoreError> {
    let claim = lease.prepare(CLAIM_FOR_SETTLEMENT).await?;
    let insert = lease.prepare(INSERT_SETTLEMENT).await?;
    let conn = lease.conn();
    conn.in_transaction = true;
    let client = &conn.client;
    let (_, rows) = tokio::try_join!(client.batch_execute("BEGIN"), async {
        client.query(&claim, &[&ids, &at, &settlement]).await
    })?;
    let claimed = rows
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<HashSet<String>, _>>()?;
    if !claimed.is_empty() {
        client.execute(&insert, &[&settlement, &at]).await?;
    }
    client.batch_execute("COMMIT").await?;
    conn.in_transaction = false;
    Ok(claimed)
}

/// New log rows as one array per column, for one `INSERT ... SELECT * FROM UNNEST(...)`.
#[derive(Default)]
struct LogColumns<'a> {
    idx: Vec<i64>,
    id: Vec<&'a str>,
    contract: Vec<&'a str>,
    node_key: Vec<String>,
    json: Vec<&'a str>,
    leaf_hash: Vec<&'a [u8]>,
    accepted_at: Vec<String>,
    hold: Vec<Option<&'a str>>,
    cost: Vec<i64>,
}

impl<'a> LogColumns<'a> {
    fn push(&mut self, idx: i64, p: &'a PaperworkRecord, id: &'a str) {
        self.idx.push(idx);
        self.id.push(id);
        self.contract.push(&p.contract);
        self.node_key.push(p.node_key.to_string());
        self.json.push(&p.json);
        self.leaf_hash.push(&p.leaf_hash);
        self.accepted_at.push(p.accepted_at.to_string());
        self.hold.push(p.hold.as_deref());
        self.cost.push(p.cost.micros());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.idx,
            &self.id,
            &self.contract,
            &self.node_key,
            &self.json,
            &self.leaf_hash,
            &self.accepted_at,
            &self.hold,
            &self.cost,
        ]
    }
}

/// A row that starts with `log_columns!()`.
fn log_of(row: &Row) -> Result<LoggedPaperwork, StoreError> {
    logged(LogRow {
        idx: row.try_get(0)?,
        id: row.try_get(1)?,
        contract: row.try_get(2)?,
        node_key: row.try_get(3)?,
        json: row.try_get(4)?,
        leaf: row.try_get(5)?,
        accepted_at: row.try_get(6)?,
        hold: row.try_get(7)?,
        cost: row.try_get(8)?,
        captured: row.try_get(9)?,
        filed_at: row.try_get(10)?,
    })
}

/// A stable 32-bit key for `schema` (FNV-1a): the same on every replica, unlike Rust's hashers.
pub(super) fn lock_key(schema: &str) -> i32 {
    let hash = schema.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_be_bytes(hash.to_be_bytes())
}

impl LogStore for PgStore {
    fn append_paperwork(&self, batch: Vec<PaperworkRecord>) -> StoreFuture<'_, Vec<u64>> {
        Box::pin(self.append(batch))
    }

    fn paperwork(&self, id: PaperworkId) -> StoreFuture<'_, Option<LoggedPaperwork>> {
        Box::pin(async move {
            let sql = concat!("SELECT ", log_columns!(), " FROM paperwork_log WHERE id = $1");
            let rows = self.query(sql, &[&id.to_string()]).await?;
            rows.first().map(log_of).transpose()
        })
    }

    fn leaf_hashes(&self, from: u64) -> StoreFuture<'_, Vec<[u8; 32]>> {
        Box::pin(async move {
            let sql = "SELECT leaf_hash FROM paperwork_log WHERE idx >= $1 ORDER BY idx";
            let rows = self.query(sql, &[&to_i64(from)]).await?;
            rows.iter()
                .map(|row| hash32("paperwork_log", row.try_get(0)?))
                .collect()
        })
    }

    fn uncaptured(&self) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                log_columns!(),
                " FROM paperwork_log WHERE NOT captured ORDER BY idx"
            );
            self.query(sql, &[]).await?.iter().map(log_of).collect()
        })
    }

    fn mark_captured(&self, captured: Vec<(PaperworkId, Amount)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // An id given twice gets its last amount, as when the updates run one by one.
            let last: HashMap<PaperworkId, i64> =
                captured.iter().map(|(id, cost)| (*id, cost.micros())).collect();
            if last.is_empty() {
                return Ok(());
            }
            let (ids, costs): (Vec<String>, Vec<i64>) =
                last.iter().map(|(id, c)| (id.to_string(), *c)).unzip();
            let sql = "UPDATE paperwork_log SET captured = TRUE, cost = c.cost
                 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS c(id, cost) WHERE paperwork_log.id = c.id";
            self.execute(sql, &[&ids, &costs]).await?;
            Ok(())
        })
    }

    fn logged_of(&self, node: NodeKeyId, from: u64, to: u64) -> StoreFuture<'_, Vec<LoggedPaperwork>> {
        Box::pin(async move {
            let sql = concat!(
                "SELECT ",
                log_columns!(),
                " FROM paperwork_log WHERE idx >= $1 AND idx < $2 AND node_key = $3 ORDER BY idx"
            );
            let rows = self
                .query(sql, &[&to_i64(from), &to_i64(to), &node.to_string()])
                .await?;
            rows.iter().map(log_of).collect()
        })
    }

    fn paperwork_many(&self, ids: Vec<PaperworkId>) -> StoreFuture<'_, Vec<Option<LoggedPaperwork>>> {
        Box::pin(async move {
            let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
            // The state only: the documents stay on disk (TOAST), as `Store::paperwork_many` says.
            let sql = "SELECT idx, id, contract, node_key, '' AS json, leaf_hash, accepted_at, hold, cost, \
                       captured, filed_at FROM paperwork_log WHERE id = ANY($1)";
            let found = self
                .query(sql, &[&texts])
                .await?
                .iter()
                .map(|row| log_of(row).map(|p| (p.record.id, p)))
                .collect::<Result<HashMap<_, _>, _>>()?;
            Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
        })
    }
}

impl SettlementStore for PgStore {
    fn begin_settlement(
        &self,
        settlement: String,
        ids: Vec<PaperworkId>,
        at: Timestamp,
    ) -> StoreFuture<'_, Vec<PaperworkId>> {
        Box::pin(self.settle(settlement, ids, at))
    }

    fn finish_settlement(&self, settlement: String) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.execute("UPDATE settlements SET done = TRUE WHERE id = $1", &[&settlement])
                .await?;
            Ok(())
        })
    }

    fn open_settlements(&self) -> StoreFuture<'_, Vec<(String, Vec<LoggedPaperwork>)>> {
        Box::pin(async move {
            let sql = "SELECT id FROM settlements WHERE NOT done ORDER BY created_at, id";
            let open = self
                .query(sql, &[])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<String>, _>>()?;
            if open.is_empty() {
                return Ok(Vec::new());
            }
            let sql = concat!(
                "SELECT ",
                log_columns!(),
                ", settlement FROM paperwork_log WHERE settlement = ANY($1) ORDER BY idx"
            );
            let mut filed: HashMap<String, Vec<LoggedPaperwork>> = HashMap::new();
            for row in self.query(sql, &[&open]).await? {
                let settlement: String = row.try_get(11)?;
                filed.entry(settlement).or_default().push(log_of(&row)?);
            }
            Ok(open
                .into_iter()
                .map(|id| {
                    let paperwork = filed.remove(&id).unwrap_or_default();
                    (id, paperwork)
                })
                .collect())
        })
    }

    fn claim_event(&self, kind: &'static str, id: String, at: Timestamp) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = "INSERT INTO events (kind, id, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
            Ok(self.execute(sql, &[&kind, &id, &at.to_string()]).await? == 1)
        })
    }

    fn claim_nonce(
        &self,
        kind: &'static str,
        nonce: String,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let at = at.to_string();
            let forget = "DELETE FROM events WHERE kind = $1 AND expires_at < $2";
            self.execute(forget, &[&kind, &at]).await?;
            let sql = "INSERT INTO events (kind, id, seen_at, expires_at) VALUES ($1, $2, $3, $4) \
                       ON CONFLICT DO NOTHING";
            let expires_at = expires_at.to_string();
            Ok(self.execute(sql, &[&kind, &nonce, &at, &expires_at]).await? == 1)
        })
    }

    fn events_held(&self, kind: &'static str) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let rows = self
                .query("SELECT COUNT(*) FROM events WHERE kind = $1", &[&kind])
                .await?;
            let n: i64 = match rows.first() {
                Some(row) => row.try_get(0)?,
                None => 0,
            };
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
