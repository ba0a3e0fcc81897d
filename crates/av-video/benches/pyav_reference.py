#!/usr/bin/env python3
"""PyAV baseline for the RepLAI sample, one thread, for docs/performance/video.md.

Mirrors what crates/av-video/benches/sampler.rs times, the way a careful PyAV loader does it:
open the file, seek to the keyframe at or before t - 0.6 s, decode forward to t + 0.6 s, pick the
8 frames of each clip on the 16 fps grid, convert and resize only those 16 frames with swscale
(bilinear, random short side 128..180), random 112 crop, flip, normalise; then seek the audio,
decode [t - 1, t + 1] s, mix to mono, resample to 16 kHz (linear interpolation, cheaper than the
reference's sinc) and compute the 125x80 log-mel with numpy. Everything the Rust side does more
exactly (sinc resampling, PIL-style antialiased resize) is done more cheaply here, so the
comparison favours PyAV.

usage: pyav_reference.py FILE.mp4 [N_SAMPLES] [--moments T1,T2,...] [--cycle]

Moments: drawn (seeded) from --moments when given (the criterion bench prints the moments it
samples from, so both sides decode from the same keyframe distances), else uniform in
[0.6, D - 0.6]. With --cycle the given moments are taken in order, over and over, as the
criterion bench does since session 7 (less sampling noise in the mean at GOP 250).
"""
import random
import sys
import time

import av
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None, None]


def mel_filterbank(n_fft=512, n_mels=80, sr=16000):
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
    mel_to_hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fb = np.zeros((n_fft // 2 + 1, n_mels), np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[:, m] = np.maximum(0, np.minimum(up, down))
    return fb


FB = mel_filterbank()
WIN = np.hanning(513)[:-1].astype(np.float32)


def log_mel(x, sr):
    n_out = int(np.ceil(len(x) * 16000 / sr))
    x16 = np.interp(np.arange(n_out) * sr / 16000, np.arange(len(x)), x).astype(np.float32)
    n_frames = 1 + (len(x16) - 512) // 256
    idx = np.arange(512)[None, :] + 256 * np.arange(n_frames)[:, None]
    spec = np.abs(np.fft.rfft(x16[idx] * WIN, axis=1)) ** 2
    mel = np.log(np.maximum(spec @ FB, 1e-10))
    sel = np.floor(np.linspace(0, n_frames - 1, 125)).astype(int)
    return ((mel[sel] + 7.03) / 4.66)[None]


def clip(frames, rng):
    w, h = frames[0].width, frames[0].height
    s = rng.uniform(128, 180)
    m = min(w, h)
    ow, oh = int(w / m * s), int(h / m * s)
    x0, y0 = rng.randint(0, ow - 112), rng.randint(0, oh - 112)
    flip = rng.random() < 0.5
    out = np.empty((8, 112, 112, 3), np.uint8)
    for i, f in enumerate(frames):
        a = f.to_ndarray(width=ow, height=oh, format="rgb24", interpolation="BILINEAR")
        a = a[y0:y0 + 112, x0:x0 + 112]
        out[i] = a[:, ::-1] if flip else a
    x = out.transpose(3, 0, 1, 2).astype(np.float32) / 255.0
    return (x - MEAN) / STD


def sample(path, t, rng):
    with av.open(path) as c:
        vs = c.streams.video[0]
        vs.codec_context.thread_count = 1
        vs.thread_type = "SLICE"
        tb = float(vs.time_base)
        wins = [(t - 0.6, t - 0.1), (t + 0.1, t + 0.6)]
        grids = []
        for a, b in wins:
            k0, k1 = int(np.ceil(a * 16 - 1e-6)), int(np.floor(b * 16 + 1e-6))
            g = [k / 16 for k in range(k0, k1 + 1)]
            st = rng.randint(0, len(g) - 8)
            grids.append(g[st:st + 8])
        c.seek(int((wins[0][0] - 1 / 30) / tb), stream=vs, backward=True, any_frame=False)
        decoded = []
        for f in c.decode(vs):
            ft = f.pts * tb
            if ft >= wins[0][0] - 0.05:
                decoded.append((ft, f))
            if ft > wins[1][1] + 0.05:
                break
        ts = np.array([d[0] for d in decoded])
        clips = []
        for g in grids:
            frames = [decoded[int(np.argmin(np.abs(ts - x)))][1] for x in g]
            clips.append(clip(frames, rng))
        aus = c.streams.audio[0]
        atb = float(aus.time_base)
        a0, a1 = max(t - 1.0, 0.0), t + 1.0
        c.seek(int(max(a0 - 0.1, 0) / atb), stream=aus, backward=True)
        chunks, start = [], None
        for f in c.decode(aus):
            ft = f.pts * atb
            if ft > a1:
                break
            if start is None:
                start = ft
            chunks.append(f.to_ndarray().mean(axis=0))
        sr = aus.rate
        x = np.concatenate(chunks)
        i0 = int(round((a0 - start) * sr))
        x = x[max(i0, 0):max(i0, 0) + int(round((a1 - a0) * sr))]
        return clips[0], clips[1], log_mel(x, sr)


def main():
    args = sys.argv[1:]
    moments = None
    cycle = "--cycle" in args
    if cycle:
        args.remove("--cycle")
    if "--moments" in args:
        i = args.index("--moments")
        moments = [float(v) for v in args[i + 1].split(",")]
        del args[i:i + 2]
    path = args[0]
    n = int(args[1]) if len(args) > 1 else 200
    with av.open(path) as c:
        d = float(c.streams.video[0].duration * c.streams.video[0].time_base)
    rng = random.Random(0)
    if moments and cycle:
        order = iter(range(10**9))
        pick = lambda: moments[next(order) % len(moments)]
    elif moments:
        pick = lambda: rng.choice(moments)
    else:
        pick = lambda: rng.uniform(0.6, d - 0.6)
    for _ in range(5):  # warm-up
        sample(path, pick(), rng)
    t = time.perf_counter()
    for _ in range(n):
        b, a, au = sample(path, pick(), rng)
    dt = time.perf_counter() - t
    assert b.shape == (3, 8, 112, 112) and au.shape == (1, 125, 80)
    print(f"{path}: {n / dt:.1f} samples/s ({1000 * dt / n:.1f} ms/sample), PyAV {av.__version__}")


if __name__ == "__main__":
    main()
