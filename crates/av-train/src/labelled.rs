//! Labelled evaluation data from a dataset manifest (EPIC-KITCHENS-100, the synthetic world's
//! export, Ego4D LTA, UCF-101, HMDB-51, VGGSound): the bridge from `av_data`'s parsers to the
//! probe and fine-tuning.
//!
//! Everything is checked before any feature is computed: the annotation files (all malformed
//! rows at once), the class ids, and that every media file or frame folder both splits read
//! exists, so that a missing video fails in seconds rather than hours into extraction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use av_data::{Dataset, Manifest, MediaCheck, SplitData};

use crate::config::Config;
use crate::data::{LabelledSegment, VideoSet};
use crate::error::TrainError;
use crate::probe::{ProbeData, ProbeSplit};
use crate::views::Protocol;

fn data_err(what: String) -> TrainError {
    TrainError::Data(what)
}

/// The segments of one split, with the media they come from (one [`VideoSet`] entry per distinct
/// file, in first-use order).
fn split_of(ds: &Dataset, name: &str) -> Result<ProbeSplit, TrainError> {
    let data = ds.splits.get(name).ok_or_else(|| {
        let known: Vec<&str> = ds.splits.keys().map(String::as_str).collect();
        data_err(format!(
            "manifest {} has no split {name:?} (it has: {})",
            ds.manifest.name,
            known.join(", ")
        ))
    })?;
    let paths = ds.sample_paths(name);
    let per_segment = ds.media_is_per_segment();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut video_of = |p: &PathBuf| -> usize {
        *index.entry(p.clone()).or_insert_with(|| {
            files.push(p.clone());
            files.len() - 1
        })
    };
    let mut segments = Vec::with_capacity(data.len());
    match data {
        SplitData::Segments(segs) => {
            for (s, p) in segs.iter().zip(&paths) {
                let (Some(verb), Some(noun)) = (s.verb, s.noun) else {
                    return Err(data_err(format!(
                        "split {name} of {} is unlabelled (segment {}); the probe needs labels",
                        ds.manifest.name, s.uid
                    )));
                };
                // A pre-cut segment file starts at the action's start.
                let (start, stop) = if per_segment {
                    (0.0, s.stop_s - s.start_s)
                } else {
                    (s.start_s, s.stop_s)
                };
                segments.push(LabelledSegment {
                    video: video_of(p),
                    time_s: 0.5 * (start + stop),
                    start_s: start,
                    stop_s: stop,
                    verb,
                    noun,
                });
            }
        }
        SplitData::Clips(clips) => {
            for (c, p) in clips.iter().zip(&paths) {
                let start = c.start_s.unwrap_or(0.0);
                let stop = c.stop_s.unwrap_or(f64::INFINITY);
                segments.push(LabelledSegment {
                    video: video_of(p),
                    time_s: if stop.is_finite() {
                        0.5 * (start + stop)
                    } else {
                        start
                    },
                    start_s: start,
                    stop_s: stop,
                    verb: c.label,
                    noun: 0,
                });
            }
        }
        SplitData::StateChanges(_) => {
            let name = &ds.manifest.name;
            return Err(data_err(format!(
                "manifest {name} holds Ego4D state changes, not classifiable segments or clips"
            )));
        }
    }
    Ok(ProbeSplit {
        videos: VideoSet::Files(files),
        segments,
    })
}

/// Loads `cfg.probe.manifest` under `cfg.probe.data_root`, checks every annotation and media file
/// of the two splits, and returns the probe's data. `Clip` is the protocol unless
/// `probe.protocol` says otherwise.
pub fn manifest_probe_data(cfg: &Config) -> Result<ProbeData, TrainError> {
    let p = &cfg.probe;
    let mpath = Path::new(&p.manifest);
    let root = Path::new(&p.data_root);
    let manifest = Manifest::from_file(mpath)
        .map_err(|e| data_err(format!("manifest {}: {e}", mpath.display())))?;
    // Everything at once: malformed rows, unknown classes and missing media of every split.
    av_data::validate(&manifest, root, MediaCheck::Prepared).map_err(|e| {
        data_err(format!(
            "dataset {} under {} failed validation:\n{e}",
            manifest.name,
            root.display()
        ))
    })?;
    let ds = Dataset::load(&manifest, root)
        .map_err(|e| data_err(format!("dataset {}: {e}", manifest.name)))?;
    let eval_split = if !p.eval_split.is_empty() {
        p.eval_split.clone()
    } else if ds.splits.contains_key("validation") {
        "validation".into()
    } else {
        "test".into()
    };
    let train = split_of(&ds, &p.train_split)?;
    let val = split_of(&ds, &eval_split)?;
    let single_label = matches!(ds.splits.get(&p.train_split), Some(SplitData::Clips(_)));
    let (n_verbs, n_nouns, names) = if single_label {
        let n = ds
            .classes
            .labels
            .len()
            .max(manifest.classes.labels.unwrap_or(0));
        (n, 0, [ds.classes.labels.clone(), Vec::new()])
    } else {
        let nv = ds
            .classes
            .verbs
            .len()
            .max(manifest.classes.verbs.unwrap_or(0));
        let nn = ds
            .classes
            .nouns
            .len()
            .max(manifest.classes.nouns.unwrap_or(0));
        // Without class files or counts, the largest id seen bounds the heads.
        let seen = |f: fn(&LabelledSegment) -> usize| {
            train
                .segments
                .iter()
                .chain(&val.segments)
                .map(f)
                .max()
                .map_or(0, |m| m + 1)
        };
        (
            nv.max(seen(|s| s.verb)),
            nn.max(seen(|s| s.noun)).max(1),
            [ds.classes.verbs.clone(), ds.classes.nouns.clone()],
        )
    };
    if n_verbs == 0 {
        return Err(data_err(format!(
            "dataset {} defines no classes",
            manifest.name
        )));
    }
    let protocol = match p.protocol.as_str() {
        "pair" => Protocol::Pair,
        _ => Protocol::Clip,
    };
    let key = format!(
        "{:016x}",
        crate::checkpoint::fnv1a(
            format!(
                "{}|{}|{}|{}|{}",
                std::fs::canonicalize(mpath)
                    .unwrap_or_else(|_| mpath.to_path_buf())
                    .display(),
                std::fs::canonicalize(root)
                    .unwrap_or_else(|_| root.to_path_buf())
                    .display(),
                p.train_split,
                eval_split,
                train.segments.len() + val.segments.len()
            )
            .as_bytes()
        )
    );
    Ok(ProbeData {
        train,
        val,
        n_verbs,
        n_nouns,
        key,
        protocol,
        class_names: names,
        first_head: if single_label { "label" } else { "verb" }.into(),
    })
}
