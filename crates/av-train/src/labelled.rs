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
        rest_classes: ds.classes.rest.clone(),
    })
}

/// AV-SSRL's concept-generalisation split (`--use-rest-classes`): the seen classes (not in
/// `data.rest_classes`) and the rest classes as two separate single-label problems, each
/// re-labelled from 0 in ascending original id (the reference's seen order depends on Python's
/// hash seed; this one is deterministic).
pub fn seen_and_rest(data: &ProbeData) -> Result<(ProbeData, ProbeData), TrainError> {
    if data.n_nouns > 0 {
        return Err(data_err(
            "rest-class evaluation applies to single-label datasets (UCF-101, HMDB-51)".into(),
        ));
    }
    if data.rest_classes.is_empty() {
        return Err(data_err(
            "no rest classes: set files.rest_classes in the dataset manifest".into(),
        ));
    }
    let mut rest: Vec<usize> = data
        .rest_classes
        .iter()
        .copied()
        .filter(|&c| c < data.n_verbs)
        .collect();
    rest.sort_unstable();
    rest.dedup();
    let seen: Vec<usize> = (0..data.n_verbs)
        .filter(|c| rest.binary_search(c).is_err())
        .collect();
    let pick = |classes: &[usize], tag: &str| -> Result<ProbeData, TrainError> {
        let keep = |split: &ProbeSplit| ProbeSplit {
            videos: split.videos.clone(),
            segments: split
                .segments
                .iter()
                .filter_map(|s| {
                    let verb = classes.binary_search(&s.verb).ok()?;
                    Some(LabelledSegment { verb, ..s.clone() })
                })
                .collect(),
        };
        let (train, val) = (keep(&data.train), keep(&data.val));
        if train.segments.is_empty() || val.segments.is_empty() {
            return Err(data_err(format!(
                "the {tag} classes have {} training and {} evaluation clips; both need some",
                train.segments.len(),
                val.segments.len()
            )));
        }
        let names = classes
            .iter()
            .filter_map(|&c| data.class_names[0].get(c).cloned())
            .collect();
        Ok(ProbeData {
            train,
            val,
            n_verbs: classes.len(),
            n_nouns: 0,
            key: format!("{}|{tag}", data.key),
            protocol: data.protocol,
            class_names: [names, Vec::new()],
            first_head: "label".into(),
            rest_classes: Vec::new(),
        })
    };
    Ok((pick(&seen, "seen")?, pick(&rest, "rest")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(video: usize, label: usize) -> LabelledSegment {
        LabelledSegment {
            video,
            time_s: 0.0,
            start_s: 0.0,
            stop_s: f64::INFINITY,
            verb: label,
            noun: 0,
        }
    }

    fn ucf_like(rest: Vec<usize>) -> ProbeData {
        let split = |labels: &[usize]| ProbeSplit {
            videos: VideoSet::Files(
                labels
                    .iter()
                    .map(|l| PathBuf::from(l.to_string()))
                    .collect(),
            ),
            segments: labels.iter().enumerate().map(|(i, &l)| seg(i, l)).collect(),
        };
        ProbeData {
            train: split(&[0, 1, 2, 3, 4, 0, 3]),
            val: split(&[4, 3, 1, 0, 2]),
            n_verbs: 5,
            n_nouns: 0,
            key: "k".into(),
            protocol: Protocol::Clip,
            class_names: [
                ["A", "B", "C", "D", "E"].map(String::from).to_vec(),
                Vec::new(),
            ],
            first_head: "label".into(),
            rest_classes: rest,
        }
    }

    #[test]
    fn seen_and_rest_relabel_each_group_from_zero() {
        let (seen, rest) = seen_and_rest(&ucf_like(vec![3, 1])).expect("split");
        assert_eq!((seen.n_verbs, rest.n_verbs), (3, 2));
        assert_eq!(seen.class_names[0], ["A", "C", "E"]);
        assert_eq!(rest.class_names[0], ["B", "D"]);
        let labels = |s: &ProbeSplit| s.segments.iter().map(|x| x.verb).collect::<Vec<_>>();
        // Train 0 1 2 3 4 0 3 -> seen {0, 2, 4} = 0 1 2, rest {1, 3} = 0 1.
        assert_eq!(labels(&seen.train), [0, 1, 2, 0]);
        assert_eq!(labels(&rest.train), [0, 1, 1]);
        assert_eq!(labels(&rest.val), [1, 0]);
        // Videos keep their indices into the (shared) video set.
        assert_eq!(rest.val.segments[0].video, 1);
        assert_ne!(seen.key, rest.key);
    }

    #[test]
    fn seen_and_rest_need_a_rest_list_and_samples() {
        assert!(seen_and_rest(&ucf_like(Vec::new())).is_err());
        // Class 9 does not exist; only class 1 is rest, which has train and val clips.
        assert!(seen_and_rest(&ucf_like(vec![1, 9])).is_ok());
        let mut two_heads = ucf_like(vec![1]);
        two_heads.n_nouns = 3;
        assert!(seen_and_rest(&two_heads).is_err());
    }
}
