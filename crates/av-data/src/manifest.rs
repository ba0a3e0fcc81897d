//! Dataset manifests (TOML): where a dataset's annotation files and media live relative to a data
//! root, which splits exist, how many classes to expect, and the media layout. [`Dataset::load`]
//! parses every annotation file a manifest names; [`validate`] also checks that every media
//! file the splits reference exists and is readable, reporting all problems at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ego4d::{parse_lta_text, parse_oscc_text, Ego4dChecks, OsccEntry, Taxonomy};
use crate::epic::{parse_classes_text, parse_epic_text, parse_video_info_text, EpicChecks};
use crate::error::{finish, line_col_of_bytes, read_text, DataError, Issue, IssueKind, Issues};
use crate::lists::{
    parse_class_ind_text, parse_hmdb_dir, parse_ucf_list_text, parse_vggsound_text, HmdbSubset,
};
use crate::subset::{parse_rest_classes, RestNaming};
use crate::types::{ActionSegment, ClipLabel};

/// Which parser reads the split files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// `EPIC_100_{train,validation}.csv`.
    #[serde(rename = "epic-kitchens-100")]
    EpicKitchens100,
    /// The synthetic audible-interaction world (EPIC-100 CSV schema).
    Synthetic,
    /// Ego4D `fho_lta_<split>.json` (action recognition / long-term anticipation).
    Ego4dLta,
    /// Ego4D `fho_oscc-pnr_<split>.json` (state change / point of no return).
    Ego4dOsccPnr,
    /// `vggsound.csv`.
    Vggsound,
    /// UCF-101 `trainlist0N.txt` / `testlist0N.txt` with `classInd.txt`.
    Ucf101,
    /// HMDB-51 `testTrainMulti_7030_splits/`.
    Hmdb51,
}

/// Directories relative to the data root given at run time (`--root`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roots {
    /// Where annotation / split files are looked up.
    #[serde(default = "dot")]
    pub annotations: PathBuf,
    /// Where media paths produced by the templates are looked up.
    #[serde(default = "dot")]
    pub media: PathBuf,
}

fn dot() -> PathBuf {
    PathBuf::from(".")
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            annotations: dot(),
            media: dot(),
        }
    }
}

/// Expected class counts (checked against the class files / taxonomy when both are known).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCounts {
    /// Verb classes (EPIC-100: 97).
    #[serde(default)]
    pub verbs: Option<usize>,
    /// Noun classes (EPIC-100: 300).
    #[serde(default)]
    pub nouns: Option<usize>,
    /// Classes of a single-label dataset (UCF-101: 101, HMDB-51: 51, VGGSound: 309).
    #[serde(default)]
    pub labels: Option<usize>,
}

/// Auxiliary annotation files, relative to `roots.annotations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuxFiles {
    /// `EPIC_100_verb_classes.csv`.
    #[serde(default)]
    pub verb_classes: Option<PathBuf>,
    /// `EPIC_100_noun_classes.csv`.
    #[serde(default)]
    pub noun_classes: Option<PathBuf>,
    /// `EPIC_100_video_info.csv`: enables the "segment ends past the video" check.
    #[serde(default)]
    pub video_info: Option<PathBuf>,
    /// `fho_lta_taxonomy.json`.
    #[serde(default)]
    pub taxonomy: Option<PathBuf>,
    /// UCF-101 `classInd.txt`.
    #[serde(default)]
    pub class_index: Option<PathBuf>,
    /// AV-SSRL rest ("unseen") class list.
    #[serde(default)]
    pub rest_classes: Option<PathBuf>,
}

/// One split: its annotation file and, for multi-split files, which part to select.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Annotation file (or, for HMDB-51, the split directory), relative to `roots.annotations`.
    pub file: PathBuf,
    /// VGGSound: `train` / `test` rows of the shared CSV; HMDB-51: `train` / `test` codes.
    #[serde(default)]
    pub subset: Option<String>,
    /// HMDB-51 fold (1..=3).
    #[serde(default)]
    pub fold: Option<u32>,
    /// Whether labels must be present (false for Ego4D `test_unannotated`, EPIC test).
    #[serde(default = "yes")]
    pub labelled: bool,
}

