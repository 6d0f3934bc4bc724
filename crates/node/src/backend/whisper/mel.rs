//! What Whisper hears: audio at 16 kHz, and the mel filterbank its log-mel spectrogram is made with
//! (OpenAI ships it as a file; it is `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`, computed
//! here: Slaney's mel scale, each triangle normalised to unit area).

/// Whisper's sample rate.
pub const SAMPLE_RATE: u32 = 16_000;
/// Zero crossings of the resampling kernel on each side: the filter's length, and its sharpness.
const RESAMPLE_ZEROS: usize = 16;

/// Hertz to mels on Slaney's scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// The filterbank: `n_mels` rows of `n_fft / 2 + 1` weights, row-major, as candle's `pcm_to_mel`
/// takes it.
pub fn filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let nyquist = f64::from(sample_rate) / 2.0;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|i| i as f64 * nyquist / (bins - 1) as f64)
        .collect();
    let (low, high) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let mel_freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (left, center, right) = (mel_freqs[m], mel_freqs[m + 1], mel_freqs[m + 2]);
        let norm = 2.0 / (right - left);
        for (b, f) in fft_freqs.iter().enumerate() {
            let rising = (f - left) / (center - left);
            let falling = (right - f) / (right - center);
            weights[m * bins + b] = (rising.min(falling).max(0.0) * norm) as f32;
        }
    }
    weights
}

/// `samples` at `from` Hz, resampled to `to` Hz with a Hann-windowed sinc (band-limited to the
/// lower rate's Nyquist frequency). The same input always gives the same output.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0);
    let half_width = RESAMPLE_ZEROS as f64 / cutoff;
    let out_len = (samples.len() as f64 * ratio).ceil() as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let center = n as f64 / ratio;
        let first = (center - half_width).ceil().max(0.0) as usize;
        let last = ((center + half_width).floor() as usize).min(samples.len() - 1);
        let (mut acc, mut norm) = (0.0f64, 0.0f64);
        for (k, s) in samples.iter().enumerate().take(last + 1).skip(first) {
            let x = (k as f64 - center) * cutoff;
            let sinc = if x.abs() < 1e-9 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            };
            let window = 0.5 + 0.5 * (std::f64::consts::PI * x / RESAMPLE_ZEROS as f64).cos();
            let w = sinc * window;
            acc += f64::from(*s) * w;
            norm += w;
        }
        out.push(if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_filterbank_is_openais() {
        let f = filters(16_000, 400, 80);
        assert_eq!(f.len(), 80 * 201);
        // Values of OpenAI's own `mel_filters.npz` (`mel_80`, from the openai-whisper package): the
        // first filter is one bin wide; the last starts at bin 186 and ends below the Nyquist bin.
        // Every one of the 16,080 weights was compared once, all within 2e-9.
        assert!((f[1] - 0.024_862_595).abs() < 1e-8, "{}", f[1]);
        assert_eq!((f[0], f[2]), (0.0, 0.0));
        let last = &f[79 * 201..];
        assert_eq!(last.iter().position(|w| *w > 0.0), Some(186));
        assert!((last[186] - 0.000_366_741_67).abs() < 1e-9, "{}", last[186]);
        assert_eq!(last[200], 0.0);
    }

    #[test]
    fn resampling_keeps_a_tone_and_its_length() {
        let tone: Vec<f32> = (0..44_100)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 44_100.0).sin())
            .collect();
        let out = resample(&tone, 44_100, 16_000);
        assert_eq!(out.len(), 16_000);
        let expected = |i: usize| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin();
        for i in (1_000..15_000).step_by(997) {
            assert!(
                (out[i] - expected(i)).abs() < 0.01,
                "{i}: {} vs {}",
                out[i],
                expected(i)
            );
        }
        assert_eq!(resample(&tone, 16_000, 16_000), tone);
    }
}
