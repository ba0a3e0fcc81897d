//! Frame rendering: a textured background with baked-in clutter, a slowly drifting camera,
//! brightness flicker and sensor noise, and the interacted object drawn analytically with
//! anti-aliased edges so that sub-pixel drift does not make edges shimmer.

use ndarray::Array3;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

use crate::config::WorldConfig;
use crate::script::{stream, VideoScript, VisualState, SALT_PIXELS};
use crate::vocab::{noun_colour, noun_shape, COLOUR_RGB, SHAPES};

/// Approximately standard-normal noise from one 64-bit draw (Irwin-Hall sum of four uniforms,
/// rescaled to unit variance): four times cheaper than Box-Muller and good enough for noise.
#[inline]
pub(crate) fn fast_normal(rng: &mut ChaCha8Rng) -> f32 {
    let r = rng.next_u64();
    let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
    // Sum of four U(0,1): mean 2, variance 1/3.
    (s as f32 / 65_535.0 - 2.0) * 1.732_050_8
}

/// Everything needed to draw one object (interacted or clutter).
pub(crate) struct ObjectDraw {
    pub cx: f32,
    pub cy: f32,
    pub r: f32,
    pub shape: usize,
    pub colour: [f32; 3],
    pub lid: f32,
    pub light: f32,
    pub alpha: f32,
}