fn yes() -> bool {
    true
}

/// How media are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaLayout {
    /// One container file (MP4 / AVI) per template path.
    #[default]
    Video,
    /// One folder of numbered JPEG/PNG frames per template path (plus a WAV per `audio`).
    Frames,
}

/// The media layout: path templates relative to `roots.media`.
///
/// Placeholders: `{video_id}`, `{participant}`, `{uid}`, `{segment}` (action segments:
/// `<video_id>_<HHMMSScc>_<HHMMSScc>`), `{path}` (classification clips: the list's relative path),
/// `{stem}` (`{path}` without its extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Video files or frame folders.
    #[serde(default)]
    pub layout: MediaLayout,
    /// Path of the media a sample reads, e.g. `action_segments/{segment}.MP4`.
    #[serde(default = "default_template")]
    pub template: String,
    /// With the frame layout: the WAV file next to each frame folder, e.g. `audio/{video_id}.wav`.
    #[serde(default)]
    pub audio: Option<String>,
    /// Where the long source videos are (what `replai-prep segments` cuts), e.g.
    /// `{participant}/videos/{video_id}.MP4`; checked with [`MediaCheck::Sources`].
    #[serde(default)]
    pub sources: Option<String>,
    /// Frame rate the prepared media are expected to have (RepLAI: 16).
    #[serde(default)]
    pub fps: Option<f64>,
    /// Audio sample rate the prepared media are expected to have (RepLAI: 44100).
    #[serde(default)]
    pub audio_rate: Option<u32>,
}

fn default_template() -> String {
    "{video_id}.mp4".into()
}

impl Default for Media {
    fn default() -> Self {
        Self {
            layout: MediaLayout::Video,
            template: default_template(),
            audio: None,
            sources: None,
            fps: None,
            audio_rate: None,
        }
    }
}

/// A dataset manifest. Unknown keys are rejected so that a typo does not silently fall back to a
/// default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Dataset name, used in messages and output paths.
    pub name: String,
    /// Which parser to use.
    pub format: DatasetFormat,
    /// Free text (where to get the data).
    #[serde(default)]
    pub description: String,
    /// Annotation and media roots relative to the data root.
    #[serde(default)]
    pub roots: Roots,
    /// Expected class counts.
    #[serde(default)]
    pub classes: ClassCounts,
    /// Class lists, taxonomy, video info.
    #[serde(default)]
    pub files: AuxFiles,
    /// Named splits (`train`, `validation`, ...).
    pub splits: BTreeMap<String, SplitSpec>,
    /// Media layout.
    #[serde(default)]
    pub media: Media,
}

const PLACEHOLDERS: [&str; 6] = ["video_id", "participant", "uid", "segment", "path", "stem"];

