//! Classification datasets with plain list files: VGGSound (`vggsound.csv`), UCF-101
//! (`classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`) and HMDB-51
//! (`testTrainMulti_7030_splits/<class>_test_split<N>.txt`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::csvutil::{check_len, records, Row};
use crate::error::{finish, read_text, DataError, Issue, IssueKind, Issues};
use crate::types::ClipLabel;

/// Columns of `vggsound.csv` (the file has no header).
pub const VGGSOUND_COLUMNS: [&str; 4] = ["youtube_id", "start_seconds", "label", "split"];

/// One row of `vggsound.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggSoundRow {
    /// 11-character YouTube id.
    pub youtube_id: String,
    /// Start of the 10 s clip in the YouTube video.
    pub start_s: u64,
    /// Class name (may contain commas).
    pub label: String,
    /// `train` or `test`.
    pub split: String,
}

impl VggSoundRow {
    /// The common clip file stem `<youtube_id>_<start zero-padded to 6>`.
    pub fn stem(&self) -> String {
        format!("{}_{:06}", self.youtube_id, self.start_s)
    }
}

/// The parsed `vggsound.csv` with its class list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggSound {
    /// Class names sorted alphabetically; class id = position (as in the reference's eval.py).
    pub classes: Vec<String>,
    /// All rows in file order.
    pub rows: Vec<VggSoundRow>,
}

impl VggSound {
    /// The clips of one split (`train` / `test`) as labelled 10 s windows.
    pub fn split(&self, split: &str) -> Vec<ClipLabel> {
        self.rows
            .iter()
            .filter(|r| r.split == split)
            .filter_map(|r| {
                let label = self.classes.binary_search(&r.label).ok()?;
                Some(ClipLabel {
                    path: r.stem(),
                    label,
                    start_s: Some(r.start_s as f64),
                    stop_s: Some(r.start_s as f64 + 10.0),
                })
            })
            .collect()
    }
}

fn is_youtube_id(s: &str) -> bool {
    s.len() == 11
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses `vggsound.csv` (no header; labels with commas are double-quoted). Classes are the sorted
/// distinct labels of the whole file.
pub fn parse_vggsound(path: impl AsRef<Path>) -> Result<VggSound, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let mut issues = Vec::new();
    let v = parse_vggsound_text(path, &text, &mut issues);
    finish(v, issues)
}

pub(crate) fn parse_vggsound_text(path: &Path, text: &str, issues: &mut Vec<Issue>) -> VggSound {
    let recs = records(path, text, issues);
    let mut rows = Vec::with_capacity(recs.len());
    let mut seen = HashSet::new();
    for (line, rec) in &recs {
        if let Some(issue) = check_len(path, *line, rec, VGGSOUND_COLUMNS.len()) {
            issues.push(issue);
            continue;
        }
        let mut row = Row {
            path,
            line: *line,
            rec,
            names: &VGGSOUND_COLUMNS,
            issues: &mut *issues,
        };
        let before = row.issues.len();
        let id = row.text(0);
        if let Some(id) = &id {
            if !is_youtube_id(id) {
                row.fail(
                    0,
                    IssueKind::Field,
                    format!("{id:?} is not an 11-character YouTube id"),
                );
            }
        }
        let start: Option<u64> = row.parse(1, "a whole number of seconds");
        let label = row.text(2);
        let split = row.text(3);
        if let Some(s) = &split {
            if s != "train" && s != "test" {
                row.fail(
                    3,
                    IssueKind::Field,
                    format!("split {s:?} is neither \"train\" nor \"test\""),
                );
            }
        }
        if row.issues.len() != before {
            continue;
        }
        if let (Some(youtube_id), Some(start_s), Some(label), Some(split)) =
            (id, start, label, split)
        {
            if !seen.insert((youtube_id.clone(), start_s)) {
                row.fail(
                    0,
                    IssueKind::Duplicate,
                    format!("duplicate clip {youtube_id} at {start_s} s"),
                );
                continue;
            }
            rows.push(VggSoundRow {
                youtube_id,
                start_s,
                label,
                split,
            });
        }
    }
    if recs.is_empty() {
        issues.push(Issue::file(path, IssueKind::EmptySplit, "file has no rows"));
    }
    let classes: BTreeSet<String> = rows.iter().map(|r| r.label.clone()).collect();
    VggSound {
        classes: classes.into_iter().collect(),
        rows,
    }
}

