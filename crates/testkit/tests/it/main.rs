#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Integration tests of the Stacknet crates, in one binary to keep link times down.

mod conviction;
mod embed;
mod fetch;
mod hub;
mod local;
mod mcp;
mod mock_upstream;
mod models;
mod node;
mod onnx;
mod sandbox;
mod transcribe;
mod validator;
mod vision;