impl Manifest {
    /// Reads and checks a manifest file; TOML errors carry the file, line and column.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let text = read_text(path).map_err(|i| DataError::Invalid(Issues(vec![i])))?;
        Self::from_toml(path, &text)
    }

    /// Parses manifest text (`path` is only used in messages).
    pub fn from_toml(path: impl AsRef<Path>, text: &str) -> Result<Self, DataError> {
        let path = path.as_ref();
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map_or((1, 1), |s| line_col_of_bytes(text.as_bytes(), s.start));
            DataError::Invalid(Issues(vec![Issue::at(
                path,
                line,
                Some(col),
                IssueKind::Manifest,
                e.message().to_string(),
            )]))
        })?;
        finish(m.clone(), m.check(path))
    }

    fn check(&self, path: &Path) -> Vec<Issue> {
        let mut issues = Vec::new();
        let bad = |reason: String| Issue::file(path, IssueKind::Manifest, reason);
        if self.splits.is_empty() {
            issues.push(bad("manifest defines no [splits.*]".into()));
        }
        let mut templates = vec![("media.template", Some(&self.media.template))];
        templates.push(("media.audio", self.media.audio.as_ref()));
        templates.push(("media.sources", self.media.sources.as_ref()));
        for (key, t) in templates {
            if let Some(t) = t {
                if let Err(e) = check_template(t) {
                    issues.push(bad(format!("{key} = {t:?}: {e}")));
                }
            }
        }
        if self.media.audio.is_some() && self.media.layout != MediaLayout::Frames {
            issues.push(bad(
                "media.audio only applies to layout = \"frames\" (video files carry their audio)"
                    .into(),
            ));
        }
        if let Some(fps) = self.media.fps {
            if !(fps.is_finite() && fps > 0.0) {
                issues.push(bad(format!("media.fps must be positive, got {fps}")));
            }
        }
        if self.media.audio_rate == Some(0) {
            issues.push(bad("media.audio_rate must be positive".into()));
        }
        for (name, s) in &self.splits {
            match self.format {
                DatasetFormat::Vggsound | DatasetFormat::Hmdb51 => {
                    match s.subset.as_deref() {
                        Some("train") | Some("test") => {}
                        other => issues.push(bad(format!(
                            "splits.{name}.subset must be \"train\" or \"test\" for {:?}, got {other:?}",
                            self.format
                        ))),
                    }
                }
                _ if s.subset.is_some() => {
                    issues.push(bad(format!("splits.{name}.subset is only used by vggsound and hmdb51")))
                }
                _ => {}
            }
            match (self.format, s.fold) {
                (DatasetFormat::Hmdb51, Some(1..=3)) => {}
                (DatasetFormat::Hmdb51, f) => issues.push(bad(format!(
                    "splits.{name}.fold must be 1, 2 or 3 for hmdb51, got {f:?}"
                ))),
                (_, Some(_)) => {
                    issues.push(bad(format!("splits.{name}.fold is only used by hmdb51")))
                }
                _ => {}
            }
        }
        if self.format == DatasetFormat::Ucf101 && self.files.class_index.is_none() {
            issues.push(bad("ucf101 needs files.class_index (classInd.txt)".into()));
        }
        issues
    }

    /// Absolute annotation path of `rel` under `root`.
    pub fn annotation_path(&self, root: &Path, rel: &Path) -> PathBuf {
        root.join(&self.roots.annotations).join(rel)
    }
}

fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("unclosed '{'")?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("unmatched '}'".into());
    }
    Ok(())
}

/// Values substituted into a media template for one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateVars {
    /// `{video_id}`.
    pub video_id: String,
    /// `{participant}`.
    pub participant: String,
    /// `{uid}`.
    pub uid: String,
    /// `{segment}`.
    pub segment: String,
    /// `{path}`.
    pub path: String,
}

impl TemplateVars {
    /// Fills a (checked) template.
    pub fn render(&self, template: &str) -> String {
        let stem = match self.path.rsplit_once('.') {
            Some((s, ext)) if !ext.contains('/') => s,
            _ => &self.path,
        };
        template
            .replace("{video_id}", &self.video_id)
            .replace("{participant}", &self.participant)
            .replace("{uid}", &self.uid)
            .replace("{segment}", &self.segment)
            .replace("{path}", &self.path)
            .replace("{stem}", stem)
    }

    fn of_segment(s: &ActionSegment) -> Self {
        Self {
            video_id: s.video_id.clone(),
            participant: s.participant.clone().unwrap_or_default(),
            uid: s.uid.clone(),
            segment: s.stem(),
            path: String::new(),
        }
    }

    fn of_clip(c: &ClipLabel) -> Self {
        let stem = c.path.rsplit_once('.').map_or(c.path.as_str(), |(s, _)| s);
        let file = stem.rsplit('/').next().unwrap_or(stem);
        Self {
            video_id: file.to_string(),
            participant: String::new(),
            uid: c.path.clone(),
            segment: String::new(),
            path: c.path.clone(),
        }
    }

