//! EPIC-KITCHENS-100 annotation files (also the schema of the synthetic world's CSV).
//!
//! Times come from the `start_timestamp` / `stop_timestamp` columns, never from the frame
//! columns: those index the released RGB-frame dumps (≈60 fps for `PXX_YY`, ≈50 fps for
//! `PXX_1YY`), not the MP4s' native frames.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::csvutil::{check_header, check_len, python_list, records, Row};
use crate::error::{finish, read_text, DataError, Issue, IssueKind};
use crate::types::{ActionSegment, Timestamp};

/// Columns of `EPIC_100_{train,validation}.csv`, in file order.
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

/// Number of leading columns in the unlabelled `EPIC_100_test_timestamps.csv`.
pub const EPIC_TEST_COLUMNS: usize = 8;

/// Columns of `EPIC_100_{verb,noun}_classes.csv`.
pub const EPIC_CLASS_COLUMNS: [&str; 4] = ["id", "key", "instances", "category"];

/// Columns of `EPIC_100_video_info.csv`.
pub const EPIC_VIDEO_INFO_COLUMNS: [&str; 4] = ["video_id", "duration", "fps", "resolution"];

/// One row of an EPIC-100 annotation CSV: the common segment plus the EPIC-only columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpicRow {
    /// The dataset-independent view (uid = `narration_id`).
    pub segment: ActionSegment,
    /// When the narration was spoken (may be missing).
    pub narration_timestamp: Option<Timestamp>,
    /// Index into the released RGB-frame dump (not the MP4's native frame); kept for reference.
    pub start_frame: u64,
    /// Index into the released RGB-frame dump; kept for reference.
    pub stop_frame: u64,
    /// Verb string (`None` in the test file).
    pub verb_key: Option<String>,
    /// First noun string, may contain ':' such as `box:lunch` (`None` in the test file).
    pub noun_key: Option<String>,
    /// All nouns of the narration.
    pub all_nouns: Vec<String>,
    /// Class ids of all nouns.
    pub all_noun_classes: Vec<usize>,
}

/// Checks applied while parsing an EPIC-style CSV.
#[derive(Debug, Clone, Default)]
pub struct EpicChecks {
    /// Number of verb classes (97 for EPIC-100); ids must be below it.
    pub n_verbs: Option<usize>,
    /// Number of noun classes (300 for EPIC-100); ids must be below it.
    pub n_nouns: Option<usize>,
    /// Video durations in seconds (from `EPIC_100_video_info.csv`); segments must end inside.
    pub durations: Option<HashMap<String, f64>>,
    /// Slack allowed past the end of a video, in seconds (container durations are rounded).
    pub duration_tolerance_s: f64,
}

/// One row of `EPIC_100_{verb,noun}_classes.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpicClass {
    /// Class id = logit index.
    pub id: usize,
    /// Canonical name.
    pub key: String,
    /// Synonyms that were mapped to this class.
    pub instances: Vec<String>,
    /// Coarse category.
    pub category: String,
}

/// One row of `EPIC_100_video_info.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// `PXX_YY`.
    pub video_id: String,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Native frame rate.
    pub fps: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Parses `EPIC_100_train.csv` / `EPIC_100_validation.csv` (15 labelled columns) or
/// `EPIC_100_test_timestamps.csv` (8 columns, labels `None`); the header decides which.
/// All problems of the file are returned together; an empty file is an error.
pub fn parse_epic_csv(
    path: impl AsRef<Path>,
    checks: &EpicChecks,
) -> Result<Vec<EpicRow>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(crate::Issues(vec![i])))?;
    let mut issues = Vec::new();
    let rows = parse_epic_text(path, &text, checks, &mut issues);
    finish(rows, issues)
}

