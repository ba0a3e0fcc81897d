//! The timeline of one video: when interactions, distractor sounds and ambient drop-outs
//! happen, and the object's state between interactions. Cheap to compute (no pixels, no
//! samples), so labels of a big world are available without rendering it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::WorldConfig;
use crate::vocab::{verb_effect, Effect};

/// Which part of the world a video belongs to (split by video, never by interaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used for pretraining and for training the probe.
    Train,
    /// Held out: the probe's validation set.
    Validation,
}

/// A labelled audible interaction: the visual state of the object changes at `time_s` and an
/// impact-like sound peaks there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Moment of the state change and of the sound's peak (a whole number of centiseconds).
    pub time_s: f64,
    /// Verb class (see [`crate::VERB_NAMES`]).
    pub verb: usize,
    /// Noun class of the object acted on.
    pub noun: usize,
    /// Start of the labelled action segment (centiseconds, clamped to the video).
    pub start_s: f64,
    /// End of the labelled action segment (centiseconds, clamped to the video).
    pub stop_s: f64,
    /// Nearly silent interaction: the state changes but the sound is faint, so MoI misses it.
    pub quiet: bool,
}

/// Kind of a distractor sound (none of them changes anything visible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistractorKind {
    /// Resonant noise burst with an impact envelope (a knock somewhere off-screen).
    Burst,
    /// Short tonal beep (an appliance).
    Beep,
    /// A rattle of three to five clicks.
    Clatter,
}

/// A loud sound without any visual change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distractor {
    /// Peak of the sound.
    pub time_s: f64,
    /// What it sounds like.
    pub kind: DistractorKind,
}

/// An ambient drop-out: the background noise nearly vanishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Start of the drop-out.
    pub start_s: f64,
    /// End of the drop-out.
    pub stop_s: f64,
}

/// State of the interacted object between two interactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    /// Whether the object is in view (put/take toggle this).
    pub present: bool,
    /// Noun class of the object (kept while absent: the last object seen).
    pub noun: usize,
    /// Centre x in frame pixels when the camera is at rest.
    pub cx: f32,
    /// Centre y in frame pixels when the camera is at rest.
    pub cy: f32,
    /// Radius in pixels.
    pub radius: f32,
    /// Lid open (open/close toggle this).
    pub lid_open: bool,
    /// Light on (turn-on/turn-off toggle this).
    pub light_on: bool,
}

/// Everything about one video except its pixels and samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoScript {
    /// Position of the video in the world.
    pub index: usize,
    /// EPIC-style video id, `S<participant>_<nn>`.
    pub video_id: String,
    /// EPIC-style participant id, `S<nn>`.
    pub participant_id: String,
    /// Train or validation.
    pub split: Split,
    /// Exact duration (`n_frames / fps`).
    pub duration_s: f64,
    /// Number of frames.
    pub n_frames: usize,
    /// Number of audio samples (`round(duration_s * sample_rate)`).
    pub n_samples: usize,
    /// Frame rate.
    pub fps: f64,
    /// Audio sample rate.
    pub sample_rate: u32,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Labelled interactions in time order.
    pub interactions: Vec<Interaction>,
    /// Distractor sounds in time order.
    pub distractors: Vec<Distractor>,
    /// Ambient drop-outs in time order (they may overlap events).
    pub silences: Vec<Silence>,
    /// `states[0]` is the initial state, `states[i + 1]` the state after interaction `i`.
    pub states: Vec<ObjectState>,
    /// Seed of this video (derived from the world seed and the index).
    pub seed: u64,
}

/// Stream salts: independent random streams per concern, so changing how many random numbers
/// the renderer draws never changes the timeline or the audio.
pub(crate) const SALT_SCRIPT: u64 = 0x5C21_97A1;
pub(crate) const SALT_PIXELS: u64 = 0x91C5_0B7E;
pub(crate) const SALT_AUDIO: u64 = 0xA0D1_0F00;

/// SplitMix64 finaliser: a well-mixed 64-bit hash.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of video `index` in a world seeded with `seed`.
pub(crate) fn video_seed(seed: u64, index: usize) -> u64 {
    mix64(seed ^ mix64(index as u64 ^ 0x7669_6465_6F00_0000))
}