    fn of_oscc(e: &OsccEntry) -> Self {
        Self {
            video_id: e.video_uid.clone(),
            participant: String::new(),
            uid: e.unique_id.clone(),
            segment: String::new(),
            path: String::new(),
        }
    }
}

/// The parsed samples of one split.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitData {
    /// Temporally located actions (EPIC-100, synthetic, Ego4D LTA).
    Segments(Vec<ActionSegment>),
    /// Labelled clips (UCF-101, HMDB-51, VGGSound).
    Clips(Vec<ClipLabel>),
    /// Ego4D state-change windows.
    StateChanges(Vec<OsccEntry>),
}

impl SplitData {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            SplitData::Segments(v) => v.len(),
            SplitData::Clips(v) => v.len(),
            SplitData::StateChanges(v) => v.len(),
        }
    }

    /// True when the split has no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The action segments, if this is a segment split.
    pub fn segments(&self) -> Option<&[ActionSegment]> {
        match self {
            SplitData::Segments(v) => Some(v),
            _ => None,
        }
    }

    /// The labelled clips, if this is a classification split.
    pub fn clips(&self) -> Option<&[ClipLabel]> {
        match self {
            SplitData::Clips(v) => Some(v),
            _ => None,
        }
    }

    /// Template values of every sample, in split order.
    pub fn template_vars(&self) -> Vec<TemplateVars> {
        match self {
            SplitData::Segments(v) => v.iter().map(TemplateVars::of_segment).collect(),
            SplitData::Clips(v) => v.iter().map(TemplateVars::of_clip).collect(),
            SplitData::StateChanges(v) => v.iter().map(TemplateVars::of_oscc).collect(),
        }
    }
}

/// Class names, as far as the dataset's files define them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassNames {
    /// Verb names (EPIC class file / Ego4D taxonomy).
    pub verbs: Vec<String>,
    /// Noun names.
    pub nouns: Vec<String>,
    /// Single-label class names (UCF classInd, HMDB directory, VGGSound sorted labels).
    pub labels: Vec<String>,
    /// Rest ("unseen") class ids, when `files.rest_classes` is set.
    pub rest: Vec<usize>,
}

/// A manifest with all its annotation files parsed.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The manifest.
    pub manifest: Manifest,
    /// The data root the manifest's relative paths were resolved against.
    pub root: PathBuf,
    /// Parsed splits by name.
    pub splits: BTreeMap<String, SplitData>,
    /// Class names.
    pub classes: ClassNames,
}

impl Dataset {
    /// Parses every file the manifest names, checking class ids against the class lists /
    /// taxonomy / counts and segment ends against the video info. All problems of all files are
    /// returned together; a split without samples is an error.
    pub fn load(manifest: &Manifest, root: impl AsRef<Path>) -> Result<Self, DataError> {
        let mut issues = Vec::new();
        let ds = Self::load_collecting(manifest, root.as_ref(), &mut issues);
        finish(ds, issues)
    }

