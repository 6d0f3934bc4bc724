//! The ledger moves of validation. Each transfer's id derives from the task and the key
//! (`fee:<pw>:<round>:<nk>`, `slash:<reason>:<pw>:<nk>` and `slash-unbonding:<reason>:<pw>:<nk>`,
//! `reward:<pw>:<nk>`, `refund:<pw>`), so a retry replays instead of moving money twice; a slash's
//! amount and its split between bond and unbonding are recorded with its slash row first, so a
//! retry moves the same amounts whatever the accounts hold by then.

use stacknet_api::types::Slash;
use stacknet_ledger::{AccountId, LedgerError, Reason, Transfer, TransferId};
use stacknet_protocol::{Amount, NodeKeyId, PaperworkId, Signed, Timestamp};

use super::sample::BPS;
use super::Validation;
use crate::money::apply_retrying;

fn tid(s: &str) -> Result<TransferId, String> {
    TransferId::new(s).map_err(|e| e.to_string())
}

async fn transfer(v: &Validation, t: Transfer) -> Result<(), LedgerError> {
    apply_retrying(&v.ledger, vec![t.into()]).await.map(|_| ())
}

/// `amount` × `bps` / 10 000, rounded down.
pub fn share(amount: Amount, bps: u32) -> Amount {
    let m = i128::from(amount.micros()) * i128::from(bps) / i128::from(BPS);
    Amount::from_micros(i64::try_from(m).unwrap_or(0))
}

/// The verification fee for one revealed check, from the treasury (skipped, with a log line,
/// when the treasury cannot cover it).
pub async fn fee(
    v: &Validation,
    paperwork: PaperworkId,
    round: usize,
    validator: NodeKeyId,
) -> Result<(), String> {
    let amount = v.rules.verification_fee;
    if amount.micros() <= 0 {
        return Ok(());
    }
    let t = Transfer::posted(
        tid(&format!("fee:{paperwork}:{round}:{validator}"))?,
        AccountId::treasury(),
        AccountId::node(validator),
        amount,
        Reason::Fee,
    );
    match transfer(v, t).await {
        Ok(()) => Ok(()),
        Err(LedgerError::InsufficientFunds { available, .. }) => {
            tracing::warn!(%available, fee = %amount, %paperwork, "the treasury cannot pay a verification fee (fund it with `stacknet admin topup --treasury`); it is skipped");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Slashes `slash_bps` of what `offender` has bonded and is unbonding (unbonding first is no
/// escape) to the treasury for `paperwork`, taking from its stake first, then from its unbonding
/// account; records the slash (`reason`: convicted, equivocation, canary_pass, canary_fail), cuts
/// its unbonding rows by what was taken from them, pays `rewarded` their even share of
/// `convictor_reward_bps` of it from the treasury, and refreshes the routing map's record of its
/// bond. Returns the amount slashed.
///
/// Order, so that a retry (or a crash between steps, then a retry) moves everything once: the slash
/// row with its split first (a retry reads it back instead of recomputing from balances that moved),
/// then the unbonding rows (cut once per slash id), then the ledger (ids derived from the slash's).
/// A crash after the rows and before the ledger leaves money in the unbonding account that no row
/// releases, never a row that releases money that is not there.
pub async fn slash(
    v: &Validation,
    offender: NodeKeyId,
    paperwork: PaperworkId,
    reason: &str,
    code: Option<String>,
    rewarded: &[NodeKeyId],
) -> Result<Amount, String> {
    let id = format!("slash:{reason}:{paperwork}:{offender}");
    let (stake, unbonding) = v.slashable(offender).await?;
    let total = Amount::from_micros(stake.micros().saturating_add(unbonding.micros()));
    let computed = share(total, v.rules.slash_bps);
    let row = Slash {
        node_key: offender,
        amount: computed,
        from_unbonding: Amount::from_micros(computed.micros().saturating_sub(stake.micros()).max(0)),
        reason: reason.to_owned(),
        paperwork,
        code,
        at: Timestamp::now(),
    };
    let row = if v
        .store
        .add_slash(id.clone(), row.clone())
        .await
        .map_err(|e| e.to_string())?
    {
        v.metrics.slash(reason);
        row
    } else {
        // Recorded by an earlier try: move what it recorded.
        v.store
            .slashes(Some(offender))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|s| s.paperwork == paperwork && s.reason == reason)
            .ok_or_else(|| format!("the slash {id} is recorded but cannot be read back"))?
    };
    let amount = row.amount;
    tracing::warn!(node = %offender, %paperwork, %amount, from_unbonding = %row.from_unbonding, reason, "slashed");
    if amount.micros() <= 0 {
        return Ok(amount);
    }
    let from_unbonding = row.from_unbonding;
    let from_stake = Amount::from_micros(amount.micros() - from_unbonding.micros());
    if from_unbonding.micros() > 0 {
        // A record left without its ledger move by a crash must not take a share of the cut.
        crate::stake::unbondings(v.store.as_ref(), v.ledger.as_ref(), offender, true).await?;
        v.store
            .slash_unbondings(id.clone(), offender, from_unbonding, row.at)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut moves = Vec::with_capacity(2);
    if from_stake.micros() > 0 {
        moves.push(Transfer::posted(
            tid(&id)?,
            AccountId::stake(offender),
            AccountId::treasury(),
            from_stake,
            Reason::Slash,
        ));
    }
    if from_unbonding.micros() > 0 {
        moves.push(Transfer::posted(
            tid(&format!("slash-unbonding:{reason}:{paperwork}:{offender}"))?,
            AccountId::unbonding(offender),
            AccountId::treasury(),
            from_unbonding,
            Reason::Slash,
        ));
    }
    apply_retrying(&v.ledger, moves.into_iter().map(Into::into).collect())
        .await
        .map_err(|e| e.to_string())?;
    v.refresh_bond(offender).await?;
    if !rewarded.is_empty() {
        let each = share(amount, v.rules.convictor_reward_bps).micros() / rewarded.len() as i64;
        for r in rewarded.iter().filter(|_| each > 0) {
            let t = Transfer::posted(
                tid(&format!("reward:{paperwork}:{r}"))?,
                AccountId::treasury(),
                AccountId::node(*r),
                Amount::from_micros(each),
                Reason::Reward,
            );
            transfer(v, t).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(amount)
}

/// Gives a convicted task's captured cost back to its Stack, out of escrow.
pub async fn refund(v: &Validation, paperwork: PaperworkId) -> Result<Amount, String> {
    let logged = v
        .store
        .paperwork(paperwork)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{paperwork} is not in the log"))?;
    if logged.filed_at.is_some() {
        return Err(format!("{paperwork} was filed already: its cost was shared out"));
    }
    let cost = logged.record.cost;
    if !logged.captured || cost.micros() <= 0 {
        return Ok(Amount::ZERO);
    }
    let doc: Signed<stacknet_protocol::paperwork::Paperwork> =
        serde_json::from_str(&logged.record.json).map_err(|e| e.to_string())?;
    let stack = doc.body.contract.body.stack;
    let t = Transfer::posted(
        tid(&format!("refund:{paperwork}"))?,
        AccountId::escrow(),
        AccountId::stack(stack),
        cost,
        Reason::Refund,
    );
    transfer(v, t).await.map_err(|e| e.to_string())?;
    Ok(cost)
}
