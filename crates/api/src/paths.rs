//! Every endpoint of the hub, by path. Axum route patterns use `{name}` for path parameters; the
//! functions below fill them in for clients.

pub const HEALTHZ: &str = "/healthz";
/// Prometheus metrics (hub, and a node with `--metrics-listen`).
pub const METRICS: &str = "/metrics";
/// The dashboard's pages (HTML): the network, a node, a Stack's own (its API key posted in a form).
pub const DASHBOARD: &str = "/";
pub const DASHBOARD_NODE: &str = "/nodes/{id}";
pub const DASHBOARD_STACK: &str = "/stack";
pub const MODELS: &str = "/v1/models";
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
pub const COMPLETIONS: &str = "/v1/completions";
pub const EMBEDDINGS: &str = "/v1/embeddings";
pub const IMAGE_EDITS: &str = "/v1/images/edits";
pub const IMAGE_GENERATIONS: &str = "/v1/images/generations";
/// Video jobs: create (`POST`), list (`GET`).
pub const VIDEOS: &str = "/v1/videos";
/// One video job: its status (`GET`), cancel or delete (`DELETE`).
pub const VIDEO: &str = "/v1/videos/{id}";
/// A finished video's file.
pub const VIDEO_CONTENT: &str = "/v1/videos/{id}/content";
/// A new job from a finished one, with a new prompt.
pub const VIDEO_REMIX: &str = "/v1/videos/{id}/remix";
/// Text to speech: audio bytes out.
pub const AUDIO_SPEECH: &str = "/v1/audio/speech";
/// Speech to text: an uploaded audio file in.
pub const AUDIO_TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";
/// Sandboxed code execution, in the shape of Piston's `execute`.
pub const EXECUTE: &str = "/stacknet/v1/execute";
/// A page fetched by a node, as readable markdown.
pub const FETCH: &str = "/stacknet/v1/fetch";
/// Web search, in the shape of LiteLLM's search API.
pub const SEARCH: &str = "/v1/search";
/// A call of a tool an operator installed on a node, in the shape of MCP's `tools/call`.
pub const TOOL_CALL: &str = "/stacknet/v1/tools/call";
/// The network's tools over MCP (streamable HTTP).
pub const MCP: &str = "/mcp";