/// Non-blank lines of a text file with their 1-based numbers (trailing `\r` removed).
fn lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// Parses UCF-101 `classInd.txt` (`<1-based index> <ClassName>`); indices must run 1, 2, 3, ...
/// Returns the names in index order (0-based label = position).
pub fn parse_ucf_class_ind(path: impl AsRef<Path>) -> Result<Vec<String>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let mut issues = Vec::new();
    let v = parse_class_ind_text(path, &text, &mut issues);
    finish(v, issues)
}

pub(crate) fn parse_class_ind_text(
    path: &Path,
    text: &str,
    issues: &mut Vec<Issue>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (line, l) in lines(text) {
        let mut tok = l.split_whitespace();
        let (Some(idx), Some(name), None) = (tok.next(), tok.next(), tok.next()) else {
            issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::Columns,
                format!("expected `<index> <ClassName>`, found {l:?}"),
            ));
            continue;
        };
        match idx.parse::<usize>() {
            Ok(i) if i == out.len() + 1 => out.push(name.to_string()),
            Ok(i) => {
                issues.push(Issue::at(
                    path,
                    line,
                    Some(1),
                    IssueKind::Field,
                    format!(
                        "class index {i}, expected {} (indices must run 1, 2, 3, ...)",
                        out.len() + 1
                    ),
                ));
                // Keep going with the name so later lines are still checked against it.
                out.push(name.to_string());
            }
            Err(_) => issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::Field,
                format!("{idx:?} is not a class index"),
            )),
        }
    }
    if out.is_empty() && issues.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "class list is empty",
        ));
    }
    out
}

/// Parses a UCF-101 `trainlist0N.txt` (`Class/v_Class_gXX_cYY.avi <1-based label>`) or
/// `testlist0N.txt` (`Class/file.avi`). The label is the class of the directory name (matched
/// case-insensitively, as `HandstandPushups/v_HandStandPushups_...` needs); a given numeric label
/// must agree with it.
pub fn parse_ucf_list(
    path: impl AsRef<Path>,
    classes: &[String],
) -> Result<Vec<ClipLabel>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let mut issues = Vec::new();
    let v = parse_ucf_list_text(path, &text, classes, &mut issues);
    finish(v, issues)
}

pub(crate) fn parse_ucf_list_text(
    path: &Path,
    text: &str,
    classes: &[String],
    issues: &mut Vec<Issue>,
) -> Vec<ClipLabel> {
    let by_name: HashMap<String, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_ascii_lowercase(), i))
        .collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (line, l) in lines(text) {
        let toks: Vec<&str> = l.split_whitespace().collect();
        if toks.is_empty() || toks.len() > 2 {
            issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::Columns,
                format!(
                    "expected `Class/file.avi [label]`, found {} fields",
                    toks.len()
                ),
            ));
            continue;
        }
        let rel = toks[0];
        let Some((dir, _file)) = rel.split_once('/') else {
            issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::Field,
                format!("{rel:?} has no class directory (expected Class/file.avi)"),
            ));
            continue;
        };
        let Some(&label) = by_name.get(&dir.to_ascii_lowercase()) else {
            issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::UnknownClass,
                format!(
                    "class directory {dir:?} is not in classInd ({} classes)",
                    classes.len()
                ),
            ));
            continue;
        };
        if let Some(lab) = toks.get(1) {
            let col = Some(rel.chars().count() as u64 + 2);
            match lab.parse::<usize>() {
                Ok(n) if n == label + 1 => {}
                Ok(n) if n == 0 || n > classes.len() => {
                    issues.push(Issue::at(
                        path,
                        line,
                        col,
                        IssueKind::UnknownClass,
                        format!(
                            "unknown class label {n} (classInd has 1..={})",
                            classes.len()
                        ),
                    ));
                    continue;
                }
                Ok(n) => {
                    issues.push(Issue::at(
                        path,
                        line,
                        col,
                        IssueKind::Field,
                        format!(
                            "label {n} disagrees with directory {dir:?} (class {})",
                            label + 1
                        ),
                    ));
                    continue;
                }
                Err(_) => {
                    issues.push(Issue::at(
                        path,
                        line,
                        col,
                        IssueKind::Field,
                        format!("{lab:?} is not a class label"),
                    ));
                    continue;
                }
            }
        }
        if !seen.insert(rel.to_string()) {
            issues.push(Issue::at(
                path,
                line,
                Some(1),
                IssueKind::Duplicate,
                format!("duplicate video {rel:?}"),
            ));
            continue;
        }
        out.push(ClipLabel {
            path: rel.to_string(),
            label,
            start_s: None,
            stop_s: None,
        });
    }
    if out.is_empty() && issues.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "split list is empty",
        ));
    }
    out
}