    /// [`Dataset::load`] that appends its problems to `issues` and returns whatever parsed, so
    /// that [`validate`] can go on to check the media of the valid rows.
    fn load_collecting(manifest: &Manifest, root: &Path, issues: &mut Vec<Issue>) -> Self {
        let m = manifest;
        let ann = |rel: &Path| m.annotation_path(root, rel);
        let mut classes = ClassNames::default();
        let manifest_file = root.join(format!("<manifest {}>", m.name));
        let count_issue = |what: &str, stated: usize, found: usize, file: &Path| {
            Issue::file(
                file,
                IssueKind::Manifest,
                format!(
                    "manifest {} says {stated} {what} classes but this file defines {found}",
                    m.name
                ),
            )
        };

        // Class lists first: they bound the ids checked in the splits.
        let mut n_verbs = m.classes.verbs;
        let mut n_nouns = m.classes.nouns;
        for (file, names, stated, what) in [
            (
                &m.files.verb_classes,
                &mut classes.verbs,
                m.classes.verbs,
                "verb",
            ),
            (
                &m.files.noun_classes,
                &mut classes.nouns,
                m.classes.nouns,
                "noun",
            ),
        ] {
            if let Some(rel) = file {
                let p = ann(rel);
                match read_text(&p) {
                    Ok(t) => {
                        let before = issues.len();
                        let list = parse_classes_text(&p, &t, issues);
                        if issues.len() == before {
                            if let Some(n) = stated.filter(|&n| n != list.len()) {
                                issues.push(count_issue(what, n, list.len(), &p));
                            }
                            *names = list.into_iter().map(|c| c.key).collect();
                        }
                    }
                    Err(i) => issues.push(i),
                }
            }
        }
        if !classes.verbs.is_empty() {
            n_verbs = Some(classes.verbs.len());
        }
        if !classes.nouns.is_empty() {
            n_nouns = Some(classes.nouns.len());
        }
        if let Some(rel) = &m.files.taxonomy {
            let p = ann(rel);
            match read_text(&p) {
                Ok(t) => match serde_json::from_str::<Taxonomy>(&t) {
                    Ok(tax) => {
                        for (what, stated, n) in [
                            ("verb", m.classes.verbs, tax.verbs.len()),
                            ("noun", m.classes.nouns, tax.nouns.len()),
                        ] {
                            if n == 0 {
                                issues.push(Issue::file(
                                    &p,
                                    IssueKind::EmptySplit,
                                    format!("taxonomy has no {what}s"),
                                ));
                            }
                            if let Some(s) = stated.filter(|&s| s != n) {
                                issues.push(count_issue(what, s, n, &p));
                            }
                        }
                        n_verbs = Some(tax.verbs.len());
                        n_nouns = Some(tax.nouns.len());
                        classes.verbs = tax.verbs;
                        classes.nouns = tax.nouns;
                    }
                    Err(e) => {
                        let (l, c) = (e.line() as u64, e.column() as u64);
                        issues.push(Issue::at(
                            &p,
                            l.max(1),
                            Some(c.max(1)),
                            IssueKind::Syntax,
                            e.to_string(),
                        ));
                    }
                },
                Err(i) => issues.push(i),
            }
        }
        let durations: Option<HashMap<String, f64>> = m.files.video_info.as_ref().and_then(|rel| {
            let p = ann(rel);
            match read_text(&p) {
                Ok(t) => {
                    let before = issues.len();
                    let infos = parse_video_info_text(&p, &t, issues);
                    (issues.len() == before).then(|| {
                        infos
                            .into_iter()
                            .map(|v| (v.video_id, v.duration_s))
                            .collect()
                    })
                }
                Err(i) => {
                    issues.push(i);
                    None
                }
            }
        });
        if let Some(rel) = &m.files.class_index {
            let p = ann(rel);
            match read_text(&p) {
                Ok(t) => classes.labels = parse_class_ind_text(&p, &t, issues),
                Err(i) => issues.push(i),
            }
        }

        let mut splits = BTreeMap::new();
        for (name, spec) in &m.splits {
            let p = ann(&spec.file);
            let before = issues.len();
            let data = match m.format {
                DatasetFormat::Hmdb51 => {
                    let fold = spec.fold.unwrap_or(1);
                    let h = parse_hmdb_dir(&p, fold, issues);
                    if classes.labels.is_empty() {
                        classes.labels = h.classes.clone();
                    } else if classes.labels != h.classes {
                        issues.push(Issue::file(&p, IssueKind::Manifest, format!("fold {fold} has a different class set than the other splits")));
                    }
                    let subset = if spec.subset.as_deref() == Some("test") { HmdbSubset::Test } else { HmdbSubset::Train };
                    Some(SplitData::Clips(h.subset(subset).to_vec()))
                }
                DatasetFormat::EpicKitchens100 | DatasetFormat::Synthetic => read_or_issue(&p, issues).map(|text| {
                    let checks = EpicChecks { n_verbs, n_nouns, durations: durations.clone(), duration_tolerance_s: 0.05 };
                    let rows = parse_epic_text(&p, &text, &checks, issues);
                    if spec.labelled {
                        if let Some(r) = rows.iter().find(|r| r.segment.verb.is_none()) {
                            issues.push(Issue::file(
                                &p,
                                IssueKind::MissingField,
                                format!("split {name} must be labelled but has no verb_class column (row {})", r.segment.uid),
                            ));
                        }
                    }
                    SplitData::Segments(rows.into_iter().map(|r| r.segment).collect())
                }),
                DatasetFormat::Ego4dLta => read_or_issue(&p, issues).map(|text| {
                    let checks = Ego4dChecks { n_verbs, n_nouns, require_labels: spec.labelled };
                    SplitData::Segments(parse_lta_text(&p, &text, &checks, issues).iter().map(|e| e.to_segment()).collect())
                }),
                DatasetFormat::Ego4dOsccPnr => read_or_issue(&p, issues)
                    .map(|text| SplitData::StateChanges(parse_oscc_text(&p, &text, spec.labelled, issues))),
                DatasetFormat::Vggsound => read_or_issue(&p, issues).map(|text| {
                    let v = parse_vggsound_text(&p, &text, issues);
                    if classes.labels.is_empty() {
                        classes.labels = v.classes.clone();
                    }
                    SplitData::Clips(v.split(spec.subset.as_deref().unwrap_or("train")))
                }),
                DatasetFormat::Ucf101 => read_or_issue(&p, issues)
                    .map(|text| SplitData::Clips(parse_ucf_list_text(&p, &text, &classes.labels, issues))),
            };
            if let Some(d) = data {
                if d.is_empty() && issues.len() == before {
                    issues.push(Issue::file(
                        &p,
                        IssueKind::EmptySplit,
                        format!("split {name} selects no sample"),
                    ));
                }
                splits.insert(name.clone(), d);
            }
        }
        if let Some(n) = m.classes.labels {
            if !classes.labels.is_empty() && classes.labels.len() != n {
                let file = m
                    .files
                    .class_index
                    .as_ref()
                    .or(m.splits.values().next().map(|s| &s.file))
                    .map_or(manifest_file.clone(), |r| ann(r));
                issues.push(count_issue("label", n, classes.labels.len(), &file));
            }
        }
        if let Some(rel) = &m.files.rest_classes {
            let naming = if m.format == DatasetFormat::Hmdb51 {
                RestNaming::Hmdb
            } else {
                RestNaming::Ucf
            };
            match parse_rest_classes(ann(rel), naming, &classes.labels) {
                Ok(r) => classes.rest = r,
                Err(DataError::Invalid(more)) => issues.extend(more.0),
                Err(e) => issues.push(Issue::file(ann(rel), IssueKind::Unreadable, e.to_string())),
            }
        }
        Dataset {
            manifest: m.clone(),
            root: root.to_path_buf(),
            splits,
            classes,
        }
    }

