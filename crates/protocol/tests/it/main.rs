//! Integration tests of the protocol crate (one binary, one module per area).

// Test helpers outside #[test] functions may unwrap too: a failing test should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checkpoint;
mod golden;
mod keys;
mod merkle;
mod props;
mod vectors;
