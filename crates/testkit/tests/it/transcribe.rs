//! The built-in speech (the eSpeak NG fallback voice) and speech to text (Whisper tiny.en on candle)
//! with the real model, through hub and node as a client calls them: the voice's every format
//! decodes and Whisper hears its speech back; speech made by espeak-ng comes back as its text (word error rate at most
//! 10%), audio over 30 seconds in several windows, the same bytes for the same audio, and what the
//! model cannot do refused by name.
//!
//! The model is read from `$STACKNET_MODELS_DIR/whisper-tiny-en/` (`stacknet models pull
//! whisper-tiny-en`), and the speech is made with Debian's `espeak-ng`; `scripts/test.sh` provides
//! both, so a bare `cargo test` ignores these tests.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use stacknet_node::backend::multi::MultiBackend;
use stacknet_node::backend::voice::EspeakVoice;
use stacknet_node::backend::whisper::Whisper;
use stacknet_node::models::{self, ModelStore};
use stacknet_testkit::mock_upstream::Script;
use stacknet_testkit::network::TestNetwork;

use crate::hub::files::{multipart, post_multipart};

const MODEL: &str = "whisper-tiny-en";

/// The model, loaded once for every test of this binary.
pub(crate) fn whisper() -> Whisper {
    static WHISPER: OnceLock<Whisper> = OnceLock::new();
    WHISPER
        .get_or_init(|| {
            let dir = std::env::var_os("STACKNET_MODELS_DIR")
                .expect("STACKNET_MODELS_DIR is not set: this test needs the models (scripts/test.sh pulls them and sets it)");
            let store = ModelStore::new(dir);
            let spec = models::find(MODEL).expect("the catalog has whisper-tiny-en");
            let path = store.path_of(spec).expect("whisper-tiny-en is pulled");
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            Whisper::load(&path, spec, threads).expect("the model loads")
        })
        .clone()
}

/// `text` spoken by espeak-ng, as a WAV file.
pub fn espeak(text: &str) -> Vec<u8> {
    let out = std::process::Command::new("espeak-ng")
        .args(["--stdout", "-s", "150", text])
        .output()
        .expect("espeak-ng runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Words, lowercase, without punctuation.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `heard` against `said`: word-level edit distance over the words said.
pub fn word_error_rate(said: &str, heard: &str) -> f64 {
    let (a, b) = (words(said), words(heard));
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, wa) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, wb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(wa != wb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()] as f64 / a.len().max(1) as f64
}

async fn network() -> TestNetwork {
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(whisper())).await;
    net
}

