"""In-process scipy reference timing for docs/performance/moi.md."""
import sys, time
import numpy as np, scipy.signal, soundfile as sf

def moi(mono, fs):
    f, t, sxx = scipy.signal.spectrogram(mono, fs)
    L = np.log10(sxx + 1e-5)
    L[L == -np.inf] = -25
    Z = (L - np.mean(L, axis=1, keepdims=True)) / (np.std(L, axis=1, keepdims=True) + 1e-5)
    c = Z.mean(0)
    p, _ = scipy.signal.find_peaks(c, distance=10, prominence=1.0)
    return t[p]

path = sys.argv[1]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
for dtype in ("float32", "float64"):
    best_read = best_all = 1e9
    for _ in range(reps):
        t0 = time.perf_counter()
        x, fs = sf.read(path, dtype=dtype, always_2d=True)
        mono = x.mean(axis=1)
        t1 = time.perf_counter()
        peaks = moi(mono, fs)
        t2 = time.perf_counter()
        best_read = min(best_read, t1 - t0); best_all = min(best_all, t2 - t0)
    print(f"{dtype}: read {best_read*1e3:.1f} ms, read+curve+peaks {best_all*1e3:.1f} ms (best of {reps}), {len(peaks)} peaks")
