//! Writes the log-mel spectrogram of an audio file as a `(n_mels, n_frames)` float32 `.npy`.
//!
//! ```text
//! cargo run -p av-audio --example logmel -- IN --preset replai --out OUT.npy
//! ```
//!
//! Presets:
//! * `replai` (default): resample to 16 kHz (torchaudio sinc), n_fft 512, hop 256, 80 HTK mels,
//!   no centring, `ln(max(x, 1e-10))`: the RepLAI front end before time subsampling.
//! * `torchaudio`: `torchaudio.transforms.MelSpectrogram` defaults at the file's rate, then
//!   `AmplitudeToDB(top_db=80)`.
//! * `librosa`: `librosa.feature.melspectrogram` defaults at the file's rate, then
//!   `power_to_db(ref=1, amin=1e-10, top_db=80)`.
//!
//! `--network-input` (replai only) writes the `(125, 80)` normalised network input instead.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use av_audio::{decode_mono, write_npy_f32, MelConfig, MelSpectrogram, ReplaiAudioFrontEnd};

struct Args {
    input: PathBuf,
    preset: String,
    out: PathBuf,
    network_input: bool,
}

fn parse_args() -> Result<Args> {
    let usage =
        "usage: logmel IN [--preset replai|torchaudio|librosa] --out OUT.npy [--network-input]";
    let mut input = None;
    let mut preset = "replai".to_string();
    let mut out = None;
    let mut network_input = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--preset" => preset = it.next().context(usage)?,
            "--out" | "-o" => out = Some(PathBuf::from(it.next().context(usage)?)),
            "--network-input" => network_input = true,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}\n{usage}"),
            s => {
                if input.replace(PathBuf::from(s)).is_some() {
                    bail!("more than one input file\n{usage}");
                }
            }
        }
    }
    Ok(Args {
        input: input.context(usage)?,
        preset,
        out: out.context(usage)?,
        network_input,
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (samples, rate) =
        decode_mono(&args.input).with_context(|| format!("decoding {}", args.input.display()))?;
    let (data, shape) = match args.preset.as_str() {
        "replai" => {
            let fe = ReplaiAudioFrontEnd::new(rate)?;
            if args.network_input {
                let x = fe.network_input(&samples)?;
                (
                    x,
                    vec![ReplaiAudioFrontEnd::FRAMES, ReplaiAudioFrontEnd::MELS],
                )
            } else {
                let s = fe.log_mel(&samples)?;
                (s.data, vec![s.n_rows, s.n_frames])
            }
        }
        "torchaudio" | "librosa" => {
            if args.network_input {
                bail!("--network-input only applies to the replai preset");
            }
            let cfg = if args.preset == "torchaudio" {
                MelConfig {
                    sample_rate: rate,
                    ..MelConfig::default()
                }
            } else {
                MelConfig::librosa(rate)
            };
            let mut s = MelSpectrogram::new(cfg)?.compute(&samples)?;
            s.to_db(10.0, 1e-10, 1.0, Some(80.0));
            (s.data, vec![s.n_rows, s.n_frames])
        }
        other => bail!("unknown preset {other:?} (replai, torchaudio, librosa)"),
    };
    write_npy_f32(&args.out, &data, &shape)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{}: {} samples at {} Hz -> {:?} ({}) -> {}",
        args.input.display(),
        samples.len(),
        rate,
        shape,
        args.preset,
        args.out.display()
    );
    Ok(())
}