fn sd_box(p: f32, q: f32, cx: f32, cy: f32, hx: f32, hy: f32) -> f32 {
    let dx = (p - cx).abs() - hx;
    let dy = (q - cy).abs() - hy;
    let outside = (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt();
    outside + dx.max(dy).min(0.0)
}

fn sd_ellipse(p: f32, q: f32, cx: f32, cy: f32, a: f32, b: f32) -> f32 {
    let (u, v) = ((p - cx) / a, (q - cy) / b);
    ((u * u + v * v).sqrt() - 1.0) * a.min(b)
}

/// Signed distance (in object radii) to the body of `shape`. The body spans q in [-0.55, 0.9].
fn sd_body(shape: usize, p: f32, q: f32) -> f32 {
    match shape % SHAPES.len() {
        0 => sd_box(p, q, 0.0, 0.175, 0.8, 0.725),
        1 => sd_ellipse(p, q, 0.0, 0.175, 0.75, 0.725),
        2 => {
            let half_width = 0.45 + (q + 0.55) / 1.45 * 0.35;
            let side = (p.abs() - half_width) * 0.97;
            side.max((q - 0.175).abs() - 0.725)
        }
        _ => sd_ellipse(p, q, 0.0, -0.55, 0.92, 1.45).max(-0.55 - q),
    }
}

/// Half length of the lid of `shape` (it covers the body's top edge).
fn lid_half(shape: usize) -> f32 {
    [0.86, 0.62, 0.5, 0.95][shape % SHAPES.len()]
}

const LID_Q: f32 = -0.64;
const LID_HALF_THICK: f32 = 0.1;
const LIGHT_Q: f32 = 0.25;
const LIGHT_R: f32 = 0.27;

#[inline]
fn coverage(sd_norm: f32, r: f32) -> f32 {
    (0.5 - sd_norm * r).clamp(0.0, 1.0)
}

#[inline]
fn lerp3(c: &mut [f32; 3], target: [f32; 3], a: f32) {
    for (ck, tk) in c.iter_mut().zip(target) {
        *ck += a * (tk - *ck);
    }
}

/// Draws `o` into an `(h, w, 3)` f32 buffer whose pixel `(x, y)` shows position `(x + ox, y + oy)`
/// of the object's coordinate frame.
pub(crate) fn draw_object(buf: &mut [f32], w: usize, h: usize, ox: f32, oy: f32, o: &ObjectDraw) {
    if o.alpha <= 0.0 || o.r <= 0.0 {
        return;
    }
    let (cx, cy) = (o.cx - ox, o.cy - oy);
    let reach = 1.9 * o.r + 2.0;
    let x0 = ((cx - reach).floor().max(0.0)) as usize;
    let x1 = ((cx + reach).ceil().max(0.0) as usize).min(w);
    let y0 = ((cy - reach).floor().max(0.0)) as usize;
    let y1 = ((cy + reach).ceil().max(0.0) as usize).min(h);
    let angle = o.lid * 1.75; // about 100 degrees when fully open
    let (sin_a, cos_a) = angle.sin_cos();
    let half = lid_half(o.shape);
    let hinge = (-half, LID_Q);
    let lid_colour = [
        o.colour[0] * 0.62 + 12.0,
        o.colour[1] * 0.62 + 12.0,
        o.colour[2] * 0.62 + 12.0,
    ];
    let light_colour = [
        62.0 + o.light * (255.0 - 62.0),
        62.0 + o.light * (242.0 - 62.0),
        68.0 + o.light * (168.0 - 68.0),
    ];
    for y in y0..y1 {
        let q = (y as f32 + 0.5 - cy) / o.r;
        for x in x0..x1 {
            let p = (x as f32 + 0.5 - cx) / o.r;
            let idx = (y * w + x) * 3;
            let mut c = [buf[idx], buf[idx + 1], buf[idx + 2]];
            let body = coverage(sd_body(o.shape, p, q), o.r);
            if body > 0.0 {
                // Top-lit shading gives the body some volume.
                let shade = 1.12 - 0.22 * (q + 0.55) / 1.45;
                let col = [
                    o.colour[0] * shade,
                    o.colour[1] * shade,
                    o.colour[2] * shade,
                ];
                lerp3(&mut c, col, o.alpha * body);
                if o.lid > 0.0 {
                    let open = coverage(sd_ellipse(p, q, 0.0, -0.5, half * 0.85, 0.13), o.r);
                    lerp3(&mut c, [28.0, 24.0, 22.0], o.alpha * o.lid * open * body);
                }
                let d_light = ((p * p) + (q - LIGHT_Q) * (q - LIGHT_Q)).sqrt();
                let bulb = coverage(d_light - LIGHT_R, o.r);
                lerp3(&mut c, light_colour, o.alpha * bulb * body);
                if o.light > 0.0 && d_light < 0.75 {
                    let g = o.alpha * o.light * body * 80.0 * (1.0 - d_light / 0.75).powi(2);
                    c[0] += g;
                    c[1] += 0.9 * g;
                    c[2] += 0.45 * g;
                }
            }
            // Lid: a bar hinged at the left end of the top edge, rotated upwards when open.
            let (dp, dq) = (p - hinge.0, q - hinge.1);
            let along = dp * cos_a - dq * sin_a;
            let across = dp * sin_a + dq * cos_a;
            let sd_lid = ((along - half).abs() - half).max(across.abs() - LID_HALF_THICK);
            let lid = coverage(sd_lid, o.r);
            if lid > 0.0 {
                lerp3(&mut c, lid_colour, o.alpha * lid);
            }
            buf[idx] = c[0];
            buf[idx + 1] = c[1];
            buf[idx + 2] = c[2];
        }
    }
}

/// Per-video look: background canvas (with clutter baked in), camera path, flicker.
pub(crate) struct Look {
    canvas: Vec<f32>,
    canvas_w: usize,
    margin: f32,
    drift: [(f32, f32, f32); 4],
    flicker_freq: f32,
    flicker_phase: f32,
}

fn random_muted(rng: &mut ChaCha8Rng) -> [f32; 3] {
    let base = rng.random_range(80.0..170.0f32);
    [
        base + rng.random_range(-35.0..35.0f32),
        base + rng.random_range(-35.0..35.0f32),
        base + rng.random_range(-35.0..35.0f32),
    ]
}

impl Look {
    pub(crate) fn new(cfg: &WorldConfig, rng: &mut ChaCha8Rng) -> Self {
        let (w, h) = (cfg.width as usize, cfg.height as usize);
        let margin = (cfg.drift_px as f32 * 1.05).ceil() + 2.0;
        let m = margin as usize;
        let (cw, ch) = (w + 2 * m, h + 2 * m);
        let scale = (w.min(h) as f32 / 48.0).max(0.25);
        let c1 = random_muted(rng);
        let c2 = random_muted(rng);
        // Three gratings plus a coarse value-noise grid: tiles, grain and stains.
        let gratings: Vec<(f32, f32, f32, f32)> = (0..3)
            .map(|_| {
                let theta = rng.random_range(0.0..std::f32::consts::PI);
                let period = rng.random_range(5.0..16.0f32) * scale;
                let k = std::f32::consts::TAU / period;
                (
                    k * theta.cos(),
                    k * theta.sin(),
                    rng.random_range(0.0..std::f32::consts::TAU),
                    rng.random_range(0.3..1.0f32),
                )
            })
            .collect();
        let cell = 8.0 * scale;
        let gw = (cw as f32 / cell).ceil() as usize + 2;
        let gh = (ch as f32 / cell).ceil() as usize + 2;
        let grid: Vec<f32> = (0..gw * gh)
            .map(|_| rng.random_range(-1.0..1.0f32))
            .collect();
        let amp_sum: f32 = gratings.iter().map(|g| g.3).sum();
        let contrast = cfg.texture_contrast as f32;
        let mut canvas = vec![0.0f32; cw * ch * 3];
        for y in 0..ch {
            for x in 0..cw {
                let (fx, fy) = (x as f32, y as f32);
                let mut g = 0.0;
                for &(kx, ky, ph, a) in &gratings {
                    g += a * (kx * fx + ky * fy + ph).sin();
                }
                g /= amp_sum;
                let (gx, gy) = (fx / cell, fy / cell);
                let (ix, iy) = (gx as usize, gy as usize);
                let (tx, ty) = (gx - ix as f32, gy - iy as f32);
                let at = |i: usize, j: usize| grid[j.min(gh - 1) * gw + i.min(gw - 1)];
                let n = at(ix, iy) * (1.0 - tx) * (1.0 - ty)
                    + at(ix + 1, iy) * tx * (1.0 - ty)
                    + at(ix, iy + 1) * (1.0 - tx) * ty
                    + at(ix + 1, iy + 1) * tx * ty;
                let t = (0.5 + contrast * (0.55 * g + 0.45 * n)).clamp(0.0, 1.0);
                let idx = (y * cw + x) * 3;
                for (k, px) in canvas[idx..idx + 3].iter_mut().enumerate() {
                    *px = c1[k] + t * (c2[k] - c1[k]);
                }
            }
        }
        // Clutter: smaller static objects away from the centre, never interacted with.
        let main_r = cfg.object_scale as f32 * w.min(h) as f32;
        for _ in 0..cfg.n_clutter {
            let ang = rng.random_range(0.0..std::f32::consts::TAU);
            let dist = rng.random_range(0.36..0.48f32) * w.min(h) as f32;
            let noun = rng.random_range(0..crate::vocab::MAX_NOUNS);
            let o = ObjectDraw {
                cx: w as f32 / 2.0 + dist * ang.cos() + margin,
                cy: h as f32 / 2.0 + dist * ang.sin() + margin,
                r: main_r * rng.random_range(0.4..0.6f32),
                shape: noun_shape(noun),
                colour: COLOUR_RGB[noun_colour(noun)],
                lid: 0.0,
                light: 0.0,
                alpha: 1.0,
            };
            draw_object(&mut canvas, cw, ch, 0.0, 0.0, &o);
        }
        let amp = cfg.drift_px as f32;
        let mut path = |share: f32| {
            (
                amp * share,
                std::f32::consts::TAU / rng.random_range(4.0..14.0f32),
                rng.random_range(0.0..std::f32::consts::TAU),
            )
        };
        let drift = [path(0.7), path(0.3), path(0.7), path(0.3)];
        Look {
            canvas,
            canvas_w: cw,
            margin,
            drift,
            flicker_freq: std::f32::consts::TAU * rng.random_range(0.2..1.5f32),
            flicker_phase: rng.random_range(0.0..std::f32::consts::TAU),
        }
    }

    fn camera(&self, t: f32) -> (f32, f32) {
        let d = &self.drift;
        let f = |i: usize| d[i].0 * (d[i].1 * t + d[i].2).sin();
        (f(0) + f(1), f(2) + f(3))
    }
}

/// Renders every frame of a video.
pub(crate) fn render_frames(cfg: &WorldConfig, script: &VideoScript) -> Vec<Array3<u8>> {
    let mut rng = stream(script.seed, SALT_PIXELS);
    let look = Look::new(cfg, &mut rng);
    let (w, h) = (cfg.width as usize, cfg.height as usize);
    let cw = look.canvas_w;
    let noise = cfg.pixel_noise as f32;
    let flicker = cfg.flicker as f32;
    let mut buf = vec![0.0f32; w * h * 3];
    let mut frames = Vec::with_capacity(script.n_frames);
    for k in 0..script.n_frames {
        let t = k as f64 / script.fps;
        let (dx, dy) = look.camera(t as f32);
        // Background: bilinear sample of the canvas, shifted by the camera.
        let (sx, sy) = (look.margin + dx, look.margin + dy);
        let (ix, iy) = (sx.floor(), sy.floor());
        let (tx, ty) = (sx - ix, sy - iy);
        let (ix, iy) = (ix.max(0.0) as usize, iy.max(0.0) as usize);
        let weights = [
            (1.0 - tx) * (1.0 - ty),
            tx * (1.0 - ty),
            (1.0 - tx) * ty,
            tx * ty,
        ];
        for y in 0..h {
            let r0 = ((y + iy) * cw + ix) * 3;
            let r1 = r0 + cw * 3;
            for x in 0..w {
                let (a, b) = (r0 + x * 3, r1 + x * 3);
                for c in 0..3 {
                    buf[(y * w + x) * 3 + c] = weights[0] * look.canvas[a + c]
                        + weights[1] * look.canvas[a + 3 + c]
                        + weights[2] * look.canvas[b + c]
                        + weights[3] * look.canvas[b + 3 + c];
                }
            }
        }
        let VisualState {
            object,
            lid,
            light,
            alpha,
        } = script.visual_state(t, cfg.change_s);
        let o = ObjectDraw {
            cx: object.cx,
            cy: object.cy,
            r: object.radius,
            shape: noun_shape(object.noun),
            colour: COLOUR_RGB[noun_colour(object.noun)],
            lid,
            light,
            alpha,
        };
        draw_object(&mut buf, w, h, dx, dy, &o);
        let gain = 1.0
            + flicker
                * (0.6 * (look.flicker_freq * t as f32 + look.flicker_phase).sin()
                    + 0.4 * rng.random_range(-1.0..1.0f32));
        let mut frame = Array3::<u8>::zeros((h, w, 3));
        if let Some(out) = frame.as_slice_mut() {
            for (o, &v) in out.iter_mut().zip(&buf) {
                *o = (v * gain + noise * fast_normal(&mut rng))
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
        frames.push(frame);
    }
    frames
}
