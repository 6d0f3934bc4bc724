//! Any bytes a peer may send as a WebSocket frame, text or binary: decoding must never panic, and
//! what decodes must encode again and decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacknet_protocol::wire::{self, HubMessage, NodeMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = wire::decode::<NodeMessage>(data) {
        let again = wire::encode(&msg).expect("a decoded message encodes");
        assert_eq!(wire::decode::<NodeMessage>(again.as_bytes()).ok(), Some(msg));
    }
    if let Ok(msg) = wire::decode::<HubMessage>(data) {
        let again = wire::encode(&msg).expect("a decoded message encodes");
        assert_eq!(wire::decode::<HubMessage>(again.as_bytes()).ok(), Some(msg));
    }
    if let Ok(part) = wire::decode_file_part(data) {
        assert_eq!(part.encode(), data);
    }
});
