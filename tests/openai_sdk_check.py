"""Talks to a Stacknet hub with the official OpenAI Python SDK, unmodified, as a user would.

Reads OPENAI_BASE_URL and OPENAI_API_KEY (the lines `stacknet up` prints) and MODEL; with
SPEECH_MODEL and TRANSCRIPTION_MODEL, also speaks a sentence and transcribes the audio back. Exits
non-zero with a message on the first thing that is not as the SDK's users expect.
"""
import json
import os
import sys

import openai

model = os.environ.get("MODEL", "mock-model")
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment

resp = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0
)
text = resp.choices[0].message.content
assert text, f"empty answer: {resp}"
assert resp.choices[0].finish_reason in ("stop", "length"), resp.choices[0].finish_reason
assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
extra = resp.model_extra or {}
assert extra.get("fingerprint", "").startswith("fp_"), extra
assert extra["attribution"]["signed_by"].startswith("ed25519:"), extra

streamed, last = [], None
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed.append(chunk.choices[0].delta.content)
    last = chunk
assert "".join(streamed) == text, ("stream differs", "".join(streamed), text)
assert last.usage is not None and last.usage.completion_tokens > 0, last
assert (last.model_extra or {}).get("fingerprint", "").startswith("fp_"), last

try:
    openai.OpenAI(api_key="sk_wrong").chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    sys.exit("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e

models = [m.id for m in client.models.list()]
assert model in models, models

heard = None
speech_model, transcription_model = os.environ.get("SPEECH_MODEL"), os.environ.get("TRANSCRIPTION_MODEL")
if speech_model and transcription_model:
    sentence = "The quick brown fox jumps over the lazy dog."
    raw = client.audio.speech.with_raw_response.create(
        model=speech_model, voice="alloy", input=sentence, response_format="wav"
    )
    audio = raw.parse().content
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE", audio[:16]
    assert raw.headers["content-type"] == "audio/wav", raw.headers
    assert raw.headers["stacknet-fingerprint"].startswith("fp_"), raw.headers
    assert raw.headers["stacknet-paperwork"].startswith("pw_"), raw.headers

    said = client.audio.transcriptions.create(model=transcription_model, file=("speech.wav", audio, "audio/wav"))
    assert said.text == sentence, said
    plain = client.audio.transcriptions.create(
        model=transcription_model, file=("speech.wav", audio, "audio/wav"), response_format="text"
    )
    assert plain.strip() == sentence, plain
    verbose = client.audio.transcriptions.create(
        model=transcription_model,
        file=("speech.wav", audio, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert verbose.text == sentence and len(verbose.words) == 9, verbose
    try:
        client.audio.transcriptions.create(
            model=transcription_model, file=("notes.mp3", b"not audio at all, just text", "audio/mpeg")
        )
        sys.exit("a file that is not audio was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.param == "file", e
    heard = said.text

print(json.dumps({"ok": True, "text": text, "fingerprint": extra["fingerprint"], "heard": heard}))
