//! Ego4D Forecasting & Hands-and-Objects annotation files (`fho_lta_*.json`,
//! `fho_oscc-pnr_*.json`, `fho_lta_taxonomy.json`).
//!
//! The released files wrap the entries as `{"version", "date", "description", "split",
//! "clips": [...]}`; some loaders save the array alone, so both forms are accepted. Each entry is
//! parsed on its own, so every bad entry is reported (with the file line and column where it
//! starts, plus the position of the problem inside it), not just the first.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{finish, line_col_of_bytes, read_text, DataError, Issue, IssueKind, Issues};
use crate::types::{ActionSegment, Timestamp};

/// The verb and noun vocabularies of `fho_lta_taxonomy.json`; label id = list index. Head sizes
/// must come from here at run time (v1 has 115/478 classes, v2 117/521).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taxonomy {
    /// Verb names.
    pub verbs: Vec<String>,
    /// Noun names.
    pub nouns: Vec<String>,
}

/// One entry of `fho_lta_<split>.json` (one action). Label fields are absent in the test file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LtaEntry {
    /// Full video the clip was cut from.
    pub video_uid: String,
    /// Canonical FHO clip (`<clip_uid>.mp4`) that the `action_clip_*` times refer to.
    pub clip_uid: String,
    /// Position of the action inside its clip (LTA windows are built in this order).
    pub action_idx: usize,
    /// Clip start inside the full video, seconds.
    pub clip_parent_start_sec: f64,
    /// Clip end inside the full video, seconds.
    pub clip_parent_end_sec: f64,
    /// Action start relative to the clip, seconds.
    pub action_clip_start_sec: f64,
    /// Action end relative to the clip, seconds.
    pub action_clip_end_sec: f64,
    /// Verb name.
    #[serde(default)]
    pub verb: Option<String>,
    /// Noun name.
    #[serde(default)]
    pub noun: Option<String>,
    /// Verb id (taxonomy index).
    #[serde(default)]
    pub verb_label: Option<usize>,
    /// Noun id (taxonomy index).
    #[serde(default)]
    pub noun_label: Option<usize>,
}

impl LtaEntry {
    /// The dataset-independent view: video = the canonical clip, uid = `<clip_uid>_<action_idx>`.
    pub fn to_segment(&self) -> ActionSegment {
        let narration = match (&self.verb, &self.noun) {
            (Some(v), Some(n)) => Some(format!("{v} {n}")),
            _ => None,
        };
        let start = Timestamp::from_secs(self.action_clip_start_sec);
        let stop = Timestamp::from_secs(self.action_clip_end_sec);
        ActionSegment {
            uid: format!("{}_{}", self.clip_uid, self.action_idx),
            video_id: self.clip_uid.clone(),
            participant: None,
            start_s: self.action_clip_start_sec,
            stop_s: self.action_clip_end_sec,
            verb: self.verb_label,
            noun: self.noun_label,
            narration,
            start,
            stop,
        }
    }
}

/// One entry of `fho_oscc-pnr_<split>.json` (an ~8 s window around a possible state change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsccEntry {
    /// Sample key.
    pub unique_id: String,
    /// Full canonical video (`<video_uid>.mp4`, 30 fps) that `parent_*` refers to.
    pub video_uid: String,
    /// FHO clip id, may be null.
    #[serde(default)]
    pub clip_uid: Option<String>,
    /// Window start in the full video, seconds.
    pub parent_start_sec: f64,
    /// Window end in the full video, seconds.
    pub parent_end_sec: f64,
    /// Window start frame in the full video.
    pub parent_start_frame: u64,
    /// Window end frame in the full video (inclusive).
    pub parent_end_frame: u64,
    /// Window start relative to the FHO clip, seconds.
    pub clip_start_sec: f64,
    /// Window end relative to the FHO clip, seconds.
    pub clip_end_sec: f64,
    /// Window start frame relative to the FHO clip.
    pub clip_start_frame: u64,
    /// Window end frame relative to the FHO clip.
    pub clip_end_frame: u64,
    /// Whether an object changes state (absent in `test_unannotated`).
    #[serde(default)]
    pub state_change: Option<bool>,
    /// Point-of-no-return frame in the full video (null for negatives).
    #[serde(default)]
    pub parent_pnr_frame: Option<u64>,
    /// Point-of-no-return frame relative to the FHO clip.
    #[serde(default)]
    pub clip_pnr_frame: Option<u64>,
    /// Legacy PNR field, used when `parent_pnr_frame` is absent.
    #[serde(default)]
    pub pnr_frame: Option<u64>,
}

