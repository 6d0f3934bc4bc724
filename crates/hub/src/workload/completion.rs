//! `POST /v1/completions` (legacy text completions): the text API of `chat`, under its own path
//! and object name.

use stacknet_protocol::contract::Workload;

use super::chat::Text;

pub const COMPLETION: Text = Text {
    workload: Workload::Completion,
    path: stacknet_api::paths::COMPLETIONS,
    object: "text_completion",
};