/// A random generator for one concern of one video.
pub(crate) fn stream(video_seed: u64, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(video_seed ^ salt))
}

/// Rounds to the centisecond grid EPIC timestamps use.
pub(crate) fn round_cs(t: f64) -> f64 {
    (t * 100.0).round() / 100.0
}

fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

fn random_placement(rng: &mut ChaCha8Rng, cfg: &WorldConfig, noun: usize) -> ObjectState {
    let (w, h) = (cfg.width as f32, cfg.height as f32);
    let j = cfg.position_jitter as f32;
    let radius = cfg.object_scale as f32 * w.min(h) * rng.random_range(0.9..1.1f32);
    ObjectState {
        present: true,
        noun,
        cx: w * (0.5 + j * rng.random_range(-1.0..=1.0f32)),
        // Slightly below centre: the lid opens upwards and must stay in view.
        cy: h * (0.56 + j * rng.random_range(-1.0..=1.0f32)),
        radius,
        lid_open: rng.random_bool(0.5),
        light_on: rng.random_bool(0.5),
    }
}

/// Picks the next verb given the current state. Lid and light toggles are twice as likely as
/// take, which makes the six classes roughly balanced (every take is followed by one put).
fn next_verb(rng: &mut ChaCha8Rng, n_verbs: usize, s: &ObjectState) -> usize {
    if !s.present {
        return 4;
    }
    let lid = if s.lid_open { 1 } else { 0 };
    let light = if s.light_on { 3 } else { 2 };
    let choices: &[(usize, u32)] = match n_verbs {
        2 => &[(lid, 1)],
        4 => &[(lid, 1), (light, 1)],
        _ => &[(lid, 2), (light, 2), (5, 1)],
    };
    let total: u32 = choices.iter().map(|c| c.1).sum();
    let mut pick = rng.random_range(0..total);
    for &(verb, weight) in choices {
        if pick < weight {
            return verb;
        }
        pick -= weight;
    }
    lid
}