    /// Distinct media paths referenced by a split (rendered from `media.template`, or from
    /// `media.sources` when `sources` is true), sorted.
    pub fn media_paths(&self, split: &str, sources: bool) -> Vec<PathBuf> {
        let media = &self.manifest.media;
        let template = if sources {
            media.sources.as_deref()
        } else {
            Some(media.template.as_str())
        };
        let Some(template) = template else {
            return Vec::new();
        };
        let base = self.root.join(&self.manifest.roots.media);
        let Some(data) = self.splits.get(split) else {
            return Vec::new();
        };
        let set: BTreeSet<PathBuf> = data
            .template_vars()
            .iter()
            .map(|v| base.join(v.render(template)))
            .collect();
        set.into_iter().collect()
    }

    /// Media path of every sample of a split, in split order (one entry per sample, so
    /// several samples may share a path); empty for an unknown split.
    pub fn sample_paths(&self, split: &str) -> Vec<PathBuf> {
        let base = self.root.join(&self.manifest.roots.media);
        self.splits.get(split).map_or_else(Vec::new, |data| {
            data.template_vars()
                .iter()
                .map(|v| base.join(v.render(&self.manifest.media.template)))
                .collect()
        })
    }

    /// Whether each action segment has its own pre-cut file (the template uses `{segment}`),
    /// so that segment times are relative to that file rather than to the long video.
    pub fn media_is_per_segment(&self) -> bool {
        self.manifest.media.template.contains("{segment}")
    }

