//! Any body a client may POST to an OpenAI endpoint of the hub, under any content type: reading it
//! (JSON, or multipart for image edits) and validating it must never panic, nor may bounding what an
//! accepted request can use (the numbers the escrow hold is computed from).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacknet_hub::workload::{self, SERVED};

/// The boundary of the multipart content type the fuzzer gets for free (it can also spell its own).
const BOUNDARY: &str = "fuzz";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(api) = workload::api(SERVED[usize::from(selector) % SERVED.len()]) else {
        return;
    };
    // No content type, a multipart one, or the input's first line as the header's value.
    let multipart = format!("multipart/form-data; boundary={BOUNDARY}");
    let (content_type, body) = match (selector / 4) % 3 {
        0 => (None, rest),
        1 => (Some(multipart.as_str()), rest),
        _ => {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let header = std::str::from_utf8(&rest[..end]).ok();
            (header, rest.get(end + 1..).unwrap_or_default())
        }
    };
    if let Ok(parsed) = api.parse(content_type, bytes::Bytes::copy_from_slice(body)) {
        // The arithmetic of the hold saturates; an overflow here panics in a fuzz build.
        let _ = api.max_usage(&parsed.request, body.len(), u64::MAX);
        let _ = api.max_output_bytes(&parsed.request, u64::MAX);
    }
});
