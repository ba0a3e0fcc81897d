//! Audio synthesis: an ambient bed (filtered noise, a mains-like hum, slow level changes,
//! drop-outs), interaction sounds whose spectrum is set by the noun and whose envelope is set by
//! the verb, and distractor sounds that change nothing visible.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::WorldConfig;
use crate::render::fast_normal;
use crate::script::{stream, DistractorKind, VideoScript, SALT_AUDIO};
use crate::vocab::{material_f0, material_noise_cutoff, noun_colour, noun_shape, shape_ratios};

use std::f32::consts::TAU;

/// One-pole low-pass smoothing coefficient for cut-off `fc`.
fn one_pole(fc: f32, sr: f32) -> f32 {
    1.0 - (-TAU * fc / sr).exp()
}

/// A click: 1 ms linear attack, exponential decay with time constant `tau`.
fn click(x: f32, tau: f32) -> f32 {
    if x >= 0.0 {
        (-x / tau).exp()
    } else if x > -0.001 {
        1.0 + x / 0.001
    } else {
        0.0
    }
}

/// Support `[from, to]` (seconds, relative to the peak) of verb `verb`'s envelope.
fn verb_support(verb: usize) -> (f32, f32) {
    match verb {
        0 => (-0.17, 0.06),
        1 => (-0.002, 0.35),
        2 => (-0.085, 0.06),
        3 => (-0.002, 0.14),
        4 => (-0.002, 0.75),
        _ => (-0.125, 0.125),
    }
}

/// Amplitude envelope of verb `verb`, peaking (value 1) at x = 0. Reversible pairs have
/// mirrored shapes, so the direction of an interaction is audible:
/// open = creak building up then a pop, close = a sharp knock;
/// turn-on = weak then strong click, turn-off = strong then weak click;
/// put = a long thud with a small bounce, take = a short tremolo scrape.
fn verb_envelope(verb: usize, x: f32) -> f32 {
    match verb {
        0 => {
            if x < 0.0 {
                ((x + 0.17) / 0.17).max(0.0).powi(2)
            } else {
                (-x / 0.008).exp()
            }
        }
        1 => click(x, 0.05),
        2 => 0.4 * click(x + 0.08, 0.01) + click(x, 0.012),
        3 => click(x, 0.012) + 0.4 * click(x - 0.08, 0.01),
        4 => click(x, 0.15) + 0.3 * click(x - 0.12, 0.03),
        _ => {
            if x.abs() >= 0.125 {
                0.0
            } else {
                let hann = 0.5 + 0.5 * (TAU * x / 0.25).cos();
                hann * (0.55 + 0.45 * (TAU * 35.0 * x).cos())
            }
        }
    }
}

fn jitter_gain(rng: &mut ChaCha8Rng, db: f64) -> f32 {
    if db <= 0.0 {
        1.0
    } else {
        10f64.powf(rng.random_range(-db..=db) / 20.0) as f32
    }
}

/// Adds `event` (already scaled) to `out` with its sample 0 at absolute time `start_s`.
fn mix_in(out: &mut [f32], event: &[f32], start_s: f64, sr: f64) {
    let start = (start_s * sr).round() as i64;
    for (i, &v) in event.iter().enumerate() {
        let j = start + i as i64;
        if j >= 0 && (j as usize) < out.len() {
            out[j as usize] += v;
        }
    }
}

/// Scales `x` so its largest magnitude equals `peak`.
fn normalise_peak(x: &mut [f32], peak: f32) {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if m > 0.0 {
        let s = peak / m;
        x.iter_mut().for_each(|v| *v *= s);
    }
}

/// The sound of `verb` applied to `noun`: modal resonances (frequencies from the noun's
/// material and shape) plus a noise transient, under the verb's envelope.
fn interaction_sound(noun: usize, verb: usize, sr: f32, rng: &mut ChaCha8Rng) -> (Vec<f32>, f32) {
    let (from, to) = verb_support(verb);
    let n = ((to - from) * sr).ceil() as usize;
    let f0 = material_f0(noun_colour(noun)) * rng.random_range(0.97..1.03f32);
    let ratios = shape_ratios(noun_shape(noun));
    let partials: Vec<(f32, f32, f32)> = ratios
        .iter()
        .enumerate()
        .filter(|(_, r)| f0 * **r < 0.45 * sr)
        .map(|(j, r)| {
            let f = f0 * r * rng.random_range(0.995..1.005f32);
            (
                TAU * f / sr,
                rng.random_range(0.0..TAU),
                1.0 / (j as f32 + 1.0).powf(0.7),
            )
        })
        .collect();
    let amp_sum: f32 = partials.iter().map(|p| p.2).sum::<f32>().max(1e-6);
    let a = one_pole(material_noise_cutoff(noun_colour(noun)), sr);
    let mut lp = 0.0f32;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = from + i as f32 / sr;
        let mut modal = 0.0;
        for &(w, ph, amp) in &partials {
            modal += amp * (w * i as f32 + ph).sin();
        }
        lp += a * (fast_normal(rng) - lp);
        out.push(verb_envelope(verb, x) * (0.65 * modal / amp_sum + 0.55 * lp));
    }
    (out, from)
}

