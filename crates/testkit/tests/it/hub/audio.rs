//! Speech and transcriptions through hub and node to an upstream that serves OpenAI's audio API (a
//! scripted mock: it speaks text into a real WAV file and reads it back): the body is the
//! upstream's bytes exactly, the proof is in the headers, the paperwork signs the body's SHA-256
//! and counts characters or seconds; bad input is refused before anything is held.

use std::sync::Arc;

use serde_json::{json, Value};
use stacknet_api::output::{headers, proof_of_headers};
use stacknet_ledger::AccountId;
use stacknet_node::backend::upstream::OpenAiUpstream;
use stacknet_node::config::UpstreamConfig;
use stacknet_protocol::Sha256Digest;
use stacknet_testkit::mock_upstream::audio::speak;
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use super::files::{multipart, post_multipart};
use super::{client, paperwork_of};

const TTS: &str = "mock-tts";
const STT: &str = "mock-stt";

/// A network whose one node forwards speech and transcriptions to the mock upstream.
async fn network() -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    let mut config = UpstreamConfig::new(net.upstream.base_url(), Vec::new());
    config.speech_models = vec![TTS.to_owned()];
    config.transcription_models = vec![STT.to_owned()];
    net.add_backend_node(Arc::new(OpenAiUpstream::new(&config).unwrap()))
        .await;
    net
}

async fn speech(net: &TestNetwork, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/audio/speech", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn transcribe(
    net: &TestNetwork,
    fields: &[(&str, &str)],
    file: (&str, &str, &[u8]),
) -> reqwest::Response {
    let (filename, content_type, bytes) = file;
    let body = multipart(fields, ("file", filename, content_type, bytes));
    post_multipart(net, "audio/transcriptions", body).await
}

/// The body, and the proof members its headers carry, checked against the paperwork they name:
/// the paperwork signs the body's SHA-256 and the usage the headers say.
async fn checked(net: &TestNetwork, resp: reqwest::Response) -> (Vec<u8>, Value) {
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let proof =
        proof_of_headers(|name| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)).unwrap();
    assert!(h.contains_key(headers::FINGERPRINT));
    let body = resp.bytes().await.unwrap().to_vec();
    let pw = paperwork_of(net, &proof).await;
    assert_eq!(pw.body.output_sha256, Sha256Digest::of(&body));
    assert_eq!(proof["usage"]["units"], pw.body.usage.units);
    (body, proof)
}

#[tokio::test]
async fn speech_and_its_transcription_pass_through_an_upstream_with_their_proof() {
    let net = network().await;
    let sentence = "Hello from the network.";
    let resp = speech(
        &net,
        &json!({"model": TTS, "input": sentence, "voice": "alloy", "response_format": "wav", "speed": 1.0}),
    )
    .await;
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let (audio, proof) = checked(&net, resp).await;
    assert_eq!(audio, speak(sentence), "the upstream's bytes, unchanged");
    assert_eq!(proof["usage"]["units"], 23, "characters of input");
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(
        (sent["model"].as_str(), sent["voice"].as_str()),
        (Some(TTS), Some("alloy"))
    );

    // The audio back: every response_format, each the upstream's body.
    let wav = ("speech.wav", "audio/wav", audio.as_slice());
    let resp = transcribe(&net, &[("model", STT), ("language", "en")], wav).await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (body, proof) = checked(&net, resp).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"text": sentence})
    );
    // 23 bytes at 10 ms each: 230 ms, counted as one second.
    assert_eq!(proof["usage"]["units"], 1);
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(sent["model"], STT);
    assert_eq!(sent["language"], "en");
    assert_eq!(sent["file"]["sha256"], Sha256Digest::of(&audio).to_string());

    let (text, _) = checked(
        &net,
        transcribe(&net, &[("model", STT), ("response_format", "text")], wav).await,
    )
    .await;
    assert_eq!(String::from_utf8(text).unwrap(), sentence);
    let (srt, _) = checked(
        &net,
        transcribe(&net, &[("model", STT), ("response_format", "srt")], wav).await,
    )
    .await;
    assert_eq!(
        String::from_utf8(srt).unwrap(),
        format!("1\n00:00:00,000 --> 00:00:00,230\n{sentence}\n\n")
    );
    let verbose = [
        ("model", STT),
        ("response_format", "verbose_json"),
        ("timestamp_granularities[]", "word"),
        ("timestamp_granularities[]", "segment"),
        ("temperature", "0"),
    ];
    let (body, _) = checked(&net, transcribe(&net, &verbose, wav).await).await;
    let verbose: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(verbose["text"], sentence);
    assert_eq!(verbose["words"].as_array().unwrap().len(), 4);
    let sent = net.upstream.last_request().unwrap();
    assert_eq!(sent["timestamp_granularities"], json!(["word", "segment"]));
    assert_eq!(sent["temperature"], "0");
}

