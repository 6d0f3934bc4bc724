//! Test support for Stacknet, kept as product code so every integration test and benchmark shares one
//! setup instead of re-inventing it.
//!
//! - [`mock_comfyui`]: a scripted ComfyUI server (its prompt, websocket, history and view APIs).
//! - [`mock_upstream`]: a scripted OpenAI-compatible server (streaming and not), the upstream a node
//!   forwards to in tests and the "upstream direct" baseline in benchmarks.
//! - [`network`]: a hub, nodes and a mock upstream in one process, on loopback ports.
//! - [`cheats`]: cheating workers over the real llama.cpp model, for the validator tests.
//! - [`validators`]: bonded validators running the real loop in process, and faulty ones (always
//!   pass, always fail, equivocating) for the canary and slashing tests.
//! - `cheat-node` (`src/bin/cheat-node.rs`): a node whose backend is a [`cheats::CheatBackend`], the
//!   `--cheat` switch the real `stacknet node` does not have.
//! - [`fixtures`]: fixture backends (scripted stand-ins for model servers) for workloads that a
//!   mock upstream does not cover, such as file uploads and binary outputs.
//! - [`wait_until`]: waiting on a condition with a deadline, the tests' one way to synchronise with
//!   what runs in the background.

pub mod cheats;
pub mod fixtures;
pub mod mock_a1111;
pub mod mock_comfyui;
pub mod mock_upstream;
pub mod network;
pub mod validators;
mod wait;

pub use wait::{wait_until, WAIT_DEADLINE};
