//! Bodies of the hub's own endpoints, shared by the hub's handlers and its clients (node, CLI,
//! tests), so neither side keeps a copy. This file holds the hub's description and filing; the
//! admin API and money after the task have their own modules, re-exported here.

mod admin;
mod log;
mod settle;
mod validate;

pub use admin::{
    NewKey, NewStack, Price, PriceList, RevokedKey, SetPrice, Stack, StackList, TopUp, TopUpAnswer,
};
pub use log::{ConsistencyProof, ConsistencyQuery, InclusionProof, InclusionQuery, LogCheckpoint};
pub use settle::{
    Balance, Direction, NodeStatement, PaymentAnswer, PaymentEvent, Payout, PayoutAck, PayoutCallback,
    PayoutCallbackAnswer, PayoutRequest, PayoutState, StackStatement, Statement, StatementLine,
    StatementQuery,
};
pub use validate::{
    Assignment, Assignments, AttestationList, AttestationQuery, NodeTopUp, Round, Slash, StakeStatus,
    TaskOutcome, Unbonding, ValidationAck,
};

use serde::{Deserialize, Serialize};
use stacknet_protocol::filing::Filing;
use stacknet_protocol::paperwork::Paperwork;
use stacknet_protocol::{Amount, NodeKeyId, PublicKey, Signed};

/// Every refusal, on every endpoint (and as the last event of a refused stream), OpenAI's shape:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `billing_error`, `api_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// A stable code to match on (`invalid_api_key`, `insufficient_balance`, ...).
    pub code: Option<String>,
}

impl ErrorBody {
    /// The message of an error body, from any JSON a server answered with.
    pub fn message_of(v: &serde_json::Value) -> Option<String> {
        ErrorBody::deserialize(v).ok().map(|b| b.error.message)
    }
}

/// `GET /stacknet/v1/hub`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubInfo {
    /// The hub key that signs contracts, checkpoints and filing verdicts.
    pub hub_key: PublicKey,
    pub protocol_version: u64,
    pub software: String,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    /// Nodes connected now.
    pub nodes: u64,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(models: impl IntoIterator<Item = String>) -> Self {
        Self {
            object: "list".to_owned(),
            data: models
                .into_iter()
                .map(|id| Model {
                    id,
                    object: "model".to_owned(),
                    created: 0,
                    owned_by: "stacknet".to_owned(),
                })
                .collect(),
        }
    }
}

/// `POST /stacknet/v1/nodes/file`: a signed filing and the documents it lists.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilingRequest {
    pub filing: Signed<Filing>,
    /// The documents the filing lists, in any order.
    pub paperwork: Vec<Signed<Paperwork>>,
}

pub use stacknet_protocol::filing::{FilingVerdict, Verdict};

/// One paperwork's verdict in a filing answer, signed by the hub key.
pub type FiledPaperwork = Signed<FilingVerdict>;

/// The answer to a filing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilingAnswer {
    pub node_key: NodeKeyId,
    /// The total settled by this filing (the sum of the signed verdicts' amounts).
    pub settled: Amount,
    pub results: Vec<FiledPaperwork>,
}

#[cfg(test)]
mod tests;