    /// Distinct WAV paths of a frame-folder layout (`media.audio`), sorted.
    pub fn audio_paths(&self, split: &str) -> Vec<PathBuf> {
        let Some(t) = self.manifest.media.audio.as_deref() else {
            return Vec::new();
        };
        let base = self.root.join(&self.manifest.roots.media);
        let Some(data) = self.splits.get(split) else {
            return Vec::new();
        };
        let set: BTreeSet<PathBuf> = data
            .template_vars()
            .iter()
            .map(|v| base.join(v.render(t)))
            .collect();
        set.into_iter().collect()
    }
}

fn read_or_issue(p: &Path, issues: &mut Vec<Issue>) -> Option<String> {
    match read_text(p) {
        Ok(t) => Some(t),
        Err(i) => {
            issues.push(i);
            None
        }
    }
}

/// Which media [`validate`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaCheck {
    /// Only the annotation files.
    None,
    /// The prepared media the samples read (`media.template`, plus `media.audio`).
    #[default]
    Prepared,
    /// The long source videos (`media.sources`), before `replai-prep segments`.
    Sources,
}

/// What [`validate`] found on a healthy copy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Dataset name.
    pub name: String,
    /// Samples per split.
    pub samples: BTreeMap<String, usize>,
    /// Distinct media files / folders checked.
    pub media_checked: usize,
    /// Class counts found (verbs, nouns, labels).
    pub classes: (usize, usize, usize),
}

/// Checks a user's copy of a dataset against a manifest before a long run: parses every
/// annotation file and checks that every media path the splits reference exists and is readable
/// (a non-empty file, or a frame folder with at least one image). Every problem is collected;
/// the error lists them all.
pub fn validate(
    manifest: &Manifest,
    root: impl AsRef<Path>,
    check: MediaCheck,
) -> Result<ValidationReport, DataError> {
    let root = root.as_ref();
    let mut issues = Vec::new();
    if !root.is_dir() {
        return Err(DataError::Invalid(Issues(vec![Issue::file(
            root,
            IssueKind::MissingFile,
            "data root is not a directory",
        )])));
    }
    let ds = Dataset::load_collecting(manifest, root, &mut issues);
    let layout = manifest.media.layout;
    let mut targets: BTreeSet<(PathBuf, bool)> = BTreeSet::new();
    if check == MediaCheck::Sources && manifest.media.sources.is_none() {
        issues.push(Issue::file(
            root,
            IssueKind::Manifest,
            format!("manifest {} has no media.sources template", manifest.name),
        ));
    }
    for split in ds.splits.keys() {
        match check {
            MediaCheck::None => {}
            MediaCheck::Prepared => {
                let frames = layout == MediaLayout::Frames;
                targets.extend(
                    ds.media_paths(split, false)
                        .into_iter()
                        .map(|p| (p, frames)),
                );
                targets.extend(ds.audio_paths(split).into_iter().map(|p| (p, false)));
            }
            MediaCheck::Sources => {
                targets.extend(ds.media_paths(split, true).into_iter().map(|p| (p, false)))
            }
        }
    }
    let targets: Vec<(PathBuf, bool)> = targets.into_iter().collect();
    let mut media_issues: Vec<Issue> = targets
        .par_iter()
        .filter_map(|(p, frames)| check_media(p, *frames))
        .collect();
    media_issues.sort_by(|a, b| a.file.cmp(&b.file));
    issues.extend(media_issues);
    let report = ValidationReport {
        name: manifest.name.clone(),
        samples: ds
            .splits
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect(),
        media_checked: targets.len(),
        classes: (
            ds.classes.verbs.len(),
            ds.classes.nouns.len(),
            ds.classes.labels.len(),
        ),
    };
    finish(report, issues)
}