/// Which part of an HMDB-51 split to select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmdbSubset {
    /// Code 1.
    Train,
    /// Code 2.
    Test,
}

/// An HMDB-51 fold: sorted class names and the train (code 1) / test (code 2) clips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HmdbSplit {
    /// Class names sorted alphabetically (label = position).
    pub classes: Vec<String>,
    /// Clips marked 1.
    pub train: Vec<ClipLabel>,
    /// Clips marked 2.
    pub test: Vec<ClipLabel>,
}

impl HmdbSplit {
    /// The clips of one subset.
    pub fn subset(&self, s: HmdbSubset) -> &[ClipLabel] {
        match s {
            HmdbSubset::Train => &self.train,
            HmdbSubset::Test => &self.test,
        }
    }
}

/// Reads fold `fold` (1..=3) from the `testTrainMulti_7030_splits` directory: every
/// `<class>_test_split<fold>.txt`, lines `<video.avi> <0|1|2>`. Video paths are
/// `<class>/<video.avi>`.
pub fn parse_hmdb_splits(dir: impl AsRef<Path>, fold: u32) -> Result<HmdbSplit, DataError> {
    let dir = dir.as_ref();
    let mut issues = Vec::new();
    let s = parse_hmdb_dir(dir, fold, &mut issues);
    finish(s, issues)
}

pub(crate) fn parse_hmdb_dir(dir: &Path, fold: u32, issues: &mut Vec<Issue>) -> HmdbSplit {
    let suffix = format!("_test_split{fold}.txt");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(class) = name.strip_suffix(&suffix) {
                    files.push((class.to_string(), entry.path()));
                }
            }
        }
        Err(e) => {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                IssueKind::MissingFile
            } else {
                IssueKind::Unreadable
            };
            issues.push(Issue::file(
                dir,
                kind,
                format!("cannot list split directory: {e}"),
            ));
            return HmdbSplit {
                classes: Vec::new(),
                train: Vec::new(),
                test: Vec::new(),
            };
        }
    }
    files.sort();
    if files.is_empty() {
        issues.push(Issue::file(
            dir,
            IssueKind::EmptySplit,
            format!("no *{suffix} files in this directory"),
        ));
    }
    let classes: Vec<String> = files.iter().map(|(c, _)| c.clone()).collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (label, (class, path)) in files.iter().enumerate() {
        let text = match read_text(path) {
            Ok(t) => t,
            Err(issue) => {
                issues.push(issue);
                continue;
            }
        };
        let n_before = train.len() + test.len();
        for (line, l) in lines(&text) {
            let toks: Vec<&str> = l.split_whitespace().collect();
            if toks.len() != 2 {
                issues.push(Issue::at(
                    path,
                    line,
                    Some(1),
                    IssueKind::Columns,
                    format!(
                        "expected `<video.avi> <0|1|2>`, found {} fields",
                        toks.len()
                    ),
                ));
                continue;
            }
            let col = Some(toks[0].chars().count() as u64 + 2);
            let clip = ClipLabel {
                path: format!("{class}/{}", toks[0]),
                label,
                start_s: None,
                stop_s: None,
            };
            match toks[1] {
                "1" => train.push(clip),
                "2" => test.push(clip),
                "0" => {}
                other => issues.push(Issue::at(
                    path,
                    line,
                    col,
                    IssueKind::Field,
                    format!("split code {other:?} is not 0 (unused), 1 (train) or 2 (test)"),
                )),
            }
        }
        if train.len() + test.len() == n_before {
            issues.push(Issue::file(
                path,
                IssueKind::EmptySplit,
                format!("class {class} has no train or test video in fold {fold}"),
            ));
        }
    }
    HmdbSplit {
        classes,
        train,
        test,
    }
}
