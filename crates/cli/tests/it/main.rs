//! Black-box tests of the `stacknet` binary: run it as a user would and read what it prints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod crash;
mod key;
mod models;
mod up;

use std::process::{Command, Output};

pub fn stacknet(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .args(args)
        .current_dir(dir)
        .env("STACKNET_DATA_DIR", dir.join("data"))
        .env_remove("STACKNET_MODELS_DIR")
        .output()
        .expect("the binary runs")
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}
