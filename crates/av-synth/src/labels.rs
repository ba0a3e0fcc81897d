//! EPIC-KITCHENS-100 style annotation tables for the world's interactions, so that the linear
//! probe reads synthetic labels through exactly the same parser as real EPIC annotations.

use crate::error::SynthError;
use crate::script::{Split, VideoScript};
use crate::vocab::{narration, noun_name, MAX_NOUNS, VERB_CATEGORIES, VERB_NAMES};

/// Column order of the EPIC-KITCHENS-100 annotation CSVs.
pub const EPIC_COLUMNS: [&str; 15] = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
];

/// `HH:MM:SS.cc`, the EPIC timestamp format (rounded to the centisecond).
pub fn epic_timestamp(t_s: f64) -> String {
    let cs = (t_s.max(0.0) * 100.0).round() as u64;
    let (h, m, s, c) = (cs / 360_000, (cs / 6_000) % 60, (cs / 100) % 60, cs % 100);
    format!("{h:02}:{m:02}:{s:02}.{c:02}")
}

/// 1-based number of the frame shown at time `t_s` (EPIC numbers frames from 1).
pub fn epic_frame(t_s: f64, fps: f64, n_frames: usize) -> usize {
    ((t_s.max(0.0) * fps + 1e-6).floor() as usize + 1).clamp(1, n_frames.max(1))
}

fn csv_err(what: &str, e: impl std::fmt::Display) -> SynthError {
    SynthError::Serialize {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn finish(what: &str, w: csv::Writer<Vec<u8>>) -> Result<String, SynthError> {
    let bytes = w.into_inner().map_err(|e| csv_err(what, e))?;
    String::from_utf8(bytes).map_err(|e| csv_err(what, e))
}

/// Annotation CSV (header + one row per interaction) for the given scripts, optionally
/// restricted to one split. Rows are in video order, then time order; `narration_id` is
/// `<video_id>_<k>` with k counting the video's interactions from 0, as in EPIC.
pub fn epic_csv<'a>(
    scripts: impl IntoIterator<Item = &'a VideoScript>,
    split: Option<Split>,
) -> Result<String, SynthError> {
    let what = "EPIC annotation table";
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(EPIC_COLUMNS).map_err(|e| csv_err(what, e))?;
    for s in scripts {
        if split.is_some_and(|sp| sp != s.split) {
            continue;
        }
        for (k, it) in s.interactions.iter().enumerate() {
            let noun = noun_name(it.noun);
            let row = [
                format!("{}_{k}", s.video_id),
                s.participant_id.clone(),
                s.video_id.clone(),
                epic_timestamp(it.time_s),
                epic_timestamp(it.start_s),
                epic_timestamp(it.stop_s),
                epic_frame(it.start_s, s.fps, s.n_frames).to_string(),
                epic_frame(it.stop_s, s.fps, s.n_frames).to_string(),
                narration(it.verb, it.noun),
                VERB_NAMES[it.verb].to_string(),
                it.verb.to_string(),
                noun.clone(),
                it.noun.to_string(),
                format!("['{noun}']"),
                format!("[{}]", it.noun),
            ];
            w.write_record(&row).map_err(|e| csv_err(what, e))?;
        }
    }
    finish(what, w)
}

/// `EPIC_100_verb_classes.csv` for the first `n_verbs` verbs (columns id, key, instances, category).
pub fn verb_classes_csv(n_verbs: usize) -> Result<String, SynthError> {
    let what = "verb class table";
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "key", "instances", "category"])
        .map_err(|e| csv_err(what, e))?;
    for v in 0..n_verbs.min(VERB_NAMES.len()) {
        let row = [
            v.to_string(),
            VERB_NAMES[v].to_string(),
            format!("['{}']", VERB_NAMES[v]),
            VERB_CATEGORIES[v].to_string(),
        ];
        w.write_record(&row).map_err(|e| csv_err(what, e))?;
    }
    finish(what, w)
}

/// `EPIC_100_noun_classes.csv` for the first `n_nouns` nouns (columns id, key, instances, category).
pub fn noun_classes_csv(n_nouns: usize) -> Result<String, SynthError> {
    let what = "noun class table";
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "key", "instances", "category"])
        .map_err(|e| csv_err(what, e))?;
    for n in 0..n_nouns.min(MAX_NOUNS) {
        let key = noun_name(n);
        let shape = crate::vocab::SHAPES[crate::vocab::noun_shape(n)];
        let row = [
            n.to_string(),
            key.clone(),
            format!("['{key}']"),
            format!("container:{shape}"),
        ];
        w.write_record(&row).map_err(|e| csv_err(what, e))?;
    }
    finish(what, w)
}

/// `EPIC_100_video_info.csv` (video_id, duration, fps, resolution): lets the manifest check that
/// no labelled segment ends past its video.
pub fn video_info_csv(scripts: &[VideoScript]) -> Result<String, SynthError> {
    let what = "video info table";
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["video_id", "duration", "fps", "resolution"])
        .map_err(|e| csv_err(what, e))?;
    for s in scripts {
        let row = [
            s.video_id.clone(),
            format!("{}", s.duration_s),
            format!("{}", s.fps),
            format!("{}x{}", s.width, s.height),
        ];
        w.write_record(&row).map_err(|e| csv_err(what, e))?;
    }
    finish(what, w)
}