/// Builds the timeline of video `index`. The config must be valid.
pub(crate) fn build_script(cfg: &WorldConfig, index: usize) -> VideoScript {
    let seed = video_seed(cfg.seed, index);
    let mut rng = stream(seed, SALT_SCRIPT);

    let wanted = rng.random_range(cfg.min_duration_s..=cfg.max_duration_s);
    let n_frames = ((wanted * cfg.fps).round() as usize).max(1);
    let duration_s = n_frames as f64 / cfg.fps;
    let n_samples = (duration_s * cfg.sample_rate as f64).round() as usize;

    // Interactions.
    let first_noun = rng.random_range(0..cfg.n_nouns);
    let mut state = random_placement(&mut rng, cfg, first_noun);
    if cfg.n_verbs == 6 {
        state.present = rng.random_bool(0.85);
    }
    let mut states = vec![state.clone()];
    let mut interactions = Vec::new();
    let last_allowed = duration_s - cfg.edge_margin_s;
    let mut t = round_cs(cfg.edge_margin_s + rng.random_range(0.0..=cfg.mean_gap_s));
    while t <= last_allowed {
        let verb = next_verb(&mut rng, cfg.n_verbs, &state);
        let mut next = state.clone();
        match verb_effect(verb) {
            Effect::Lid(open) => next.lid_open = open,
            Effect::Light(on) => next.light_on = on,
            Effect::Presence(true) => {
                let noun = rng.random_range(0..cfg.n_nouns);
                next = random_placement(&mut rng, cfg, noun);
            }
            Effect::Presence(false) => next.present = false,
        }
        // The noun of a put is the object that appears; of anything else, the one acted on.
        let noun = next.noun;
        let quiet = rng.random_bool(cfg.quiet_interaction_prob);
        interactions.push(Interaction {
            time_s: t,
            verb,
            noun,
            start_s: round_cs((t - cfg.segment_before_s).max(0.0)),
            stop_s: round_cs((t + cfg.segment_after_s).min(duration_s)),
            quiet,
        });
        states.push(next.clone());
        state = next;
        let gap = cfg.min_gap_s + exponential(&mut rng, cfg.mean_gap_s - cfg.min_gap_s);
        // Ceil keeps every gap at least `min_gap_s` on the centisecond grid.
        t = ((t + gap) * 100.0 - 1e-9).ceil() / 100.0;
    }

    // Distractors: a Poisson process, thinned near interactions.
    let mut distractors = Vec::new();
    if cfg.distractor_rate > 0.0 {
        let (lo, hi) = (
            0.5f64.min(duration_s / 2.0),
            (duration_s - 0.5).max(duration_s / 2.0),
        );
        let mut t = lo + exponential(&mut rng, 1.0 / cfg.distractor_rate);
        while t < hi {
            let kind = match rng.random_range(0..3u32) {
                0 => DistractorKind::Burst,
                1 => DistractorKind::Beep,
                _ => DistractorKind::Clatter,
            };
            let clear = interactions
                .iter()
                .all(|i| (i.time_s - t).abs() >= cfg.distractor_clearance_s);
            if clear {
                distractors.push(Distractor {
                    time_s: (t * 1000.0).round() / 1000.0,
                    kind,
                });
            }
            t += exponential(&mut rng, 1.0 / cfg.distractor_rate);
        }
    }

    // Ambient drop-outs.
    let mut silences = Vec::new();
    if cfg.silence_rate > 0.0 {
        let mut t = exponential(&mut rng, 1.0 / cfg.silence_rate);
        while t < duration_s {
            let len = rng.random_range(cfg.silence_min_s..=cfg.silence_max_s);
            let stop = (t + len).min(duration_s);
            silences.push(Silence {
                start_s: t,
                stop_s: stop,
            });
            t = stop + exponential(&mut rng, 1.0 / cfg.silence_rate);
        }
    }

    let participant = index / cfg.videos_per_participant;
    let within = index % cfg.videos_per_participant;
    let participant_id = format!("S{:02}", participant + 1);
    let video_id = format!("{participant_id}_{:02}", within + 1);
    let split = if index >= cfg.train_videos() {
        Split::Validation
    } else {
        Split::Train
    };

    VideoScript {
        index,
        video_id,
        participant_id,
        split,
        duration_s,
        n_frames,
        n_samples,
        fps: cfg.fps,
        sample_rate: cfg.sample_rate,
        width: cfg.width,
        height: cfg.height,
        interactions,
        distractors,
        silences,
        states,
        seed,
    }
}

/// Visual state at one instant, with transitions blended linearly over `change_s`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VisualState {
    pub object: ObjectState,
    /// 0 = closed, 1 = open.
    pub lid: f32,
    /// 0 = off, 1 = on.
    pub light: f32,
    /// 0 = absent, 1 = present.
    pub alpha: f32,
}

impl VisualState {
    fn settled(s: &ObjectState) -> Self {
        VisualState {
            object: s.clone(),
            lid: if s.lid_open { 1.0 } else { 0.0 },
            light: if s.light_on { 1.0 } else { 0.0 },
            alpha: if s.present { 1.0 } else { 0.0 },
        }
    }
}

impl VideoScript {
    /// State of the scene at time `t` (seconds).
    pub(crate) fn visual_state(&self, t: f64, change_s: f64) -> VisualState {
        let half = change_s / 2.0;
        // Interactions whose transition has fully finished before t.
        let done = self.interactions.partition_point(|i| i.time_s + half <= t);
        let Some(next) = self.interactions.get(done) else {
            return VisualState::settled(&self.states[done]);
        };
        let (before, after) = (&self.states[done], &self.states[done + 1]);
        if t < next.time_s - half || change_s <= 0.0 {
            return VisualState::settled(before);
        }
        let a = (((t - (next.time_s - half)) / change_s).clamp(0.0, 1.0)) as f32;
        let (b, f) = (VisualState::settled(before), VisualState::settled(after));
        match verb_effect(next.verb) {
            Effect::Presence(true) => VisualState { alpha: a, ..f },
            Effect::Presence(false) => VisualState {
                alpha: 1.0 - a,
                ..b
            },
            Effect::Lid(_) | Effect::Light(_) => VisualState {
                lid: b.lid + a * (f.lid - b.lid),
                light: b.light + a * (f.light - b.light),
                ..b
            },
        }
    }
}