impl OsccEntry {
    /// PNR frame in the full video: `parent_pnr_frame`, else `pnr_frame`.
    pub fn pnr(&self) -> Option<u64> {
        self.parent_pnr_frame.or(self.pnr_frame)
    }

    /// Classification label: 1 for a state change, 0 otherwise, `None` when unannotated.
    pub fn state_label(&self) -> Option<usize> {
        self.state_change.map(usize::from)
    }
}

/// Reads `fho_lta_taxonomy.json` (`{"verbs": [...], "nouns": [...]}`); empty lists are errors.
pub fn parse_taxonomy(path: impl AsRef<Path>) -> Result<Taxonomy, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let tax: Taxonomy = serde_json::from_str(&text)
        .map_err(|e| DataError::Invalid(Issues(vec![json_issue(path, &e, 0, &text)])))?;
    let mut issues = Vec::new();
    if tax.verbs.is_empty() {
        issues.push(
            Issue::file(path, IssueKind::EmptySplit, "taxonomy has no verbs").with_field("verbs"),
        );
    }
    if tax.nouns.is_empty() {
        issues.push(
            Issue::file(path, IssueKind::EmptySplit, "taxonomy has no nouns").with_field("nouns"),
        );
    }
    finish(tax, issues)
}

/// Checks applied to Ego4D entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ego4dChecks {
    /// Number of verbs (taxonomy size); labels must be below it.
    pub n_verbs: Option<usize>,
    /// Number of nouns (taxonomy size); labels must be below it.
    pub n_nouns: Option<usize>,
    /// Require labels (train/val files); test files have none.
    pub require_labels: bool,
}

/// Parses `fho_lta_<split>.json` (wrapper object or bare array). Checks: labels present when
/// required and inside the taxonomy, actions inside their clip, no duplicate `(clip_uid,
/// action_idx)`, at least one entry.
pub fn parse_lta(path: impl AsRef<Path>, checks: &Ego4dChecks) -> Result<Vec<LtaEntry>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let mut issues = Vec::new();
    let out = parse_lta_text(path, &text, checks, &mut issues);
    finish(out, issues)
}

pub(crate) fn parse_lta_text(
    path: &Path,
    text: &str,
    checks: &Ego4dChecks,
    issues: &mut Vec<Issue>,
) -> Vec<LtaEntry> {
    let entries: Vec<(usize, LtaEntry)> = parse_entries(path, text, issues);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (offset, e) in entries {
        let (line, col) = line_col_of_bytes(text.as_bytes(), offset);
        let at = |field: &str, kind: IssueKind, reason: String| {
            Issue::at(path, line, Some(col), kind, reason).with_field(field)
        };
        let before = issues.len();
        if checks.require_labels {
            if e.verb_label.is_none() {
                issues.push(at(
                    "verb_label",
                    IssueKind::MissingField,
                    format!("entry {}_{} has no verb_label", e.clip_uid, e.action_idx),
                ));
            }
            if e.noun_label.is_none() {
                issues.push(at(
                    "noun_label",
                    IssueKind::MissingField,
                    format!("entry {}_{} has no noun_label", e.clip_uid, e.action_idx),
                ));
            }
        }
        for (field, value, n) in [
            ("verb_label", e.verb_label, checks.n_verbs),
            ("noun_label", e.noun_label, checks.n_nouns),
        ] {
            if let (Some(v), Some(n)) = (value, n) {
                if v >= n {
                    issues.push(at(
                        field,
                        IssueKind::UnknownClass,
                        format!("unknown class id {v} (taxonomy has {n} entries)"),
                    ));
                }
            }
        }
        let clip_len = e.clip_parent_end_sec - e.clip_parent_start_sec;
        if e.action_clip_end_sec < e.action_clip_start_sec {
            issues.push(at(
                "action_clip_end_sec",
                IssueKind::Interval,
                format!(
                    "action ends ({}) before it starts ({})",
                    e.action_clip_end_sec, e.action_clip_start_sec
                ),
            ));
        } else if clip_len.is_finite() && e.action_clip_end_sec > clip_len + 0.5 {
            issues.push(at(
                "action_clip_end_sec",
                IssueKind::Interval,
                format!(
                    "action ends at {} s, past the end of clip {} ({clip_len:.3} s long)",
                    e.action_clip_end_sec, e.clip_uid
                ),
            ));
        }
        if !seen.insert((e.clip_uid.clone(), e.action_idx)) {
            issues.push(at(
                "action_idx",
                IssueKind::Duplicate,
                format!("duplicate action {}_{}", e.clip_uid, e.action_idx),
            ));
        }
        if issues.len() == before {
            out.push(e);
        }
    }
    out
}