pub(crate) fn parse_epic_text(
    path: &Path,
    text: &str,
    checks: &EpicChecks,
    issues: &mut Vec<Issue>,
) -> Vec<EpicRow> {
    let recs = records(path, text, issues);
    let Some(((hline, header), body)) = recs.split_first() else {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "file is empty (no header, no rows)",
        ));
        return Vec::new();
    };
    let labelled = header.len() != EPIC_TEST_COLUMNS;
    let expected: &[&str] = if labelled {
        &EPIC_COLUMNS
    } else {
        &EPIC_COLUMNS[..EPIC_TEST_COLUMNS]
    };
    if let Some(issue) = check_header(path, *hline, header, expected) {
        issues.push(issue);
        return Vec::new();
    }
    let mut out = Vec::with_capacity(body.len());
    let mut seen = HashSet::new();
    for (line, rec) in body {
        if let Some(issue) = check_len(path, *line, rec, expected.len()) {
            issues.push(issue);
            continue;
        }
        let mut row = Row {
            path,
            line: *line,
            rec,
            names: expected,
            issues: &mut *issues,
        };
        if let Some(parsed) = parse_row(&mut row, labelled, checks) {
            if !seen.insert(parsed.segment.uid.clone()) {
                row.fail(
                    0,
                    IssueKind::Duplicate,
                    format!("duplicate narration_id {:?}", parsed.segment.uid),
                );
                continue;
            }
            out.push(parsed);
        }
    }
    if out.is_empty() && body.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "no annotation rows after the header",
        ));
    }
    out
}

fn parse_row(row: &mut Row<'_>, labelled: bool, checks: &EpicChecks) -> Option<EpicRow> {
    let before = row.issues.len();
    let uid = row.text(0);
    let participant = row.text(1);
    let video_id = row.text(2);
    let narration_timestamp = match row.opt_text(3) {
        Some(_) => row.timestamp(3),
        None => None,
    };
    let start = row.timestamp(4);
    let stop = row.timestamp(5);
    let start_frame: Option<u64> = row.parse(6, "a frame number (non-negative integer)");
    let stop_frame: Option<u64> = row.parse(7, "a frame number (non-negative integer)");
    let (mut narration, mut verb_key, mut noun_key, mut verb, mut noun) =
        (None, None, None, None, None);
    let (mut all_nouns, mut all_noun_classes) = (Vec::new(), Vec::new());
    if labelled {
        narration = row.opt_text(8);
        verb_key = row.text(9);
        verb = row.class_id(10, checks.n_verbs, "verb");
        noun_key = row.text(11);
        noun = row.class_id(12, checks.n_nouns, "noun");
        match python_list(row.raw(13)) {
            Ok(v) => all_nouns = v,
            Err(e) => row.fail(13, IssueKind::Field, e),
        }
        match python_list(row.raw(14)) {
            Ok(v) => {
                for s in v {
                    match s.parse::<usize>() {
                        Ok(id) => {
                            if let Some(id) = row.check_class(14, id, checks.n_nouns, "noun") {
                                all_noun_classes.push(id);
                            }
                        }
                        Err(_) => row.fail(
                            14,
                            IssueKind::Field,
                            format!("{s:?} in all_noun_classes is not a class id"),
                        ),
                    }
                }
            }
            Err(e) => row.fail(14, IssueKind::Field, e),
        }
        if all_nouns.len() != all_noun_classes.len() && row.issues.len() == before {
            row.fail(
                14,
                IssueKind::Field,
                format!(
                    "all_nouns has {} entries but all_noun_classes has {}",
                    all_nouns.len(),
                    all_noun_classes.len()
                ),
            );
        }
    }
    if let (Some(a), Some(b)) = (start, stop) {
        if b < a {
            row.fail(
                5,
                IssueKind::Interval,
                format!("stop_timestamp {b} is before start_timestamp {a}"),
            );
        }
        if let (Some(durations), Some(vid)) = (&checks.durations, &video_id) {
            match durations.get(vid) {
                Some(&d) if b.as_secs() > d + checks.duration_tolerance_s => row.fail(
                    5,
                    IssueKind::Interval,
                    format!("stop_timestamp {b} is past the end of video {vid} ({d:.3} s)"),
                ),
                Some(_) => {}
                None => row.fail(
                    2,
                    IssueKind::MissingFile,
                    format!("video {vid} is not listed in the video info file"),
                ),
            }
        }
    }
    if let (Some(a), Some(b)) = (start_frame, stop_frame) {
        if b < a {
            row.fail(
                7,
                IssueKind::Interval,
                format!("stop_frame {b} is before start_frame {a}"),
            );
        }
    }
    if row.issues.len() != before {
        return None;
    }
    let (uid, participant, video_id, start, stop) = (uid?, participant?, video_id?, start?, stop?);
    Some(EpicRow {
        segment: ActionSegment {
            uid,
            video_id,
            participant: Some(participant),
            start_s: start.as_secs(),
            stop_s: stop.as_secs(),
            verb,
            noun,
            narration,
            start,
            stop,
        },
        narration_timestamp,
        start_frame: start_frame?,
        stop_frame: stop_frame?,
        verb_key,
        noun_key,
        all_nouns,
        all_noun_classes,
    })
}

