//! Audio files as hub and node read them (feature `audio`): the duration of an upload, which prices
//! a transcription before any node is asked (a file that is not audio is refused at the edge), and
//! its samples, for a built-in model to hear.
//!
//! Pure Rust (symphonia): WAV (PCM), MP3, FLAC, and Ogg (Vorbis; Opus is demuxed, so its duration
//! is known, but not decoded). Nothing here trusts the file: a container that claims no length is
//! measured by reading every packet's timestamps, never by the header's word alone.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;
use symphonia::core::units::TimeBase;

/// The longest audio taken, in milliseconds (two hours): a transcription's hold is per second.
pub const MAX_AUDIO_MS: u64 = 2 * 3600 * 1000;

/// What [`probe`] learned of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioInfo {
    /// The length, rounded down to the millisecond.
    pub duration_ms: u64,
    pub sample_rate: u32,
    pub channels: u16,
}

impl AudioInfo {
    /// The seconds a transcription of it is priced at: its length rounded up to the second.
    pub fn seconds(&self) -> u64 {
        seconds(self.duration_ms)
    }
}

/// `duration_ms` rounded up to the second.
pub fn seconds(duration_ms: u64) -> u64 {
    duration_ms.div_ceil(1000)
}

/// What [`probe`] is told of an upload's format: its file name's extension, else its media type.
pub fn hint(filename: Option<&str>, content_type: &str) -> String {
    filename
        .and_then(|f| f.rsplit_once('.'))
        .map_or_else(|| content_type.to_owned(), |(_, ext)| ext.to_ascii_lowercase())
}

/// Why a file is not audio this network can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is not audio in a format this network reads (WAV, MP3, FLAC, Ogg): {0}")]
    NotAudio(String),
    #[error("the file has no audio track")]
    NoTrack,
    #[error("the audio has no length")]
    Silent,
    #[error("the audio is {ms} ms long, over the {max} ms limit")]
    TooLong { ms: u64, max: u64 },
    #[error("the audio cannot be decoded: {0}")]
    Decode(String),
}

/// A file opened for reading, its first audio track chosen.
struct Opened {
    format: Box<dyn FormatReader>,
    track: u32,
    params: symphonia::core::codecs::CodecParameters,
}

fn open<T>(bytes: T, hint: Option<&str>) -> Result<Opened, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    if bytes.as_ref().is_empty() {
        return Err(AudioError::Empty);
    }
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), MediaSourceStreamOptions::default());
    let mut guess = Hint::new();
    if let Some(h) = hint {
        if h.contains('/') {
            guess.mime_type(h);
        } else {
            guess.with_extension(h);
        }
    }
    let probed = symphonia::default::get_probe()
        .format(
            &guess,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::NotAudio(e.to_string()))?;
    let format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or(AudioError::NoTrack)?;
    Ok(Opened {
        track: track.id,
        params: track.codec_params.clone(),
        format,
    })
}

/// Milliseconds of `ts` in `base`, rounded down.
fn millis(base: TimeBase, ts: u64) -> u64 {
    let t = base.calc_time(ts);
    t.seconds
        .saturating_mul(1000)
        .saturating_add((t.frac * 1000.0) as u64)
}

/// The length and shape of an audio file; `hint` is its extension or media type, when known.
/// Refuses what is not audio, has no audio track or no length, or is over [`MAX_AUDIO_MS`].
pub fn probe<T>(bytes: T, hint: Option<&str>) -> Result<AudioInfo, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    let mut opened = open(bytes, hint)?;
    let sample_rate = opened.params.sample_rate.ok_or(AudioError::NoTrack)?;
    let base = opened
        .params
        .time_base
        .unwrap_or_else(|| TimeBase::new(1, sample_rate));
    // Every packet's end: a header's frame count is not evidence (an MP3 without one, a WAV that
    // lies about its data size, an Ogg stream cut short).
    let mut end: u64 = 0;
    let mut packets: u64 = 0;
    loop {
        match opened.format.next_packet() {
            Ok(packet) if packet.track_id() == opened.track => {
                packets += 1;
                end = end.max(packet.ts().saturating_add(packet.dur()));
            }
            Ok(_) => {}
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) if packets == 0 => return Err(AudioError::NotAudio(e.to_string())),
            // A broken tail: what came before it is the audio.
            Err(_) => break,
        }
    }
    let duration_ms = millis(base, end);
    if packets == 0 || duration_ms == 0 {
        return Err(AudioError::Silent);
    }
    if duration_ms > MAX_AUDIO_MS {
        return Err(AudioError::TooLong {
            ms: duration_ms,
            max: MAX_AUDIO_MS,
        });
    }
    Ok(AudioInfo {
        duration_ms,
        sample_rate,
        channels: opened
            .params
            .channels
            .map_or(1, |c| u16::try_from(c.count()).unwrap_or(u16::MAX)),
    })
}

