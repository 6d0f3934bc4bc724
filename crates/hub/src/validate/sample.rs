//! Sampling, decided after the commitment: when the settle writer has appended a batch to the log,
//! each paperwork is sampled iff SHA-256(new root || paperwork id), read as a number, is below the
//! worker's rate. Nobody knows the root before the batch is logged, so a worker cannot tell which
//! of its tasks will be checked. The same hash draws the validators, weighted by their bonds.
//!
//! Recoverable: after each batch the store records the log size sampled through
//! ([`crate::store::ValidationStore::set_sampled_through`]). A hub that stopped between logging a
//! batch and sampling it samples, at its next start ([`recover`]), every paperwork logged after that
//! size with the root of the log as loaded, which for a hub that crashed there is the root the batch
//! would have been sampled with: the same draw, the same decision. (Replicas on PostgreSQL share the
//! mark and each samples its own batches; a replica that crashed before sampling while another
//! moved the mark past its batch leaves that batch unsampled, which costs its workers nothing.)

use sha2::{Digest, Sha256};
use stacknet_api::types::Round;
use stacknet_protocol::{NodeKeyId, PaperworkId, PublicKey, Sha256Digest, Timestamp};

use super::{Case, Member, RoundState, Status, Validation};
use crate::store::WorkerStats;

/// Basis points in one.
pub const BPS: u64 = 10_000;
/// How often kept material past its challenge window is forgotten.
pub const FORGET_EVERY_MS: i64 = 60_000;

/// The sampling rate for a worker with `stats` (before this task), in basis points.
pub fn rate_bps(v: &Validation, stats: &WorkerStats) -> u64 {
    let r = &v.rules;
    if stats.tasks < r.probation_tasks {
        BPS
    } else if stats.convictions == 0 && stats.checks >= r.established_after_checks {
        u64::from(r.established_sample_bps)
    } else {
        u64::from(r.new_sample_bps)
    }
}

/// SHA-256(root || paperwork id).
pub fn sample_hash(root: &[u8; 32], id: &PaperworkId) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(root);
    h.update(id.as_bytes());
    Sha256Digest(h.finalize().into())
}

/// The hash read as a number, below `rate_bps` of the whole range.
pub fn is_sampled(hash: &Sha256Digest, rate_bps: u64) -> bool {
    if rate_bps >= BPS {
        return true;
    }
    let mut top = [0u8; 8];
    top.copy_from_slice(&hash.0[..8]);
    let x = u128::from(u64::from_be_bytes(top));
    x * u128::from(BPS) < u128::from(rate_bps) << 64
}

/// Decides the sampling of a logged batch whose new head (size, root) is `head`, then records the
/// log as sampled through that size. Never fails the writer: a failure is logged (the task then goes
/// unchecked, which costs the worker nothing).
pub async fn on_logged(v: &Validation, head: (u64, [u8; 32]), batch: &[(PaperworkId, NodeKeyId)]) {
    if v.crash_before_sampling.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            tasks = batch.len(),
            "test hook: the batch is logged and left unsampled, as a crash here would"
        );
        return;
    }
    let (size, root) = head;
    let _guard = v.lock().await;
    for (id, node) in batch {
        if let Err(e) = sample_one(v, &root, *id, *node).await {
            tracing::error!(paperwork = %id, error = %e, "cannot decide the sampling of a logged task");
        }
    }
    if let Err(e) = v.store.set_sampled_through(size).await {
        tracing::warn!(error = %e, size, "cannot record the log size sampled through; the next start samples the batch again");
    }
    drop(_guard);
    forget_old(v).await;
}

/// At start, before the writer: samples the paperwork logged after the size last sampled through
/// (a crash between logging and sampling), by the root of the log as loaded. A store that never
/// recorded a size (it predates this) is marked sampled through its whole log.
pub async fn recover(v: &Validation, head: (u64, [u8; 32])) -> Result<(), String> {
    let (size, _) = head;
    let through = v.store.sampled_through().await.map_err(|e| e.to_string())?;
    let Some(through) = through else {
        return v.store.set_sampled_through(size).await.map_err(|e| e.to_string());
    };
    if through >= size {
        return Ok(());
    }
    let mut batch = v.store.logged_since(through).await.map_err(|e| e.to_string())?;
    batch.truncate(usize::try_from(size - through).unwrap_or(usize::MAX));
    tracing::info!(
        from = through,
        to = size,
        "sampling paperwork logged before a stop and not sampled yet"
    );
    on_logged(v, head, &batch).await;
    Ok(())
}