/// `POST /v1/audio/transcriptions` of `wav` with `fields`; the status and the body.
async fn transcribe(net: &TestNetwork, wav: &[u8], fields: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut all = vec![("model", MODEL)];
    all.extend_from_slice(fields);
    let body = multipart(&all, ("file", "speech.wav", "audio/wav", wav));
    let resp = post_multipart(net, "audio/transcriptions", body).await;
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
#[ignore = "needs the whisper-tiny-en model (STACKNET_MODELS_DIR) and espeak-ng; scripts/test.sh runs it"]
async fn spoken_english_is_transcribed_with_a_word_error_rate_of_at_most_ten_percent() {
    let net = network().await;
    // faster-whisper with these very weights (greedy, no timestamps) hears this exactly; espeak-ng's
    // voice is hard on other sentences for a model this small.
    let said = "Please open the window and let the fresh air in. The children are playing in the garden.";
    let wav = espeak(said);
    let (status, body) = transcribe(&net, &wav, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let heard = answer["text"].as_str().unwrap();
    let wer = word_error_rate(said, heard);
    assert!(wer <= 0.10, "WER {wer:.2}: said {said:?}, heard {heard:?}");
    assert_eq!(answer["usage"]["type"], "duration");

    // The same audio again: the same bytes (greedy decoding), which a validator re-running it gets.
    let (_, again) = transcribe(&net, &wav, &[]).await;
    assert_eq!(again, body);

    let (_, srt) = transcribe(&net, &wav, &[("response_format", "srt")]).await;
    let srt = String::from_utf8(srt).unwrap();
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:0"), "{srt}");

    // English only, and segment timestamps only: refused by name, before any work.
    let (status, body) = transcribe(&net, &wav, &[("language", "de")]).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("English only"));
    let word = [
        ("response_format", "verbose_json"),
        ("timestamp_granularities[]", "word"),
    ];
    let (status, body) = transcribe(&net, &wav, &word).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
#[ignore = "needs the whisper-tiny-en model (STACKNET_MODELS_DIR) and espeak-ng; scripts/test.sh runs it"]
async fn audio_longer_than_thirty_seconds_is_transcribed_in_windows() {
    let net = network().await;
    let said = "Every morning the baker opens his small shop on the corner of the street. \
        He sells fresh bread, warm rolls and sweet cakes to the people of the town. \
        Children stop by on their way to school to buy a cookie. \
        In the afternoon the shop is quiet and the baker reads the newspaper. \
        When the sun goes down he closes the door and walks home to his family. \
        The next day he gets up early and does it all again. \
        On Sundays the shop stays closed and the baker walks by the river with his dog.";
    let wav = espeak(said);
    let info = stacknet_api::audio::probe(wav.clone(), Some("wav")).unwrap();
    assert!(info.duration_ms > 30_000, "the speech is {} ms", info.duration_ms);
    let (status, body) = transcribe(&net, &wav, &[("response_format", "verbose_json")]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let segments = answer["segments"].as_array().unwrap();
    assert_eq!(segments.len(), info.duration_ms.div_ceil(30_000) as usize);
    assert_eq!(segments[1]["start"], 30.0);
    let heard = answer["text"].as_str().unwrap();
    // A sentence cut at the window's edge may lose a word or two on each side of it.
    let wer = word_error_rate(said, heard);
    eprintln!("WER {wer:.3} over {} windows: {heard}", segments.len());
    assert!(wer <= 0.15, "WER {wer:.2}: heard {heard:?}");
}

#[test]
fn word_error_rate_counts_edits_over_the_words_said() {
    assert_eq!(word_error_rate("The cat sat.", "the cat sat"), 0.0);
    assert_eq!(
        word_error_rate("the cat sat on the mat", "the cat sit on mat"),
        2.0 / 6.0
    );
}

/// A network whose node speaks with the fallback voice and hears with Whisper.
async fn speaking_network() -> TestNetwork {
    let voice = EspeakVoice::start(None)
        .await
        .expect("espeak-ng runs (scripts/setup.sh installs it)");
    let both = MultiBackend::new(vec![Arc::new(voice), Arc::new(whisper())]).unwrap();
    let mut net = TestNetwork::start_without_nodes(Script::echo(), |_| {}).await;
    net.add_backend_node(Arc::new(both)).await;
    net
}

async fn speak(net: &TestNetwork, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/audio/speech", net.base_url()))
        .bearer_auth(&net.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs espeak-ng, lame, flac, opusenc and the whisper-tiny-en model; scripts/test.sh runs it"]
async fn the_fallback_voice_speaks_every_format_and_whisper_hears_it_back() {
    let net = speaking_network().await;
    let said = "Please open the window and let the fresh air in. The children are playing in the garden.";
    let request = |format: &str| json!({"model": "espeak-ng", "input": said, "voice": "alloy", "response_format": format});
    let resp = speak(&net, request("wav")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert!(!resp.headers()["stacknet-usage"].is_empty());
    let wav = resp.bytes().await.unwrap().to_vec();
    let length = stacknet_api::audio::probe(wav.clone(), Some("wav"))
        .unwrap()
        .duration_ms;

    // The round trip: what the voice said, Whisper hears.
    let (status, body) = transcribe(&net, &wav, &[("response_format", "text")]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let heard = String::from_utf8(body).unwrap();
    let wer = word_error_rate(said, &heard);
    assert!(wer <= 0.10, "WER {wer:.2}: heard {heard:?}");

    // Deterministic: the same request, the same bytes.
    assert_eq!(
        speak(&net, request("wav")).await.bytes().await.unwrap().to_vec(),
        wav
    );

    // Every format it writes decodes as itself, as long as the WAV.
    for (format, content_type) in [
        ("mp3", "audio/mpeg"),
        ("flac", "audio/flac"),
        ("opus", "audio/ogg"),
    ] {
        let resp = speak(&net, request(format)).await;
        assert_eq!(resp.status(), 200, "{format}");
        assert_eq!(resp.headers()["content-type"], content_type);
        let bytes = resp.bytes().await.unwrap().to_vec();
        let info = stacknet_api::audio::probe(bytes, Some(if format == "opus" { "ogg" } else { format }))
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        let off = info.duration_ms.abs_diff(length);
        assert!(
            off * 10 < length,
            "{format}: {} ms against {length} ms",
            info.duration_ms
        );
    }
    let pcm = speak(&net, request("pcm")).await.bytes().await.unwrap();
    let pcm_ms = pcm.len() as u64 / 2 * 1000 / 24_000;
    assert!(
        pcm.len() % 2 == 0 && pcm_ms.abs_diff(length) < 50,
        "{pcm_ms} ms against {length} ms"
    );

    // What it cannot do: refused by name.
    let aac = speak(&net, request("aac")).await;
    assert_eq!(aac.status(), 400);
    assert!(aac.text().await.unwrap().contains("aac cannot be written"));
    let mut unknown = request("wav");
    unknown["voice"] = json!("robot");
    let resp = speak(&net, unknown).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("is not a voice of espeak-ng"));
}