fn check_media(p: &Path, frames: bool) -> Option<Issue> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = if frames { "frame folder" } else { "media file" };
            return Some(Issue::file(
                p,
                IssueKind::MissingFile,
                format!("{what} does not exist"),
            ));
        }
        Err(e) => {
            return Some(Issue::file(
                p,
                IssueKind::Unreadable,
                format!("cannot stat: {e}"),
            ))
        }
    };
    if frames {
        if !meta.is_dir() {
            return Some(Issue::file(
                p,
                IssueKind::Unreadable,
                "expected a frame folder, found a file",
            ));
        }
        return check_frame_folder(p);
    }
    if !meta.is_file() {
        return Some(Issue::file(
            p,
            IssueKind::Unreadable,
            "expected a file, found a directory",
        ));
    }
    if meta.len() == 0 {
        return Some(Issue::file(p, IssueKind::Unreadable, "file is empty"));
    }
    match std::fs::File::open(p) {
        Ok(mut f) => {
            use std::io::Read;
            let mut b = [0u8; 1];
            match f.read_exact(&mut b) {
                Ok(()) => None,
                Err(e) => Some(Issue::file(
                    p,
                    IssueKind::Unreadable,
                    format!("cannot read: {e}"),
                )),
            }
        }
        Err(e) => Some(Issue::file(
            p,
            IssueKind::Unreadable,
            format!("cannot open: {e}"),
        )),
    }
}

fn has_image(dir: &Path) -> Result<bool, std::io::Error> {
    Ok(std::fs::read_dir(dir)?.flatten().any(|e| {
        let n = e.file_name().to_string_lossy().to_ascii_lowercase();
        n.ends_with(".jpg") || n.ends_with(".jpeg") || n.ends_with(".png")
    }))
}

/// A frame folder as `av_video::FrameFolderSource` opens it: a `meta.toml` (fps, optional
/// `frames` sub-folder) and at least one image in the frame directory it names (default: a
/// `frames/` sub-folder when present, else the folder itself).
fn check_frame_folder(p: &Path) -> Option<Issue> {
    let unreadable = |reason: String| Some(Issue::file(p, IssueKind::Unreadable, reason));
    let meta_path = p.join("meta.toml");
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return unreadable("frame folder has no meta.toml (it gives the frame rate)".into())
        }
        Err(e) => return unreadable(format!("cannot read meta.toml: {e}")),
    };
    let meta: toml::Table = match toml::from_str(&text) {
        Ok(m) => m,
        Err(e) => return unreadable(format!("meta.toml is not valid TOML: {e}")),
    };
    if !meta
        .get("fps")
        .is_some_and(|v| v.is_float() || v.is_integer())
    {
        return unreadable("meta.toml has no numeric fps".into());
    }
    let frame_dir = match meta.get("frames").and_then(|v| v.as_str()) {
        Some(sub) => p.join(sub),
        None if p.join("frames").is_dir() => p.join("frames"),
        None => p.to_path_buf(),
    };
    match has_image(&frame_dir) {
        Ok(true) => None,
        Ok(false) => unreadable(format!(
            "frame folder has no .jpg/.jpeg/.png image in {}",
            frame_dir.display()
        )),
        Err(e) => unreadable(format!("cannot list {}: {e}", frame_dir.display())),
    }
}