/// Parses `EPIC_100_verb_classes.csv` / `EPIC_100_noun_classes.csv`. Ids must run 0, 1, 2, ... in
/// file order, because the id is the logit index.
pub fn parse_epic_classes(path: impl AsRef<Path>) -> Result<Vec<EpicClass>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(crate::Issues(vec![i])))?;
    let mut issues = Vec::new();
    let classes = parse_classes_text(path, &text, &mut issues);
    finish(classes, issues)
}

pub(crate) fn parse_classes_text(
    path: &Path,
    text: &str,
    issues: &mut Vec<Issue>,
) -> Vec<EpicClass> {
    let recs = records(path, text, issues);
    let Some(((hline, header), body)) = recs.split_first() else {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "class file is empty",
        ));
        return Vec::new();
    };
    if let Some(issue) = check_header(path, *hline, header, &EPIC_CLASS_COLUMNS) {
        issues.push(issue);
        return Vec::new();
    }
    let mut out = Vec::with_capacity(body.len());
    for (k, (line, rec)) in body.iter().enumerate() {
        if let Some(issue) = check_len(path, *line, rec, EPIC_CLASS_COLUMNS.len()) {
            issues.push(issue);
            continue;
        }
        let mut row = Row {
            path,
            line: *line,
            rec,
            names: &EPIC_CLASS_COLUMNS,
            issues: &mut *issues,
        };
        let id: Option<usize> = row.parse(0, "a class id (non-negative integer)");
        let key = row.text(1);
        let instances = match python_list(row.raw(2)) {
            Ok(v) => Some(v),
            Err(e) => {
                row.fail(2, IssueKind::Field, e);
                None
            }
        };
        let category = row.opt_text(3).unwrap_or_default();
        if let Some(id) = id {
            if id != k {
                row.fail(
                    0,
                    IssueKind::Field,
                    format!(
                        "class id {id} on data row {} (ids must be 0, 1, 2, ... in order)",
                        k + 1
                    ),
                );
                continue;
            }
        }
        if let (Some(id), Some(key), Some(instances)) = (id, key, instances) {
            out.push(EpicClass {
                id,
                key,
                instances,
                category,
            });
        }
    }
    if body.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "class file has a header but no classes",
        ));
    }
    out
}

/// Parses `EPIC_100_video_info.csv` (`video_id,duration,fps,resolution` with `WxH` resolution).
pub fn parse_epic_video_info(path: impl AsRef<Path>) -> Result<Vec<VideoInfo>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(crate::Issues(vec![i])))?;
    let mut issues = Vec::new();
    let infos = parse_video_info_text(path, &text, &mut issues);
    finish(infos, issues)
}

pub(crate) fn parse_video_info_text(
    path: &Path,
    text: &str,
    issues: &mut Vec<Issue>,
) -> Vec<VideoInfo> {
    let recs = records(path, text, issues);
    let Some(((hline, header), body)) = recs.split_first() else {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "video info file is empty",
        ));
        return Vec::new();
    };
    if let Some(issue) = check_header(path, *hline, header, &EPIC_VIDEO_INFO_COLUMNS) {
        issues.push(issue);
        return Vec::new();
    }
    let mut out = Vec::with_capacity(body.len());
    for (line, rec) in body {
        if let Some(issue) = check_len(path, *line, rec, EPIC_VIDEO_INFO_COLUMNS.len()) {
            issues.push(issue);
            continue;
        }
        let mut row = Row {
            path,
            line: *line,
            rec,
            names: &EPIC_VIDEO_INFO_COLUMNS,
            issues: &mut *issues,
        };
        let video_id = row.text(0);
        let duration_s = row.seconds(1);
        let fps: Option<f64> = row.parse(2, "a frame rate");
        let res = row.raw(3).to_string();
        let wh = res.split_once(['x', 'X']).and_then(|(w, h)| {
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        if wh.is_none() {
            row.fail(
                3,
                IssueKind::Field,
                format!("{res:?} is not a WIDTHxHEIGHT resolution"),
            );
        }
        if let (Some(video_id), Some(duration_s), Some(fps), Some((width, height))) =
            (video_id, duration_s, fps, wh)
        {
            out.push(VideoInfo {
                video_id,
                duration_s,
                fps,
                width,
                height,
            });
        }
    }
    out
}