async fn sample_one(v: &Validation, root: &[u8; 32], id: PaperworkId, node: NodeKeyId) -> Result<(), String> {
    let delta = WorkerStats {
        tasks: 1,
        ..WorkerStats::default()
    };
    let stats = v
        .store
        .bump_worker(node, delta)
        .await
        .map_err(|e| e.to_string())?;
    let hash = sample_hash(root, &id);
    if !is_sampled(&hash, rate_bps(v, &stats)) {
        return Ok(());
    }
    if v.store.case(id).await.map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let mut case = Case {
        paperwork: id,
        node_key: node,
        status: Status::Pending,
        seed: hash,
        canary: None,
        rounds: Vec::new(),
        code: None,
        convictors: Vec::new(),
        settled: false,
        opened_at: Timestamp::now(),
    };
    // With no validator to check it, the task is not held up: it stays filable, unchecked.
    if open_round(v, &mut case, Round::Check, &[node]).await? == 0 {
        tracing::debug!(paperwork = %id, %node, "sampled, but no bonded validator can check it");
        return Ok(());
    }
    tracing::info!(paperwork = %id, %node, "task sampled for validation");
    v.put(&case).await
}

/// Opens a round of `round` on `case`, drawn from the eligible validators but those in `exclude`
/// (the worker; for a committee, the first checker when there are enough others); returns how
/// many members it has (0: nobody could be drawn, and no round was opened).
pub async fn open_round(
    v: &Validation,
    case: &mut Case,
    round: Round,
    exclude: &[NodeKeyId],
) -> Result<usize, String> {
    let size = match round {
        Round::Check => 1,
        Round::Committee => v.rules.committee_size.max(1),
    };
    let salt = u32::try_from(case.rounds.len()).unwrap_or(u32::MAX);
    let members = draw(v, &case.seed, salt, size, exclude).await?;
    if members.is_empty() {
        return Ok(0);
    }
    let n = members.len();
    case.rounds.push(RoundState {
        round,
        commit_by: Timestamp::now().plus_ms(i64::try_from(v.rules.commit_window_ms).unwrap_or(i64::MAX)),
        members: members.into_iter().map(Member::new).collect(),
        decided: false,
    });
    Ok(n)
}

/// Up to `count` distinct eligible validators, not in `exclude`, each drawn with a chance
/// proportional to its bond, from SHA-256(seed || salt || i).
pub async fn draw(
    v: &Validation,
    seed: &Sha256Digest,
    salt: u32,
    count: usize,
    exclude: &[NodeKeyId],
) -> Result<Vec<PublicKey>, String> {
    let mut pool: Vec<(PublicKey, u128)> = Vec::new();
    for r in v.store.validators().await.map_err(|e| e.to_string())? {
        let id = r.key.node_key_id();
        if exclude.contains(&id) || !v.eligible(id).await? {
            continue;
        }
        let bond = u128::try_from(v.bonded(id).await?.micros()).unwrap_or(0);
        pool.push((r.key, bond.max(1)));
    }
    let mut out = Vec::new();
    let mut i: u32 = 0;
    while out.len() < count && !pool.is_empty() {
        let mut h = Sha256::new();
        h.update(seed.0);
        h.update(salt.to_be_bytes());
        h.update(i.to_be_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut top = [0u8; 16];
        top.copy_from_slice(&digest[..16]);
        let total: u128 = pool.iter().map(|(_, w)| *w).sum();
        let mut ticket = u128::from_be_bytes(top) % total;
        let mut chosen = pool.len() - 1;
        for (k, (_, w)) in pool.iter().enumerate() {
            if ticket < *w {
                chosen = k;
                break;
            }
            ticket -= w;
        }
        out.push(pool.remove(chosen).0);
        i += 1;
    }
    Ok(out)
}

/// Forgets kept material past the challenge window (at most once a minute).
async fn forget_old(v: &Validation) {
    use std::sync::atomic::Ordering;
    let now = Timestamp::now().unix_ms();
    let last = v.last_forget.load(Ordering::Relaxed);
    if now - last < FORGET_EVERY_MS
        || v.last_forget
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let window = i64::try_from(v.challenge_window_ms).unwrap_or(i64::MAX);
    let before = Timestamp::now().plus_ms(-window);
    match v.store.forget_kept(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            forgotten = n,
            "kept task material past its challenge window forgotten"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot forget old kept task material"),
    }
}