#[tokio::test]
async fn an_upstreams_refusal_passes_through_and_moves_no_money() {
    let net = network().await;
    let before = balance(&net).await;
    // The mock encodes only wav and pcm, as a server without an MP3 encoder would.
    let resp = speech(&net, &json!({"model": TTS, "input": "hi", "voice": "alloy"})).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "input");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response_format mp3 is not supported"),
        "{err}"
    );
    assert_eq!(balance(&net).await, before);
}

#[tokio::test]
async fn bad_audio_input_is_refused_by_name_before_anything_is_held() {
    let net = network().await;
    let before = balance(&net).await;
    let refused = |resp: reqwest::Response, param: &'static str, says: &'static str| async move {
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        let message = err["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{message}");
    };
    let stt = [("model", STT)];
    let text_file = (
        "notes.mp3",
        "audio/mpeg",
        b"this is a text file, not audio at all".as_slice(),
    );
    refused(transcribe(&net, &stt, text_file).await, "file", "not audio").await;
    refused(
        transcribe(&net, &stt, ("empty.wav", "audio/wav", b"".as_slice())).await,
        "file",
        "empty",
    )
    .await;
    let huge = vec![0u8; 25 * 1024 * 1024 + 1];
    refused(
        transcribe(&net, &stt, ("huge.wav", "audio/wav", huge.as_slice())).await,
        "file",
        "over the",
    )
    .await;
    let wav = speak("hello");
    let wav = ("a.wav", "audio/wav", wav.as_slice());
    refused(
        transcribe(&net, &[("model", STT), ("response_format", "xml")], wav).await,
        "response_format",
        "must be one of",
    )
    .await;
    let bad_speech = [
        (json!({"model": TTS, "input": "hi", "voice": ""}), "voice"),
        (
            json!({"model": TTS, "input": "hi", "voice": "alloy", "response_format": "ogg"}),
            "response_format",
        ),
        (json!({"model": TTS, "input": "", "voice": "alloy"}), "input"),
        (
            json!({"model": TTS, "input": "x".repeat(4097), "voice": "alloy"}),
            "input",
        ),
        (
            json!({"model": TTS, "input": "hi", "voice": "alloy", "speed": 9}),
            "speed",
        ),
    ];
    for (body, param) in bad_speech {
        refused(speech(&net, &body).await, param, "").await;
    }
    assert_eq!(net.upstream.requests(), 0, "no node was asked");
    assert_eq!(balance(&net).await, before, "no money moved");
    assert!(net.hub.hub.state.ledger.sum_check().await.unwrap().is_balanced());
}

/// The Stack's balance.
async fn balance(net: &TestNetwork) -> stacknet_ledger::Balance {
    net.hub
        .hub
        .state
        .ledger
        .balance(AccountId::stack(net.stack))
        .await
        .unwrap()
}

/// A hostile hub understates an upload's length, so the node would transcribe a minute and be paid
/// for a second: the node measures the file itself, with the hub's own code, and refuses the task
/// before its upstream is asked.
#[tokio::test]
async fn a_node_refuses_a_task_whose_audio_is_longer_than_the_hub_says() {
    use stacknet_node::backend::InputFile;
    use stacknet_node::{Backend, BackendError, BackendTask, Cancellation};
    use stacknet_protocol::wire::Attachment;

    let mock = stacknet_testkit::mock_upstream::MockUpstream::start(Script::echo())
        .await
        .unwrap();
    let mut config = UpstreamConfig::new(mock.base_url(), Vec::new());
    config.transcription_models = vec![STT.to_owned()];
    let upstream = OpenAiUpstream::new(&config).unwrap();
    let wav = speak("a sentence long enough to last a while");
    let sha256 = Sha256Digest::of(&wav);
    let task = |duration_ms: u64| BackendTask {
        contract: stacknet_protocol::ContractId::random(),
        workload: stacknet_protocol::contract::Workload::Transcription,
        model: STT.to_owned(),
        request: Arc::new(
            json!({"model": STT, "file": {"sha256": sha256.to_string(), "size": wav.len(),
            "content_type": "audio/wav", "filename": "a.wav", "duration_ms": duration_ms}}),
        ),
        files: Arc::new(vec![InputFile {
            meta: Attachment {
                sha256,
                size: wav.len() as u64,
                content_type: "audio/wav".to_owned(),
            },
            bytes: wav.clone().into(),
        }]),
        cancel: Cancellation::never(),
    };
    let run = |t: BackendTask| {
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        upstream.execute(t, tx)
    };
    let err = run(task(1)).await.unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidRequest(m) if m.contains("not the 1 ms the task says")),
        "{err:?}"
    );
    assert_eq!(mock.requests(), 0, "the upstream was not asked");
    // The true length (38 bytes at 10 ms each) is served, and paid in seconds rounded up.
    let outcome = run(task(380)).await.unwrap();
    assert_eq!(outcome.usage.unwrap().units, 1);
    assert_eq!(mock.requests(), 1);
}
