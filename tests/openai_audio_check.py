"""The official OpenAI Python SDK, unmodified, against `stacknet up`'s built-in speech, vision and
images: the Piper voice and the fallback voice speak a sentence in every format they write, the
built-in Whisper hears it back (word error rate at most 10%) in every response format, the built-in
OCR model reads back text rendered here into an image, the built-in (terrain) image model generates
and edits PNGs of the size asked and renders MP4 videos as jobs (created, polled, downloaded and
decoded with PyAV, one cancelled), the same for the same seed, and bad input is refused with
OpenAI's errors.

Reads OPENAI_BASE_URL and OPENAI_API_KEY; exits non-zero with a message on the first thing that is
not as the SDK's users expect.
"""
import base64
import io
import json
import re
import sys
import urllib.request

import av
import openai
from PIL import Image, ImageDraw, ImageFont

VOICE, PIPER, WHISPER, OCR = "espeak-ng", "piper-en-us-joe-medium", "whisper-tiny-en", "pp-ocrv6-tiny"
TERRAIN = "terrain-diffusion-128"
SENTENCE = "Please open the window and let the fresh air in. The children are playing in the garden."
client = openai.OpenAI()


def words(text):
    return [w for w in re.sub(r"[^a-z0-9 ]", " ", text.lower()).split() if w]


def wer(said, heard):
    a, b = words(said), words(heard)
    row = list(range(len(b) + 1))
    for i, wa in enumerate(a):
        prev, row[0] = row[0], i + 1
        for j, wb in enumerate(b):
            cur = row[j + 1]
            row[j + 1] = min(prev + (wa != wb), row[j] + 1, cur + 1)
            prev = cur
    return row[len(b)] / max(len(a), 1)


magic = {"wav": b"RIFF", "mp3": b"\xff", "flac": b"fLaC", "opus": b"OggS"}
audio = {}
for fmt, head in magic.items():
    raw = client.audio.speech.with_raw_response.create(model=VOICE, voice="alloy", input=SENTENCE, response_format=fmt)
    body = raw.parse().content
    assert body.startswith(head), (fmt, body[:8])
    assert raw.headers["stacknet-paperwork"].startswith("pw_"), raw.headers
    audio[fmt] = body
pcm = client.audio.speech.create(model=VOICE, voice="alloy", input=SENTENCE, response_format="pcm").content
assert len(pcm) % 2 == 0 and len(pcm) > 24_000, len(pcm)

heard = {}
for fmt in ("wav", "mp3", "flac"):
    said = client.audio.transcriptions.create(model=WHISPER, file=(f"speech.{fmt}", audio[fmt]))
    heard[fmt] = wer(SENTENCE, said.text)
    assert heard[fmt] <= 0.10, (fmt, said.text)
wav = ("speech.wav", audio["wav"], "audio/wav")
text = client.audio.transcriptions.create(model=WHISPER, file=wav, response_format="text")
assert wer(SENTENCE, text) <= 0.10, text
srt = client.audio.transcriptions.create(model=WHISPER, file=wav, response_format="srt")
assert srt.startswith("1\n00:00:00,000 --> "), srt
vtt = client.audio.transcriptions.create(model=WHISPER, file=wav, response_format="vtt")
assert vtt.startswith("WEBVTT"), vtt
verbose = client.audio.transcriptions.create(model=WHISPER, file=wav, response_format="verbose_json")
assert verbose.segments and verbose.segments[0].start == 0.0 and verbose.duration > 3, verbose

# The neural voice: every format decodes as itself, Whisper hears it, the same request gives the
# same bytes.
for fmt, head in magic.items():
    body = client.audio.speech.create(model=PIPER, voice="nova", input=SENTENCE, response_format=fmt).content
    assert body.startswith(head), (fmt, body[:8])
    if fmt == "wav":
        said = client.audio.transcriptions.create(model=WHISPER, file=("piper.wav", body))
        heard["piper"] = wer(SENTENCE, said.text)
        assert heard["piper"] <= 0.10, said.text
        again = client.audio.speech.create(model=PIPER, voice="nova", input=SENTENCE, response_format="wav").content
        assert again == body, "the same request gave other bytes"

# Vision: text rendered here, read back by the built-in OCR model through chat.
LINES = ["The quick brown fox jumps", "over the lazy dog 1234"]
font = ImageFont.load_default(size=36)
image = Image.new("RGB", (760, 70 + 56 * len(LINES)), "white")
draw = ImageDraw.Draw(image)
for i, line in enumerate(LINES):
    draw.text((32, 32 + 56 * i), line, fill="black", font=font)
png = io.BytesIO()
image.save(png, format="PNG")
url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
read = client.chat.completions.create(model=OCR, messages=[{"role": "user", "content": [
    {"type": "text", "text": "What does the picture say?"},
    {"type": "image_url", "image_url": {"url": url}},
]}])
assert read.choices[0].message.content == "\n".join(LINES), read.choices[0].message.content
assert read.usage.prompt_tokens >= 85 and read.to_dict()["paperwork"].startswith("pw_"), read

