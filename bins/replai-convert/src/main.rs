//! Convert PyTorch (.pth zip or legacy) and safetensors checkpoints to safetensors with PyTorch-compatible names.
//!
//! ```text
//! replai-convert AVID_Audioset_Cross-N1024_checkpoint.pth.tar video.safetensors --prefix module.video_model.
//! replai-convert checkpoint.pth --list
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "replai-convert",
    version,
    about = "Convert a PyTorch checkpoint (zip or legacy .pth/.pth.tar) or safetensors file to safetensors",
    long_about = "Reads the state dict (nested under `model`, `state_dict` or `model_av`, or at the top \
                  level), optionally keeps only the keys under --prefix (stripping it), and writes a \
                  safetensors file with the remaining PyTorch names. Known prefixes: \
                  module.video_model. / module.audio_model. (AVID), module.backbone.video. / \
                  module.backbone.audio. / module.mlp. (RepLAI), module. (DDP)."
)]
struct Args {
    /// Input checkpoint (.pth, .pth.tar, .pt or .safetensors; the format is sniffed).
    input: PathBuf,
    /// Output safetensors file (written atomically). Not needed with --list.
    output: Option<PathBuf>,
    /// Keep only keys starting with this prefix and strip it (default: keep all keys).
    #[arg(long, short)]
    prefix: Option<String>,
    /// Print every key (after prefix filtering) with dtype and shape, then exit.
    #[arg(long, short)]
    list: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ckpt = av_models::checkpoint::load_checkpoint(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let total = ckpt.tensors.len();
    let tensors = match &args.prefix {
        Some(p) => av_models::strip_prefix(ckpt.tensors, p),
        None => ckpt.tensors,
    };
    if tensors.is_empty() {
        let mut msg = format!("{}: no tensors", args.input.display());
        if let Some(p) = &args.prefix {
            msg.push_str(&format!(" under prefix `{p}` (of {total})"));
        }
        bail!(msg);
    }
    let sorted: BTreeMap<_, _> = tensors.iter().collect();
    if args.list {
        println!(
            "# {} ({:?}{}), {} tensors",
            args.input.display(),
            ckpt.format,
            ckpt.nested_key
                .as_deref()
                .map(|k| format!(", nested under `{k}`"))
                .unwrap_or_default(),
            sorted.len()
        );
        for (k, t) in &sorted {
            println!("{k}\t{:?}\t{:?}", t.dtype(), t.dims());
        }
        return Ok(());
    }
    let Some(out) = args.output else {
        bail!("missing OUTPUT path (or pass --list)");
    };
    av_models::save_safetensors(&tensors, &out)
        .with_context(|| format!("writing {}", out.display()))?;
    let numel: usize = tensors.values().map(|t| t.elem_count()).sum();
    eprintln!(
        "wrote {} tensors ({numel} elements) from {} to {}",
        tensors.len(),
        args.input.display(),
        out.display()
    );
    Ok(())
}