/// Decoded audio: mono, at the file's own rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Mono {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

/// Decodes a file to mono samples (channels averaged), at its own rate.
pub fn decode_mono<T>(bytes: T, hint: Option<&str>) -> Result<Mono, AudioError>
where
    T: AsRef<[u8]> + Send + Sync + 'static,
{
    let mut opened = open(bytes, hint)?;
    let sample_rate = opened.params.sample_rate.ok_or(AudioError::NoTrack)?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&opened.params, &DecoderOptions::default())
        .map_err(|e| AudioError::Decode(e.to_string()))?;
    let mut samples = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    let most = usize::try_from(MAX_AUDIO_MS / 1000 * u64::from(sample_rate)).unwrap_or(usize::MAX);
    loop {
        let packet = match opened.format.next_packet() {
            Ok(p) if p.track_id() == opened.track => p,
            Ok(_) => continue,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        };
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        };
        let spec = *decoded.spec();
        let frames = decoded.capacity();
        if buffer
            .as_ref()
            .is_none_or(|b| b.capacity() < frames * spec.channels.count())
        {
            buffer = Some(SampleBuffer::new(frames as u64, spec));
        }
        let Some(buf) = buffer.as_mut() else { continue };
        buf.copy_interleaved_ref(decoded);
        let channels = spec.channels.count().max(1);
        samples.extend(
            buf.samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        if samples.len() > most {
            return Err(AudioError::TooLong {
                ms: MAX_AUDIO_MS.saturating_add(1),
                max: MAX_AUDIO_MS,
            });
        }
    }
    if samples.is_empty() {
        return Err(AudioError::Silent);
    }
    Ok(Mono { samples, sample_rate })
}

/// A 16-bit PCM WAV file of mono `samples` (clamped to [-1, 1]) at `sample_rate`.
pub fn wav_pcm16(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&sample_rate.saturating_mul(2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&pcm16(*s).to_le_bytes());
    }
    out
}

/// A sample as signed 16-bit PCM.
pub fn pcm16(sample: f32) -> i16 {
    (sample.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tone(ms: u64, rate: u32) -> Vec<f32> {
        let n = (ms * u64::from(rate) / 1000) as usize;
        (0..n)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn a_wav_is_measured_and_decoded() {
        let wav = wav_pcm16(&tone(1_500, 16_000), 16_000);
        let info = probe(wav.clone(), Some("wav")).unwrap();
        assert_eq!(info.duration_ms, 1_500);
        assert_eq!((info.sample_rate, info.channels, info.seconds()), (16_000, 1, 2));
        let mono = decode_mono(wav, None).unwrap();
        assert_eq!(mono.sample_rate, 16_000);
        assert_eq!(mono.samples.len(), 24_000);
        assert!((mono.samples[4] - tone(1, 16_000)[4]).abs() < 1e-3);
    }

    #[test]
    fn what_is_not_audio_is_refused_by_name() {
        assert_eq!(probe(Vec::new(), None), Err(AudioError::Empty));
        assert!(matches!(
            probe(b"this is a text file, not audio at all".to_vec(), Some("mp3")),
            Err(AudioError::NotAudio(_))
        ));
        // A WAV header with no samples has no length.
        assert_eq!(probe(wav_pcm16(&[], 16_000), None), Err(AudioError::Silent));
    }
}