# Images: generated as PNGs of the size asked; the same seed, the same bytes.
made = client.images.generate(model=TERRAIN, prompt="a mountain lake", n=2, size="512x512",
                              response_format="b64_json", extra_body={"seed": 42})
pngs = [base64.b64decode(d.b64_json) for d in made.data]
for png in pngs:
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (512, 512), (picture.format, picture.size)
assert pngs[0] != pngs[1]
again = client.images.generate(model=TERRAIN, prompt="a mountain lake", size="512x512",
                               response_format="b64_json", extra_body={"seed": 42})
assert base64.b64decode(again.data[0].b64_json) == pngs[0], "the same seed gave other bytes"
linked = client.images.generate(model=TERRAIN, prompt="a mountain lake", size="512x512",
                                response_format="url", extra_body={"seed": 42})
with urllib.request.urlopen(linked.data[0].url) as fetched:
    assert fetched.read() == pngs[0], "the image by URL is not the same image"

# Edits: the first picture's brightness as the start, redrawn where the mask is transparent (its
# left half); seeded like generations.
mask = Image.new("RGBA", (512, 512), (0, 0, 0, 255))
mask.paste((0, 0, 0, 0), (0, 0, 256, 512))
mask_png = io.BytesIO()
mask.save(mask_png, "PNG")
def edit(seed):
    return client.images.edit(model=TERRAIN, image=("start.png", pngs[0], "image/png"),
                              mask=("mask.png", mask_png.getvalue(), "image/png"), prompt="a mountain lake",
                              size="256x256", response_format="b64_json", extra_body={"seed": seed})
edited = base64.b64decode(edit(7).data[0].b64_json)
picture = Image.open(io.BytesIO(edited))
assert picture.format == "PNG" and picture.size == (256, 256), (picture.format, picture.size)
assert base64.b64decode(edit(7).data[0].b64_json) == edited, "the same seed gave another edit"
assert base64.b64decode(edit(8).data[0].b64_json) != edited, "another seed gave the same edit"
small_mask = io.BytesIO()
mask.resize((128, 128)).save(small_mask, "PNG")

# Videos: a job created, polled to completion and downloaded; an MP4 that decodes to the frames
# and size asked; the same seed, the same bytes; another job cancelled and gone.
def video(seed):
    job = client.videos.create_and_poll(model=TERRAIN, prompt="a mountain lake", seconds="4", size="128x128",
                                        poll_interval_ms=200, extra_body={"seed": seed})
    assert job.status == "completed" and job.progress == 100, job
    return job, client.videos.download_content(job.id).read()
job, clip = video(3)
with av.open(io.BytesIO(clip)) as container:
    frames = list(container.decode(video=0))
assert len(frames) == 4 * 8 and (frames[0].width, frames[0].height) == (128, 128), (len(frames), frames[0])
assert video(3)[1] == clip, "the same seed gave another video"
assert job.to_dict()["paperwork"].startswith("pw_"), job
long = client.videos.create(model=TERRAIN, prompt="a long flight", seconds="12", size="256x256")
gone = client.videos.delete(long.id)
assert gone.deleted and gone.id == long.id, gone
try:
    client.videos.retrieve(long.id)
    sys.exit("a deleted video is still there")
except openai.NotFoundError:
    pass

for bad, param in [
    (lambda: client.audio.transcriptions.create(model=WHISPER, file=("notes.mp3", b"not audio at all", "audio/mpeg")), "file"),
    (lambda: client.audio.transcriptions.create(model=WHISPER, file=("empty.wav", b"", "audio/wav")), "file"),
    (lambda: client.audio.speech.create(model=VOICE, voice="alloy", input=SENTENCE, response_format="ogg"), "response_format"),
    (lambda: client.audio.speech.create(model=VOICE, voice="robot", input=SENTENCE), "input"),
    (lambda: client.audio.speech.create(model=PIPER, voice="robot", input=SENTENCE), "input"),
    (lambda: client.chat.completions.create(model=OCR, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://192.168.1.1/secret.png"}}]}]),
     "messages[0].content[0].image_url.url"),
    (lambda: client.images.generate(model=TERRAIN, prompt="a lake", size="100x100"), "size"),
    (lambda: client.images.generate(model=TERRAIN, prompt="a lake", n=11), "n"),
    (lambda: client.images.edit(model=TERRAIN, image=("a.gif", b"GIF89a not taken", "image/gif"), prompt="a lake"), "image"),
    (lambda: client.images.edit(model=TERRAIN, image=("a.png", pngs[0], "image/png"),
                                mask=("m.png", small_mask.getvalue(), "image/png"), prompt="a lake"), "mask"),
    (lambda: client.images.edit(model=TERRAIN, image=("a.png", pngs[0], "image/png"), prompt="x" * 32001), "prompt"),
    (lambda: client.videos.create(model=TERRAIN, prompt="a lake", seconds="5"), "seconds"),
    (lambda: client.videos.create(model=TERRAIN, prompt="a lake", size="100x100"), "size"),
]:
    try:
        bad()
        sys.exit(f"accepted: {param}")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.param == param, (param, e)

print(json.dumps({"ok": True, "wer": heard}))
