//! Datasets: manifest parsers with located, collected errors for EPIC-KITCHENS-100, Ego4D FHO,
//! VGGSound, UCF-101, HMDB-51 and the synthetic world (EPIC-100 schema); dataset manifests and
//! their validation against a user's copy; few-shot / unseen-class split selection; the
//! reference's segment naming; and a small batching helper.
//!
//! Every parser reads the whole file and reports *all* malformed rows, unknown class ids,
//! out-of-range times and missing files together as [`DataError::Invalid`], each [`Issue`]
//! naming the file, 1-based line and column.
//!
//! ```
//! use av_data::{parse_epic_csv, EpicChecks, IssueKind};
//! let dir = tempfile::tempdir().unwrap();
//! let csv = dir.path().join("EPIC_100_validation.csv");
//! std::fs::write(&csv, "narration_id,participant_id,video_id,narration_timestamp,\
//! start_timestamp,stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,\
//! noun_class,all_nouns,all_noun_classes\n\
//! P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]\n\
//! P01_11_1,P01,P01_11,00:00:02.000,00:00:02.5,00:00:03.10,150,186,put plate,put,1,plate,2,['plate'],[2]\n")
//!     .unwrap();
//! let checks = EpicChecks { n_verbs: Some(97), n_nouns: Some(300), ..Default::default() };
//! let rows = parse_epic_csv(&csv, &checks).unwrap();
//! assert_eq!(rows[0].segment.file_name(), "P01_11_00000000_00000189.MP4");
//!
//! let bad = EpicChecks { n_verbs: Some(1), ..checks };
//! let err = parse_epic_csv(&csv, &bad).unwrap_err();
//! let issue = &err.issues()[0];
//! assert_eq!((issue.line, issue.column, issue.kind), (Some(3), Some(11), IssueKind::UnknownClass));
//! ```

mod collate;
mod csvutil;
mod ego4d;
mod epic;
mod error;
mod lists;
mod manifest;
mod subset;
mod types;

pub use collate::{stack_f32, stack_labels};
pub use ego4d::{
    parse_lta, parse_oscc_pnr, parse_taxonomy, Ego4dChecks, LtaEntry, OsccEntry, Taxonomy,
};
pub use epic::{
    parse_epic_classes, parse_epic_csv, parse_epic_video_info, EpicChecks, EpicClass, EpicRow,
    VideoInfo, EPIC_CLASS_COLUMNS, EPIC_COLUMNS, EPIC_TEST_COLUMNS, EPIC_VIDEO_INFO_COLUMNS,
};
pub use error::{DataError, Issue, IssueKind, Issues};
pub use lists::{
    parse_hmdb_splits, parse_ucf_class_ind, parse_ucf_list, parse_vggsound, HmdbSplit, HmdbSubset,
    VggSound, VggSoundRow, VGGSOUND_COLUMNS,
};
pub use manifest::{
    validate, AuxFiles, ClassCounts, ClassNames, Dataset, DatasetFormat, Manifest, Media,
    MediaCheck, MediaLayout, Roots, SplitData, SplitSpec, TemplateVars, ValidationReport,
};
pub use subset::{
    few_shot, parse_rest_classes, rest_class_name, seen_unseen, ClassSubset, RestNaming,
};
pub use types::{
    action_segment_name, fixed_windows, parse_segment_name, pretrain_segment_name, ActionSegment,
    ClipLabel, Timestamp,
};
