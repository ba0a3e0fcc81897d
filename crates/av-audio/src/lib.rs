//! Audio front end: decoding, torchaudio-exact resampling and log-mel spectrograms, with no
//! deep-learning framework.
//!
//! * [`decode_file`] / [`decode_mono`]: WAV, FLAC, Ogg Vorbis, MP3 and AAC (ADTS, MP4/M4A, with
//!   the encoder priming trimmed so audio lines up with video) through symphonia; Opus and
//!   multichannel AAC through FFmpeg with the `ffmpeg` feature.
//! * [`SincResampler`]: a port of torchaudio's `sinc_interp_hann` resampler (width 6, rolloff
//!   0.99), matching `torchaudio.functional.resample` to ~1e-7 of full scale.
//! * [`MelSpectrogram`]: mel spectrograms with torchaudio conventions (HTK scale, periodic Hann,
//!   reflect padding) or librosa's (Slaney scale and area normalisation), planned once and
//!   computed into caller-owned buffers.
//! * [`ReplaiAudioFrontEnd`]: RepLAI's network input, `(125, 80)` normalised log-mel frames.
//!
//! All conventions are documented in `docs/audio-conventions.md`.
//!
//! # Example: the RepLAI front end on a synthetic sine
//!
//! ```
//! use av_audio::ReplaiAudioFrontEnd;
//!
//! // Two seconds of a 440 Hz tone at 44.1 kHz, as decoded from a training video.
//! let sr = 44_100;
//! let clip: Vec<f32> = (0..2 * sr)
//!     .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / sr as f32).sin())
//!     .collect();
//!
//! let front_end = ReplaiAudioFrontEnd::new(sr as u32)?;
//! let x = front_end.network_input(&clip)?;
//! assert_eq!(x.len(), ReplaiAudioFrontEnd::FRAMES * ReplaiAudioFrontEnd::MELS);
//!
//! // Layout is (time = 125, mel = 80): the loudest band of every frame is the one holding 440 Hz.
//! let frame = &x[60 * 80..61 * 80];
//! let loudest = (0..80).max_by(|&a, &b| frame[a].total_cmp(&frame[b])).unwrap();
//! let mel = front_end.mel();
//! let centre_hz = av_audio::mel_to_hz(
//!     (loudest as f64 + 1.0) * av_audio::hz_to_mel(8000.0, av_audio::MelScale::Htk) / 81.0,
//!     av_audio::MelScale::Htk,
//! );
//! assert!((centre_hz - 440.0).abs() < 60.0, "band {loudest} centred at {centre_hz} Hz");
//! assert_eq!(mel.n_mels(), 80);
//! # Ok::<(), av_audio::AudioError>(())
//! ```

mod decode;
mod error;
#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod frontend;
mod mel;
pub mod mem;
mod mp4;
mod npy;
mod resample;
pub mod simd;
mod wav;

pub use decode::{
    decode_file, decode_file_with, decode_mono, write_wav, write_wav_pcm16, DecodeOptions,
    DecodedAudio,
};
pub use error::AudioError;
pub use frontend::{uniform_temporal_subsample_indices, FrontEndScratch, ReplaiAudioFrontEnd};
pub use mel::{
    hz_to_mel, mel_filterbank, mel_to_hz, MelConfig, MelNorm, MelScale, MelScratch, MelSpectrogram,
    PadMode, Spectrogram,
};
pub use npy::write_npy_f32;
pub use resample::{resample, SincResampler, LOWPASS_FILTER_WIDTH, ROLLOFF};
