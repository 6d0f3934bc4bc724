//! Reconnect delays: exponential from 200 ms to 10 s, with jitter so that a hub restart is not met by
//! every node reconnecting in the same millisecond.

use std::time::Duration;

use stacknet_protocol::Nonce;

/// The first delay after a connection is lost.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// The longest delay between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }

    /// After a successful handshake the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }

    /// The delay before the next attempt: a random point in the upper half of the current step
    /// ("equal jitter": never shorter than half the step, so a failing hub is not hammered).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_MAX);
        let half = step / 2;
        let span_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(random_u64() % (span_ms + 1))
    }
}

fn random_u64() -> u64 {
    let bytes = Nonce::random().0;
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= BACKOFF_INITIAL / 2 && first <= BACKOFF_INITIAL);
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        let capped = b.next_delay();
        assert!(capped >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_INITIAL);
    }
}
