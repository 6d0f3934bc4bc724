//! Black-box tests of the `stacknet` binary: run it as a user would and read what it prints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod crash;
mod key;
mod models;
mod node;
mod paperwork;
mod stake;
mod up;
mod verify;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

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

/// Starts `stacknet hub` with `args` (its data in `data_dir`) and returns it with the URL it
/// printed; its later output is drained in the background.
pub fn spawn_hub(args: &[&str], data_dir: &std::path::Path) -> (Child, String) {
    let mut hub = Command::new(env!("CARGO_BIN_EXE_stacknet"))
        .arg("hub")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("STACKNET_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(hub.stdout.take().expect("piped stdout")).lines();
    let first = lines.next().expect("a first line").expect("readable stdout");
    std::thread::spawn(move || lines.for_each(drop));
    let url = first
        .strip_prefix("hub listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (hub, url)
}
