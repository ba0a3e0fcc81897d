#!/usr/bin/env python3
"""Times the torchaudio side of the RepLAI audio front end, for docs/performance/audio.md.

Mirrors the reference transform (RepLAI `data/audio_transforms.py`, ResampleLogMelSpectrogram):
the Resample and MelSpectrogram modules are built once, then each 2 s, 44.1 kHz mono clip goes
through resample -> mel -> log(clamp 1e-10) -> time subsample to 125 -> normalise.
One thread (torch.set_num_threads(1)), CPU, float32.

usage: python torchaudio_frontend.py [--threads N]
"""
import argparse
import time

import torch
import torchaudio

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
p.add_argument("--iters", type=int, default=300)
args = p.parse_args()
torch.set_num_threads(args.threads)

g = torch.Generator().manual_seed(0)
clip = (0.1 * torch.randn(1, 88_200, generator=g)).float()
clip16 = (0.1 * torch.randn(1, 32_000, generator=g)).float()

resample = torchaudio.transforms.Resample(44_100, 16_000)
mel = torchaudio.transforms.MelSpectrogram(
    sample_rate=16_000, n_fft=512, win_length=512, hop_length=256, n_mels=80, center=False)


def front_end(x):
    s = mel(resample(x))
    s = torch.log(torch.clamp(s, min=1e-10)).transpose(-1, -2)  # (1, T, F)
    idx = torch.clamp(torch.linspace(0, s.shape[1] - 1, 125), 0, s.shape[1] - 1).long()
    s = torch.index_select(s, 1, idx)
    return (s - (-7.03)) / 4.66


def bench(name, fn, x):
    with torch.inference_mode():
        for _ in range(20):
            fn(x)
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(f"{name:<40s} median {med * 1e6:8.1f} us   min {times[0] * 1e6:8.1f} us")


print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, threads {torch.get_num_threads()}")
bench("resample 44.1k->16k + mel + log (2 s)", front_end, clip)
bench("resample 44.1k->16k only (2 s)", resample, clip)
bench("mel only (2 s at 16 kHz)", mel, clip16)
