"""Timing of scipy.signal.find_peaks on a 10^6-point random walk, for docs/performance/moi.md."""
import time, numpy as np, scipy.signal as ss
rng = np.random.default_rng(0)
x = np.cumsum(rng.uniform(-0.5, 0.5, 1_000_000))
for name, kw in [("distance10_prominence1", dict(distance=10, prominence=1.0)), ("all_properties", dict(prominence=(None,None), width=(None,None), plateau_size=(None,None)))]:
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); p, _ = ss.find_peaks(x, **kw); best = min(best, time.perf_counter() - t)
    print(name, f"{best*1e3:.1f} ms", len(p))
