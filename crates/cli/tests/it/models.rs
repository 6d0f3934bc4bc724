//! `stacknet models` as a user meets it (the pull itself is tested against a fake PyPI in testkit).

use crate::{stacknet, text};

#[test]
fn models_list_shows_the_pinned_catalog_and_what_is_here() {
    let dir = tempfile::tempdir().unwrap();
    let out = stacknet(&["models", "list"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    for (name, workloads, license) in [
        ("smollm2-135m-instruct", "chat,completion", "Apache-2.0"),
        ("all-minilm-l6-v2", "embedding", "Apache-2.0"),
        ("whisper-tiny-en", "transcription", "MIT"),
        ("gemma-3-270m", "chat,completion", "Gemma"),
    ] {
        let row = listing
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed"));
        assert!(row.contains(workloads) && row.contains(license), "{row}");
    }
    // STACKNET_DATA_DIR is <dir>/data in these tests: models live below it by default.
    assert!(listing.contains(&format!(
        "models directory: {}",
        dir.path().join("data/models").display()
    )));
}

#[test]
fn models_pull_and_rm_explain_unknown_and_absent_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = stacknet(&["models", "pull", "no-such"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: no model \"no-such\" in the catalog; known: smollm2-135m-instruct, all-minilm-l6-v2, whisper-tiny-en, \
         gemma-3-270m, piper-en-us-joe-medium, pp-ocrv6-tiny, terrain-diffusion-128, onnxruntime"
    );
    let rm = stacknet(&["models", "rm", "smollm2-135m-instruct"], dir.path());
    assert!(rm.status.success());
    assert!(text(&rm.stdout).starts_with("smollm2-135m-instruct is not in "));
}
