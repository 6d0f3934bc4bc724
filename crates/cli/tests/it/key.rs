//! `stacknet key new | show`.

use std::os::unix::fs::PermissionsExt;

use crate::{stacknet, text};

#[test]
fn key_new_writes_a_private_file_and_key_show_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = stacknet(&["key", "new", "--out", "node.key"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created = text(&out.stdout);
    let id = created
        .split_whitespace()
        .find(|w| w.starts_with("nk_"))
        .unwrap()
        .to_owned();

    let mode = std::fs::metadata(dir.path().join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let show = stacknet(&["key", "show", "node.key"], dir.path());
    assert!(show.status.success());
    let shown = text(&show.stdout);
    assert!(shown.contains(&format!("node_key:   {id}")), "{shown}");
    assert!(
        text(&show.stderr).is_empty(),
        "no permission warning for a 0600 file"
    );

    let json = stacknet(&["key", "show", "--json", "node.key"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["node_key"], id.as_str());
    // The id is checkable against the key by anyone.
    let public = stacknet_protocol::PublicKey::from_hex(v["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(public.node_key_id().to_string(), id);
    // The secret never appears on screen.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("node.key")).unwrap()).unwrap();
    let secret = file["secret_key"].as_str().unwrap();
    assert!(!shown.contains(secret) && !created.contains(secret));
}

#[test]
fn key_new_never_overwrites_an_existing_key() {
    let dir = tempfile::tempdir().unwrap();
    assert!(stacknet(&["key", "new", "--out", "node.key"], dir.path())
        .status
        .success());
    let before = std::fs::read(dir.path().join("node.key")).unwrap();
    let again = stacknet(&["key", "new", "--out", "node.key"], dir.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("refusing to overwrite the existing key file node.key"));
    assert_eq!(std::fs::read(dir.path().join("node.key")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind: {leftovers:?}");
}

#[test]
fn key_new_defaults_to_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = stacknet(&["key", "new"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("data/node.key").exists());
}

#[test]
fn key_show_explains_unreadable_and_malformed_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = stacknet(&["key", "show", "nope.key"], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).starts_with("error: cannot read key file nope.key: No such file"));

    std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
    std::fs::set_permissions(dir.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let bad = stacknet(&["key", "show", "bad.key"], dir.path());
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stderr).contains("bad.key is not a valid key file: key file is not valid JSON"));

    assert!(stacknet(&["key", "new", "--out", "k"], dir.path())
        .status
        .success());
    let path = dir.path().join("k");
    let tampered = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 9");
    std::fs::write(&path, tampered).unwrap();
    let out = stacknet(&["key", "show", "k"], dir.path());
    assert!(
        text(&out.stderr).contains("key file version 9 is not supported"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn key_show_warns_when_others_can_read_the_key() {
    let dir = tempfile::tempdir().unwrap();
    assert!(stacknet(&["key", "new", "--out", "k"], dir.path())
        .status
        .success());
    std::fs::set_permissions(dir.path().join("k"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = stacknet(&["key", "show", "k"], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("warning: key file k has mode 644"));
}

#[test]
fn version_and_help_read_well() {
    let dir = tempfile::tempdir().unwrap();
    let v = stacknet(&["--version"], dir.path());
    assert_eq!(
        text(&v.stdout).trim(),
        format!("stacknet {} (protocol v1)", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&stacknet(&["--help"], dir.path()).stdout);
    assert!(help.contains("Manage Node Keys"), "{help}");
    let bad = stacknet(&["frobnicate"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unrecognized subcommand 'frobnicate'"));
}