/// Parses `fho_oscc-pnr_<split>.json` (wrapper object or bare array). Checks: windows not
/// inverted, the PNR of a positive inside its window, no duplicate `unique_id`, at least one entry;
/// with `require_labels`, `state_change` present and positives carry a PNR.
pub fn parse_oscc_pnr(
    path: impl AsRef<Path>,
    require_labels: bool,
) -> Result<Vec<OsccEntry>, DataError> {
    let path = path.as_ref();
    let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
    let mut issues = Vec::new();
    let out = parse_oscc_text(path, &text, require_labels, &mut issues);
    finish(out, issues)
}

pub(crate) fn parse_oscc_text(
    path: &Path,
    text: &str,
    require_labels: bool,
    issues: &mut Vec<Issue>,
) -> Vec<OsccEntry> {
    let entries: Vec<(usize, OsccEntry)> = parse_entries(path, text, issues);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (offset, e) in entries {
        let (line, col) = line_col_of_bytes(text.as_bytes(), offset);
        let at = |field: &str, kind: IssueKind, reason: String| {
            Issue::at(path, line, Some(col), kind, reason).with_field(field)
        };
        let before = issues.len();
        if e.parent_end_frame < e.parent_start_frame || e.parent_end_sec < e.parent_start_sec {
            issues.push(at(
                "parent_end_frame",
                IssueKind::Interval,
                format!("window of {} ends before it starts", e.unique_id),
            ));
        }
        if require_labels && e.state_change.is_none() {
            issues.push(at(
                "state_change",
                IssueKind::MissingField,
                format!("entry {} has no state_change", e.unique_id),
            ));
        }
        if e.state_change == Some(true) {
            match e.pnr() {
                Some(p) if p < e.parent_start_frame || p > e.parent_end_frame => issues.push(at(
                    "parent_pnr_frame",
                    IssueKind::Interval,
                    format!(
                        "PNR frame {p} outside the window [{}, {}]",
                        e.parent_start_frame, e.parent_end_frame
                    ),
                )),
                Some(_) => {}
                None if require_labels => issues.push(at(
                    "parent_pnr_frame",
                    IssueKind::MissingField,
                    format!("positive entry {} has no PNR frame", e.unique_id),
                )),
                None => {}
            }
        }
        if !seen.insert(e.unique_id.clone()) {
            issues.push(at(
                "unique_id",
                IssueKind::Duplicate,
                format!("duplicate unique_id {:?}", e.unique_id),
            ));
        }
        if issues.len() == before {
            out.push(e);
        }
    }
    out
}

