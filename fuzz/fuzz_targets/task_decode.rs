//! Any text frame a hub may send a node: the node decodes it as a hub message and, when that fails,
//! reads just the type and contract id to refuse a task it cannot decode. Neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacknet_protocol::wire::{self, HubMessage};

fuzz_target!(|data: &[u8]| {
    match wire::decode::<HubMessage>(data) {
        Ok(msg) => {
            let again = wire::encode(&msg).expect("a decoded message encodes");
            assert_eq!(wire::decode::<HubMessage>(again.as_bytes()).ok(), Some(msg));
        }
        Err(_) => {
            if let Some(contract) = wire::undecodable_task(data) {
                let text = contract.to_string();
                assert_eq!(text.parse().ok(), Some(contract), "the refusal names a valid id");
            }
        }
    }
});
