//! Paperwork and attributions from untrusted JSON: parsing and checking must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacknet_protocol::fingerprint::Attribution;
use stacknet_protocol::paperwork::{check_paperwork, Paperwork};
use stacknet_protocol::{examples, Signed};

fuzz_target!(|data: &[u8]| {
    if let Ok(pw) = serde_json_from(data) {
        let _ = check_paperwork(&pw, &examples::hub_key().public_key());
    }
    if let Ok(a) = serde_json::from_slice::<Attribution>(data) {
        let _ = a.verify();
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = stacknet_protocol::jcs::canonicalize(&v);
        let _ = stacknet_protocol::jcs::canonicalize_signed(&v);
    }
});

fn serde_json_from(data: &[u8]) -> Result<Signed<Paperwork>, serde_json::Error> {
    serde_json::from_slice(data)
}
