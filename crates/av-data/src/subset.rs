//! Split manipulation for the evaluation protocols: few-shot subsampling per class and the
//! seen / unseen ("rest") class partition of AV-SSRL's concept-generalisation study.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{finish, read_text, DataError, Issue, IssueKind, Issues};
use crate::types::ClipLabel;

/// Keeps `max(floor(ratio · n_c), 1)` items of every class `c` (so no class disappears), chosen
/// uniformly at random with a seeded ChaCha8 generator; the kept items stay in input order.
/// `ratio` must be in (0, 1]; 1 returns everything. Apply it to the training split only.
pub fn few_shot<T: Clone>(
    items: &[T],
    label: impl Fn(&T) -> usize,
    ratio: f64,
    seed: u64,
) -> Result<Vec<T>, DataError> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err(DataError::Argument(format!(
            "few-shot ratio must be in (0, 1], got {ratio}"
        )));
    }
    if ratio == 1.0 {
        return Ok(items.to_vec());
    }
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        by_class.entry(label(it)).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keep = vec![false; items.len()];
    for idx in by_class.values() {
        let k = ((ratio * idx.len() as f64).floor() as usize).clamp(1, idx.len());
        for j in rand::seq::index::sample(&mut rng, idx.len(), k) {
            keep[idx[j]] = true;
        }
    }
    Ok(items
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(it, _)| it.clone())
        .collect())
}

/// How the lower-case words of a rest-class list map onto dataset class names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestNaming {
    /// UCF-101: capitalise each word and join (`"yo yo"` → `YoYo`).
    Ucf,
    /// HMDB-51: join words with `_` (`"flic flac"` → `flic_flac`).
    Hmdb,
}

/// The dataset class name an entry of a rest-class list stands for.
pub fn rest_class_name(entry: &str, naming: RestNaming) -> String {
    let words = entry.split_whitespace();
    match naming {
        RestNaming::Ucf => words
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                    None => String::new(),
                }
            })
            .collect(),
        RestNaming::Hmdb => words.collect::<Vec<_>>().join("_"),
    }
}

/// Reads a rest ("unseen") class list — one lower-case class description per line — and
/// returns the sorted class ids it names. Names are matched case-insensitively; every unknown
/// or repeated name is reported with its line.
pub fn parse_rest_classes(
    path: impl AsRef<Path>,
    naming: RestNaming,
    classes: &[String],
) -> Result<Vec<usize>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let by_name: HashMap<String, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_lowercase(), i))
        .collect();
    let mut issues = Vec::new();
    let mut ids = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let name = rest_class_name(l, naming);
        match by_name.get(&name.to_lowercase()) {
            Some(&id) if ids.contains(&id) => issues.push(Issue::at(
                path,
                i as u64 + 1,
                Some(1),
                IssueKind::Duplicate,
                format!("class {name:?} listed twice"),
            )),
            Some(&id) => ids.push(id),
            None => issues.push(Issue::at(
                path,
                i as u64 + 1,
                Some(1),
                IssueKind::UnknownClass,
                format!(
                    "{l:?} (as {name:?}) is not one of the {} classes",
                    classes.len()
                ),
            )),
        }
    }
    if ids.is_empty() && issues.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "rest-class list is empty",
        ));
    }
    ids.sort_unstable();
    finish(ids, issues)
}

/// A class subset with labels re-indexed from 0 in the original (classInd) order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSubset {
    /// Original class ids, ascending; new label = position.
    pub classes: Vec<usize>,
    /// The clips of those classes with their new labels.
    pub clips: Vec<ClipLabel>,
}

/// Splits clips into the "seen" classes (not in `rest`) and the "rest"/unseen classes, each
/// re-labelled from 0 in ascending original id (the reference's seen order depends on Python's
/// hash seed; this order is deterministic).
pub fn seen_unseen(
    clips: &[ClipLabel],
    n_classes: usize,
    rest: &[usize],
) -> (ClassSubset, ClassSubset) {
    let unseen: Vec<usize> = {
        let mut r: Vec<usize> = rest.iter().copied().filter(|&c| c < n_classes).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let seen: Vec<usize> = (0..n_classes)
        .filter(|c| unseen.binary_search(c).is_err())
        .collect();
    let pick = |classes: Vec<usize>| {
        let clips = clips
            .iter()
            .filter_map(|c| {
                let new = classes.binary_search(&c.label).ok()?;
                Some(ClipLabel {
                    label: new,
                    ..c.clone()
                })
            })
            .collect();
        ClassSubset { classes, clips }
    };
    (pick(seen), pick(unseen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(label: usize, i: usize) -> ClipLabel {
        ClipLabel {
            path: format!("c{label}/v{i}.avi"),
            label,
            start_s: None,
            stop_s: None,
        }
    }

    #[test]
    fn few_shot_keeps_at_least_one_per_class_and_is_seeded() {
        let mut items = Vec::new();
        for i in 0..20 {
            items.push(clip(0, i));
        }
        for i in 0..3 {
            items.push(clip(1, i));
        }
        let a = few_shot(&items, |c| c.label, 0.25, 7).expect("valid ratio");
        assert_eq!(a.iter().filter(|c| c.label == 0).count(), 5);
        assert_eq!(a.iter().filter(|c| c.label == 1).count(), 1);
        let b = few_shot(&items, |c| c.label, 0.25, 7).expect("valid ratio");
        assert_eq!(a, b);
        let others: Vec<_> = (0..8)
            .map(|s| few_shot(&items, |c| c.label, 0.25, s).expect("valid ratio"))
            .collect();
        assert!(others.iter().any(|o| o != &a), "seed has no effect");
        assert!(few_shot(&items, |c| c.label, 0.0, 1).is_err());
        assert!(few_shot(&items, |c| c.label, 1.5, 1).is_err());
        assert_eq!(
            few_shot(&items, |c| c.label, 1.0, 1).expect("valid").len(),
            23
        );
    }

    #[test]
    fn rest_names() {
        assert_eq!(rest_class_name("yo yo", RestNaming::Ucf), "YoYo");
        assert_eq!(
            rest_class_name("handstand pushups", RestNaming::Ucf),
            "HandstandPushups"
        );
        assert_eq!(rest_class_name("flic flac", RestNaming::Hmdb), "flic_flac");
    }

    #[test]
    fn seen_unseen_relabels() {
        let clips: Vec<_> = (0..5).map(|l| clip(l, l)).collect();
        let (seen, unseen) = seen_unseen(&clips, 5, &[3, 1]);
        assert_eq!(unseen.classes, vec![1, 3]);
        assert_eq!(seen.classes, vec![0, 2, 4]);
        assert_eq!(
            unseen.clips.iter().map(|c| c.label).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(
            seen.clips.iter().map(|c| c.label).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}