/// RBJ band-pass biquad (constant 0 dB peak gain), applied in place.
fn bandpass(x: &mut [f32], fc: f32, q: f32, sr: f32) {
    let w0 = TAU * fc / sr;
    let alpha = w0.sin() / (2.0 * q);
    let a0 = 1.0 + alpha;
    let (b0, b2) = (alpha / a0, -alpha / a0);
    let (a1, a2) = (-2.0 * w0.cos() / a0, (1.0 - alpha) / a0);
    let (mut x1, mut x2, mut y1, mut y2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for v in x.iter_mut() {
        let y = b0 * *v + b2 * x2 - a1 * y1 - a2 * y2;
        x2 = x1;
        x1 = *v;
        y2 = y1;
        y1 = y;
        *v = y;
    }
}

/// A distractor sound; returns the samples and the offset of sample 0 from the peak time.
fn distractor_sound(kind: DistractorKind, sr: f32, rng: &mut ChaCha8Rng) -> (Vec<f32>, f32) {
    match kind {
        DistractorKind::Burst => {
            let tau = rng.random_range(0.02..0.15f32);
            let n = ((5.0 * tau + 0.002) * sr) as usize;
            let mut x: Vec<f32> = (0..n).map(|_| fast_normal(rng)).collect();
            bandpass(
                &mut x,
                rng.random_range(250.0..6_000.0f32),
                rng.random_range(1.0..6.0f32),
                sr,
            );
            for (i, v) in x.iter_mut().enumerate() {
                *v *= click(i as f32 / sr - 0.002, tau);
            }
            (x, -0.002)
        }
        DistractorKind::Beep => {
            let len = rng.random_range(0.08..0.25f32);
            let f = rng.random_range(400.0..3_000.0f32);
            let n = (len * sr) as usize;
            let x = (0..n)
                .map(|i| {
                    let t = i as f32 / sr;
                    let hann = 0.5 - 0.5 * (TAU * t / len).cos();
                    hann * ((TAU * f * t).sin() + 0.3 * (TAU * 2.0 * f * t).sin())
                })
                .collect();
            (x, -len / 2.0)
        }
        DistractorKind::Clatter => {
            let n = (0.3 * sr) as usize;
            let mut x = vec![0.0f32; n];
            let hits = rng.random_range(3..=5usize);
            let f = rng.random_range(500.0..4_000.0f32);
            for h in 0..hits {
                // The first hit is the loudest and defines the peak time.
                let at = if h == 0 {
                    0.0
                } else {
                    rng.random_range(0.03..0.25f32)
                };
                let g = if h == 0 {
                    1.0
                } else {
                    rng.random_range(0.3..0.7f32)
                };
                let ph = rng.random_range(0.0..TAU);
                let fh = f * rng.random_range(0.9..1.1f32);
                let start = (at * sr) as usize;
                for (i, v) in x.iter_mut().enumerate().skip(start) {
                    let t = (i - start) as f32 / sr;
                    *v += g
                        * (-t / 0.015).exp()
                        * ((TAU * fh * t + ph).sin() + 0.5 * fast_normal(rng));
                }
            }
            (x, 0.0)
        }
    }
}

/// Renders the whole audio track of a video, mono in `[-1, 1]`.
pub(crate) fn render_audio(cfg: &WorldConfig, script: &VideoScript) -> Vec<f32> {
    let mut rng = stream(script.seed, SALT_AUDIO);
    let sr = cfg.sample_rate as f32;
    let n = script.n_samples;

    // Ambient bed: pink-ish noise (two low-passed components plus a little white), a hum and a
    // slow level modulation, scaled to the requested RMS.
    let (a_lo, a_mid) = (one_pole(300.0, sr), one_pole(2_500.0, sr));
    let (mut lo, mut mid) = (0.0f32, 0.0f32);
    let hum_f = rng.random_range(50.0..140.0f32);
    let hum_w = TAU * hum_f / sr;
    let mod_w = TAU / (rng.random_range(3.0..9.0f32) * sr);
    let mod_ph = rng.random_range(0.0..TAU);
    let mut amb: Vec<f32> = (0..n)
        .map(|i| {
            let wn = fast_normal(&mut rng);
            lo += a_lo * (wn - lo);
            mid += a_mid * (wn - mid);
            let noise = 2.5 * lo + 0.8 * mid + 0.15 * wn;
            let hum = 0.25 * ((hum_w * i as f32).sin() + 0.5 * (2.0 * hum_w * i as f32).sin());
            (1.0 + 0.3 * (mod_w * i as f32 + mod_ph).sin()) * (noise + hum)
        })
        .collect();
    let rms = (amb.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
    if rms > 0.0 {
        let s = (cfg.ambient_level / rms) as f32;
        amb.iter_mut().for_each(|v| *v *= s);
    }
    // Drop-outs: ambient falls to 3 % with 30 ms ramps.
    for s in &script.silences {
        let ramp = 0.03f64;
        let i0 = ((s.start_s - ramp).max(0.0) * sr as f64) as usize;
        let i1 = (((s.stop_s + ramp) * sr as f64) as usize).min(n);
        for (i, v) in amb.iter_mut().enumerate().take(i1).skip(i0) {
            let t = i as f64 / sr as f64;
            let inside = ((t - (s.start_s - ramp)) / ramp)
                .min(((s.stop_s + ramp) - t) / ramp)
                .clamp(0.0, 1.0);
            *v *= (1.0 - 0.97 * inside) as f32;
        }
    }
    let mut out = amb;

    for it in &script.interactions {
        let (mut ev, from) = interaction_sound(it.noun, it.verb, sr, &mut rng);
        let mut level = cfg.event_level as f32 * jitter_gain(&mut rng, cfg.level_jitter_db);
        if it.quiet {
            level *= cfg.quiet_gain as f32;
        }
        normalise_peak(&mut ev, level);
        mix_in(&mut out, &ev, it.time_s + from as f64, sr as f64);
    }
    for d in &script.distractors {
        let (mut ev, from) = distractor_sound(d.kind, sr, &mut rng);
        let level = cfg.event_level as f32
            * rng.random_range(0.6..1.1f32)
            * jitter_gain(&mut rng, cfg.level_jitter_db);
        normalise_peak(&mut ev, level);
        mix_in(&mut out, &ev, d.time_s + from as f64, sr as f64);
    }
    out.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
    out
}