pub const HUB_INFO: &str = "/stacknet/v1/hub";
/// The node gateway (WebSocket).
pub const NODE_GATEWAY: &str = "/stacknet/v1/nodes/connect";
pub const PAPERWORK: &str = "/stacknet/v1/paperwork/{id}";
/// A file the hub serves by URL for a while (images answered with `response_format: url`).
pub const FILE: &str = "/stacknet/v1/files/{id}";
pub const ADMIN_STACKS: &str = "/stacknet/v1/admin/stacks";
pub const ADMIN_STACK_KEYS: &str = "/stacknet/v1/admin/stacks/{id}/keys";
/// One API key, named by the prefix it is listed with: `DELETE` revokes it.
pub const ADMIN_KEY: &str = "/stacknet/v1/admin/keys/{prefix}";
pub const ADMIN_STACK_TOPUP: &str = "/stacknet/v1/admin/stacks/{id}/topup";
pub const ADMIN_TREASURY_TOPUP: &str = "/stacknet/v1/admin/treasury/topup";
pub const ADMIN_PRICES: &str = "/stacknet/v1/admin/prices";
pub const WEBHOOK_PAYMENTS: &str = "/stacknet/v1/webhooks/payments";
pub const WEBHOOK_PAYOUTS: &str = "/stacknet/v1/webhooks/payouts";
pub const STACK_STATEMENT: &str = "/stacknet/v1/statement";
pub const NODE_STATEMENT: &str = "/stacknet/v1/nodes/statement";
pub const NODE_FILE: &str = "/stacknet/v1/nodes/file";
pub const NODE_REDEEM: &str = "/stacknet/v1/nodes/redeem";
/// A signed `logged` request: the key's paperwork in the log, a page from an index.
pub const NODE_LOGGED: &str = "/stacknet/v1/nodes/logged";
pub const LOG_CHECKPOINT: &str = "/stacknet/v1/log/checkpoint";
pub const LOG_INCLUSION: &str = "/stacknet/v1/log/proof/inclusion";
pub const LOG_CONSISTENCY: &str = "/stacknet/v1/log/proof/consistency";
/// A key's stake: a signed `Stake`, `Bond`, `Unbond` or `Withdraw` request.
pub const STAKE: &str = "/stacknet/v1/stake";
/// A validator's work: a signed `Assignments`, `Commit` or `Reveal` request.
pub const VALIDATION: &str = "/stacknet/v1/validation";
/// Public: attestations and slashes (`?node=`, `?paperwork=`).
pub const ATTESTATIONS: &str = "/stacknet/v1/attestations";
/// `POST`: the admin commits a canary (a kept task and its expected verdict).
pub const ADMIN_CANARIES: &str = "/stacknet/v1/admin/canaries";
/// A guardian's work: a signed `probe` or `telemetry` request.
pub const GUARDIAN: &str = "/stacknet/v1/guardian";
/// Public: every node the hub knows, with its reputation.
pub const NODES: &str = "/stacknet/v1/nodes";
/// Public: one node's reputation, with the evidence it is computed from.
pub const NODE: &str = "/stacknet/v1/nodes/{id}";
/// A Stack's injections (owner key): `GET` lists, `POST` creates.
pub const INJECTIONS: &str = "/stacknet/v1/injections";
/// One injection: `GET` (with `?versions=true`, every version), `PUT` a new version, `DELETE` turns it off.
pub const INJECTION: &str = "/stacknet/v1/injections/{id}";
/// The skills registry: `GET` is public, `POST` publishes (owner key).
pub const SKILLS: &str = "/stacknet/v1/skills";
/// One skill: `GET` public, `PUT` a new version, `DELETE` unpublishes (its creator's owner key).
pub const SKILL: &str = "/stacknet/v1/skills/{id}";
/// `POST` (its creator's owner key): moves a skill's royalties into its Stack's balance.
pub const SKILL_COLLECT: &str = "/stacknet/v1/skills/{id}/collect";
/// A Stack's referral codes (owner key): `GET` lists them with whom they brought, `POST` makes one.
pub const REFERRALS: &str = "/stacknet/v1/referrals";
/// A node registers with a referral code: a signed `refer` request.
pub const NODE_REFERRER: &str = "/stacknet/v1/nodes/referrer";
/// The Node Key market: `GET` the open listings; `POST` a signed `list` or `unlist` request.
pub const MARKET_KEYS: &str = "/stacknet/v1/market/keys";
/// Public: one Node Key id's state, listing and rebindings.
pub const MARKET_KEY: &str = "/stacknet/v1/market/keys/{id}";
/// Public: every Node Key binding, in the order the checkpoints' bindings line commits to.
pub const MARKET_BINDINGS: &str = "/stacknet/v1/market/bindings";
/// `POST` (an owner API key of the buying Stack): buys the listed key.
pub const MARKET_BUY: &str = "/stacknet/v1/market/keys/{id}/buy";
/// Credits to a node key's earnings account.
pub const ADMIN_NODE_TOPUP: &str = "/stacknet/v1/admin/nodes/{id}/topup";

/// `/stacknet/v1/admin/nodes/{id}/topup` for one node key.
pub fn admin_node_topup(id: &impl std::fmt::Display) -> String {
    ADMIN_NODE_TOPUP.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/nodes/{id}` for one node key.
pub fn node(id: &impl std::fmt::Display) -> String {
    NODE.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/paperwork/{id}` for one paperwork.
pub fn file(id: &str) -> String {
    FILE.replace("{id}", id)
}

pub fn paperwork(id: &impl std::fmt::Display) -> String {
    PAPERWORK.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/admin/stacks/{id}/keys` for one Stack.
pub fn admin_stack_keys(id: &impl std::fmt::Display) -> String {
    ADMIN_STACK_KEYS.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/admin/keys/{prefix}` for one API key.
pub fn admin_key(prefix: &str) -> String {
    ADMIN_KEY.replace("{prefix}", prefix)
}

/// `/stacknet/v1/admin/stacks/{id}/topup` for one Stack.
pub fn admin_stack_topup(id: &impl std::fmt::Display) -> String {
    ADMIN_STACK_TOPUP.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/injections/{id}` for one injection.
pub fn injection(id: &impl std::fmt::Display) -> String {
    INJECTION.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/skills/{id}/collect` for one skill.
pub fn skill_collect(id: &impl std::fmt::Display) -> String {
    SKILL_COLLECT.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/skills/{id}` for one skill.
pub fn skill(id: &impl std::fmt::Display) -> String {
    SKILL.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/market/keys/{id}` for one Node Key id.
pub fn market_key(id: &impl std::fmt::Display) -> String {
    MARKET_KEY.replace("{id}", &id.to_string())
}

/// `/stacknet/v1/market/keys/{id}/buy` for one Node Key id.
pub fn market_buy(id: &impl std::fmt::Display) -> String {
    MARKET_BUY.replace("{id}", &id.to_string())
}