/// Byte spans of the elements of the top-level array, or of the `"clips"` array of a top-level
/// object. The file is first checked to be valid JSON by serde_json (so the scanner may assume
/// well-formed input); each element is then deserialised on its own, and the span start turns a
/// per-entry error position into a file position.
fn entry_spans(text: &str) -> Result<Vec<(usize, usize)>, String> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    let array_start = match b.get(i) {
        Some(b'[') => i,
        Some(b'{') => {
            // Walk the object's keys at depth 1 until "clips".
            i += 1;
            loop {
                i = skip_ws(b, i);
                match b.get(i) {
                    Some(b'"') => {}
                    _ => return Err("top-level object has no \"clips\" array".into()),
                }
                let key_end = skip_string(b, i);
                let key = &text[i + 1..key_end - 1];
                i = skip_ws(b, key_end);
                if b.get(i) != Some(&b':') {
                    return Err("malformed object".into());
                }
                i = skip_ws(b, i + 1);
                if key == "clips" {
                    if b.get(i) != Some(&b'[') {
                        return Err("\"clips\" is not an array".into());
                    }
                    break i;
                }
                i = skip_ws(b, skip_value(b, i));
                match b.get(i) {
                    Some(b',') => i += 1,
                    _ => return Err("top-level object has no \"clips\" array".into()),
                }
            }
        }
        _ => return Err("expected a JSON array or an object with a \"clips\" array".into()),
    };
    let mut spans = Vec::new();
    let mut i = skip_ws(b, array_start + 1);
    if b.get(i) == Some(&b']') {
        return Ok(spans);
    }
    loop {
        let end = skip_value(b, i);
        spans.push((i, end));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            _ => return Ok(spans),
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// `b[i]` is the opening quote; returns the index after the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Returns the index just after the JSON value starting at `i` (input known to be valid JSON).
fn skip_value(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = skip_string(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while b
                .get(j)
                .is_some_and(|c| !matches!(c, b',' | b']' | b'}') && !c.is_ascii_whitespace())
            {
                j += 1;
            }
            j
        }
    }
}

/// Splits the file into entries (wrapper or bare list) and deserialises each one separately,
/// returning the entries with their byte offset in the file.
fn parse_entries<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    issues: &mut Vec<Issue>,
) -> Vec<(usize, T)> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        issues.push(json_issue(path, &e, 0, text));
        return Vec::new();
    }
    let spans = match entry_spans(text) {
        Ok(s) => s,
        Err(reason) => {
            issues.push(Issue::at(path, 1, Some(1), IssueKind::Syntax, reason));
            return Vec::new();
        }
    };
    if spans.is_empty() {
        issues.push(Issue::file(
            path,
            IssueKind::EmptySplit,
            "no entries (empty \"clips\" list)",
        ));
        return Vec::new();
    }
    let mut out = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match serde_json::from_str::<T>(&text[start..end]) {
            Ok(v) => out.push((start, v)),
            Err(e) => issues.push(json_issue(path, &e, start, text)),
        }
    }
    out
}

/// Locates a serde_json error that happened inside the substring starting at `offset`.
fn json_issue(path: &Path, e: &serde_json::Error, offset: usize, text: &str) -> Issue {
    let (base_line, base_col) = line_col_of_bytes(text.as_bytes(), offset);
    let (el, ec) = (e.line() as u64, e.column() as u64);
    let (line, col) = if el <= 1 {
        (base_line, base_col + ec.saturating_sub(1))
    } else {
        (base_line + el - 1, ec)
    };
    let kind = match e.classify() {
        serde_json::error::Category::Data => {
            if e.to_string().starts_with("missing field") {
                IssueKind::MissingField
            } else {
                IssueKind::Field
            }
        }
        _ => IssueKind::Syntax,
    };
    let mut reason = e.to_string();
    // serde_json appends " at line L column C" relative to the entry; the issue carries the
    // absolute position instead.
    if let Some(p) = reason.rfind(" at line ") {
        reason.truncate(p);
    }
    let mut issue = Issue::at(path, line, Some(col), kind, reason.clone());
    if let Some(name) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        issue = issue.with_field(name);
    }
    issue
}
