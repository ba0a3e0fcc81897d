//! Every dataset fixture under `data-manifests/` parses with its manifest, and malformed variants
//! (built here from the fixtures) are rejected with errors that name file, line and column.

use std::path::{Path, PathBuf};

use av_data::{
    few_shot, parse_epic_classes, parse_epic_csv, parse_hmdb_splits, parse_lta, parse_oscc_pnr,
    parse_taxonomy, parse_ucf_class_ind, parse_ucf_list, parse_vggsound, validate, DataError,
    Dataset, Ego4dChecks, EpicChecks, Issue, IssueKind, Manifest, MediaCheck, SplitData,
};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-manifests")
}

/// Loads a shipped manifest; the fixtures' class lists are truncated, so stated counts are
/// dropped (the count check itself is tested in `stated_class_counts_are_enforced`).
fn manifest(rel: &str) -> Manifest {
    let mut m = Manifest::from_file(manifests_dir().join(rel)).expect("shipped manifest parses");
    m.classes = Default::default();
    m
}

fn fixture(dataset: &str) -> PathBuf {
    manifests_dir().join(dataset).join("fixture")
}

fn issues(r: Result<impl std::fmt::Debug, DataError>) -> Vec<Issue> {
    match r {
        Err(DataError::Invalid(i)) => i.0,
        other => panic!("expected DataError::Invalid, got {other:?}"),
    }
}

/// Copies a fixture tree into a temp dir so a test can break one file of it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn ends_with(p: &Path, tail: &str) -> bool {
    p.to_string_lossy().replace('\\', "/").ends_with(tail)
}

#[test]
fn epic_fixture_parses() {
    let ds = Dataset::load(
        &manifest("epic-kitchens-100/manifest.toml"),
        fixture("epic-kitchens-100"),
    )
    .expect("fixture is valid");
    assert_eq!(ds.splits["train"].len(), 6);
    assert_eq!(ds.splits["validation"].len(), 4);
    assert_eq!(ds.classes.verbs.len(), 6);
    assert_eq!(ds.classes.nouns[8], "box:lunch");
    let val = ds.splits["validation"].segments().expect("segments");
    assert_eq!(val[0].uid, "P01_11_0");
    assert_eq!(val[0].file_name(), "P01_11_00000000_00000189.MP4");
    assert_eq!((val[0].verb, val[0].noun), (Some(0), Some(2)));
    assert!((val[2].start_s - 2.83).abs() < 1e-12 && (val[2].stop_s - 7.04).abs() < 1e-12);
    let paths = ds.media_paths("validation", false);
    assert_eq!(paths.len(), 4);
    assert!(ends_with(
        &paths[0],
        "action_segments/P01_11_00000000_00000189.MP4"
    ));
    let sources = ds.media_paths("train", true);
    assert_eq!(sources.len(), 2, "one source per video: {sources:?}");
    assert!(ends_with(&sources[0], "P01/videos/P01_01.MP4"));

    // The row-level API gives the EPIC-only columns too.
    let rows = parse_epic_csv(
        fixture("epic-kitchens-100").join("annotations/EPIC_100_train.csv"),
        &EpicChecks::default(),
    )
    .expect("valid");
    assert_eq!(rows[3].all_nouns, vec!["plate", "cupboard"]);
    assert_eq!(rows[3].all_noun_classes, vec![2, 3]);
    assert_eq!(rows[4].narration_timestamp, None);
    assert_eq!(rows[4].noun_key.as_deref(), Some("box:lunch"));
    let classes = parse_epic_classes(
        fixture("epic-kitchens-100").join("annotations/EPIC_100_verb_classes.csv"),
    )
    .expect("valid");
    assert_eq!(classes[5].key, "turn-on");
    assert_eq!(classes[0].instances[2], "pick");
}

#[test]
fn stated_class_counts_are_enforced() {
    let m = Manifest::from_file(manifests_dir().join("epic-kitchens-100/manifest.toml"))
        .expect("parses");
    let found = issues(Dataset::load(&m, fixture("epic-kitchens-100")));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|i| i.kind == IssueKind::Manifest));
    assert!(ends_with(&found[0].file, "EPIC_100_verb_classes.csv"));
    assert!(
        found[0].reason.contains("97") && found[0].reason.contains('6'),
        "{}",
        found[0].reason
    );
}

#[test]
fn synthetic_fixture_parses_with_the_epic_parser() {
    let ds = Dataset::load(&manifest("synthetic/manifest.toml"), fixture("synthetic"))
        .expect("fixture is valid");
    assert_eq!(ds.splits["train"].len(), 4);
    assert_eq!(ds.splits["validation"].len(), 2);
    assert_eq!(ds.classes.verbs, vec!["hit", "drop", "scrape"]);
    let frames = ds.media_paths("train", false);
    assert!(ends_with(&frames[0], "videos/S00_000"));
    assert!(ends_with(
        &ds.audio_paths("train")[1],
        "videos/S01_001/audio.wav"
    ));
    // One media path per sample, in split order, for the probe.
    let per_sample = ds.sample_paths("train");
    assert_eq!(per_sample.len(), 4);
    assert!(ends_with(&per_sample[0], "videos/S00_000"));
    assert!(!ds.media_is_per_segment());
}

#[test]
fn ego4d_fixtures_parse() {
    let lta = Dataset::load(&manifest("ego4d/lta.toml"), fixture("ego4d")).expect("lta fixture");
    assert_eq!((lta.classes.verbs.len(), lta.classes.nouns.len()), (7, 7));
    let train = lta.splits["train"].segments().expect("segments");
    assert_eq!(train.len(), 3);
    assert_eq!(train[1].uid, "c1d2b3a4-5e6f-4a7b-8c9d-0e1f2a3b4c5d_1");
    assert_eq!((train[1].verb, train[1].noun), (Some(4), Some(5)));
    assert!((train[1].start_s - 3.5012).abs() < 1e-12);
    assert!(ends_with(
        &lta.media_paths("val", false)[0],
        "v2/clips/a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d.mp4"
    ));

    let oscc =
        Dataset::load(&manifest("ego4d/oscc-pnr.toml"), fixture("ego4d")).expect("oscc fixture");
    match &oscc.splits["train"] {
        SplitData::StateChanges(v) => {
            assert_eq!(v.len(), 2);
            assert_eq!(v[0].pnr(), Some(10371));
            assert_eq!(v[0].state_label(), Some(1));
            assert_eq!(v[1].state_label(), Some(0));
            assert_eq!(v[1].clip_uid, None);
        }
        other => panic!("expected state changes, got {other:?}"),
    }
    let ann = fixture("ego4d").join("v2/annotations");
    let tax = parse_taxonomy(ann.join("fho_lta_taxonomy.json")).expect("taxonomy");
    assert_eq!(tax.verbs[5], "take_(pick,_grab,_get)");
    let checks = Ego4dChecks {
        n_verbs: Some(7),
        n_nouns: Some(7),
        require_labels: true,
    };
    assert_eq!(
        parse_lta(ann.join("fho_lta_val.json"), &checks)
            .expect("val")
            .len(),
        1
    );
    assert_eq!(
        parse_oscc_pnr(ann.join("fho_oscc-pnr_val.json"), true)
            .expect("val")
            .len(),
        1
    );
}

#[test]
fn ego4d_accepts_a_bare_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(fixture("ego4d").join("v2/annotations/fho_lta_train.json"))
        .expect("read");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let bare = serde_json::to_string_pretty(&v["clips"]).expect("json");
    let p = dir.path().join("train.json");
    std::fs::write(&p, bare).expect("write");
    let entries = parse_lta(
        &p,
        &Ego4dChecks {
            require_labels: true,
            ..Default::default()
        },
    )
    .expect("bare list");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].clip_uid, "7e8f9a0b-1c2d-4e3f-9a4b-5c6d7e8f9a0b");
}

#[test]
fn classification_fixtures_parse() {
    let vgg =
        Dataset::load(&manifest("vggsound/manifest.toml"), fixture("vggsound")).expect("vggsound");
    assert_eq!(vgg.classes.labels.len(), 4);
    assert_eq!(vgg.classes.labels[0], "bird chirping, tweeting");
    let test = vgg.splits["test"].clips().expect("clips");
    assert_eq!(test.len(), 2);
    assert_eq!(test[0].path, "---g-f_I2yQ_000001");
    assert_eq!(test[0].label, 2, "people marching is third in sorted order");
    assert!(ends_with(
        &vgg.media_paths("test", false)[0],
        "video/---g-f_I2yQ_000001.mp4"
    ));
    let v = parse_vggsound(fixture("vggsound").join("vggsound.csv")).expect("csv");
    assert_eq!(v.rows.len(), 6);

    let ucf = Dataset::load(&manifest("ucf101/manifest.toml"), fixture("ucf101")).expect("ucf");
    assert_eq!(ucf.classes.labels[2], "Archery");
    let train = ucf.splits["train"].clips().expect("clips");
    assert_eq!(train.len(), 6);
    assert_eq!(train[2].label, 1);
    let test = ucf.splits["test"].clips().expect("clips");
    assert_eq!(
        test.iter().map(|c| c.label).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(ends_with(
        &ucf.media_paths("test", false)[0],
        "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    ));

    let hmdb = Dataset::load(&manifest("hmdb51/manifest.toml"), fixture("hmdb51")).expect("hmdb");
    assert_eq!(
        hmdb.classes.labels,
        vec!["brush_hair", "cartwheel", "catch"]
    );
    assert_eq!(hmdb.splits["train"].len(), 4);
    assert_eq!(hmdb.splits["test"].len(), 4);
    let h2 =
        parse_hmdb_splits(fixture("hmdb51").join("testTrainMulti_7030_splits"), 2).expect("fold 2");
    assert_eq!((h2.classes.len(), h2.train.len(), h2.test.len()), (1, 1, 1));
    assert_eq!(
        h2.test[0].path,
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"
    );

    // Few-shot on a real split: at least one per class survives.
    let few = few_shot(
        hmdb.splits["train"].clips().expect("clips"),
        |c| c.label,
        0.1,
        42,
    )
    .expect("ratio");
    assert_eq!(few.len(), 3);
}

#[test]
fn ucf_directory_names_match_case_insensitively() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ind = dir.path().join("classInd.txt");
    std::fs::write(&ind, "1 HandstandPushups\n2 YoYo\n").expect("write");
    let classes = parse_ucf_class_ind(&ind).expect("classInd");
    let list = dir.path().join("testlist01.txt");
    std::fs::write(
        &list,
        "HandStandPushups/v_HandStandPushups_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n",
    )
    .expect("write");
    let clips = parse_ucf_list(&list, &classes).expect("list");
    assert_eq!(
        clips.iter().map(|c| c.label).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

// ---- malformed variants -------------------------------------------------------------------

/// Writes the EPIC fixture to a temp root with `EPIC_100_validation.csv` replaced by `body`
/// (the fixture header is kept unless `body` starts with its own).
fn epic_with_validation(body: &str) -> (tempfile::TempDir, Vec<Issue>) {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("epic-kitchens-100"), dir.path());
    let p = dir.path().join("annotations/EPIC_100_validation.csv");
    std::fs::write(&p, body).expect("write");
    let found = issues(Dataset::load(
        &manifest("epic-kitchens-100/manifest.toml"),
        dir.path(),
    ));
    (dir, found)
}

const EPIC_HEADER: &str = "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n";

#[test]
fn epic_reports_every_bad_row_with_line_and_column() {
    let body = format!(
        "{EPIC_HEADER}\
P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]\n\
P01_11_1,P01,P01_11,00:00:01.600,00:00:1.72,00:00:03.21,103,192,open tap,open,3,tap,0,['tap'],[0]\n\
P01_11_2,P01,P01_11,00:00:03.110,00:00:02.83,00:00:07.04,169,422,wash plate,wash,2,plate\n\
P01_11_3,P01,P01_11,00:00:07.240,00:00:07.10,00:00:08.66,426,519,put plate,put,42,plate,2,['plate'],[2]\n\
P01_11_4,P01,P01_11,00:00:07.240,00:02:07.10,00:02:08.66,426,519,put plate,put,1,plate,2,['plate'],[2]\n\
P01_11_5,P01,P01_11,00:00:07.240,00:00:09.00,00:00:08.00,540,480,put plate,put,1,plate,2,['plate'],[2]\n"
    );
    let (_dir, found) = epic_with_validation(&body);
    let at = |line: u64| {
        found
            .iter()
            .filter(move |i| i.line == Some(line))
            .collect::<Vec<_>>()
    };
    assert!(at(2).is_empty(), "valid row flagged: {:?}", at(2));

    let ts = at(3);
    assert_eq!(ts.len(), 1, "{found:?}");
    assert_eq!((ts[0].column, ts[0].kind), (Some(5), IssueKind::Field));
    assert_eq!(ts[0].field.as_deref(), Some("start_timestamp"));
    assert!(ends_with(
        &ts[0].file,
        "annotations/EPIC_100_validation.csv"
    ));
    assert!(
        ts[0].to_string().contains("EPIC_100_validation.csv:3:5"),
        "{}",
        ts[0]
    );

    let cols = at(4);
    assert_eq!(
        (cols[0].column, cols[0].kind),
        (Some(13), IssueKind::Columns)
    );
    assert!(
        cols[0].reason.contains("expected 15 fields, found 12"),
        "{}",
        cols[0].reason
    );

    let class = at(5);
    assert_eq!(
        (class[0].column, class[0].kind),
        (Some(11), IssueKind::UnknownClass)
    );
    assert!(class[0].reason.contains("42"));

    let past = at(6);
    assert_eq!(
        (past[0].column, past[0].kind),
        (Some(6), IssueKind::Interval)
    );
    assert!(
        past[0].reason.contains("past the end of video P01_11"),
        "{}",
        past[0].reason
    );

    let inverted = at(7);
    assert_eq!(
        inverted.len(),
        2,
        "stop before start in both times and frames: {inverted:?}"
    );
    assert!(inverted.iter().all(|i| i.kind == IssueKind::Interval));
    assert_eq!(found.len(), 6, "{found:#?}");
}

#[test]
fn epic_bad_header_and_empty_split() {
    let (_d, found) = epic_with_validation("narration_id,participant_id,video\n");
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].line, found[0].column, found[0].kind),
        (Some(1), Some(3), IssueKind::Columns)
    );

    let (_d, found) = epic_with_validation(EPIC_HEADER);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, IssueKind::EmptySplit);
    assert!(ends_with(&found[0].file, "EPIC_100_validation.csv"));

    let (_d, found) = epic_with_validation("");
    assert_eq!(found[0].kind, IssueKind::EmptySplit);
}

#[test]
fn missing_files_are_all_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("epic-kitchens-100"), dir.path());
    for f in [
        "EPIC_100_train.csv",
        "EPIC_100_validation.csv",
        "EPIC_100_noun_classes.csv",
    ] {
        std::fs::remove_file(dir.path().join("annotations").join(f)).expect("rm");
    }
    let found = issues(Dataset::load(
        &manifest("epic-kitchens-100/manifest.toml"),
        dir.path(),
    ));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found
        .iter()
        .all(|i| i.kind == IssueKind::MissingFile && i.line.is_none()));
    assert!(found
        .iter()
        .any(|i| ends_with(&i.file, "EPIC_100_noun_classes.csv")));
}

#[test]
fn validate_lists_all_missing_media() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("epic-kitchens-100"), dir.path());
    let m = manifest("epic-kitchens-100/manifest.toml");
    let ds = Dataset::load(&m, dir.path()).expect("valid");
    let all: Vec<PathBuf> = ds
        .media_paths("train", false)
        .into_iter()
        .chain(ds.media_paths("validation", false))
        .collect();
    assert_eq!(all.len(), 10);
    // Create every segment but two; make one of the created ones empty.
    for (k, p) in all.iter().enumerate() {
        if k == 1 || k == 7 {
            continue;
        }
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            p,
            if k == 4 {
                &b""[..]
            } else {
                &b"\x00\x00\x00\x18ftypmp42"[..]
            },
        )
        .expect("write");
    }
    let found = issues(validate(&m, dir.path(), MediaCheck::Prepared));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        found
            .iter()
            .filter(|i| i.kind == IssueKind::MissingFile)
            .count(),
        2
    );
    let empty: Vec<_> = found
        .iter()
        .filter(|i| i.kind == IssueKind::Unreadable)
        .collect();
    assert_eq!(empty[0].file, all[4]);

    // Sources are checked separately (none exist here).
    let src = issues(validate(&m, dir.path(), MediaCheck::Sources));
    assert_eq!(src.len(), 3, "three distinct source videos: {src:?}");

    // With everything present the report counts samples and media.
    for k in [1usize, 4, 7] {
        std::fs::create_dir_all(all[k].parent().expect("parent")).expect("mkdir");
        std::fs::write(&all[k], b"x").expect("write");
    }
    let report = validate(&m, dir.path(), MediaCheck::Prepared).expect("complete copy");
    assert_eq!(report.media_checked, 10);
    assert_eq!(report.samples["validation"], 4);
}

#[test]
fn validate_frame_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixture("synthetic"), dir.path());
    let m = manifest("synthetic/manifest.toml");
    for v in ["S00_000", "S01_001", "S02_002"] {
        let f = dir.path().join("videos").join(v);
        std::fs::create_dir_all(&f).expect("mkdir");
        std::fs::write(f.join("meta.toml"), "fps = 16.0\naudio = \"audio.wav\"\n").expect("meta");
        if v != "S01_001" {
            std::fs::write(f.join("000001.jpg"), b"\xff\xd8").expect("write");
        }
        if v != "S02_002" {
            std::fs::write(f.join("audio.wav"), b"RIFF").expect("write");
        }
    }
    let found = issues(validate(&m, dir.path(), MediaCheck::Prepared));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found
        .iter()
        .any(|i| ends_with(&i.file, "videos/S01_001") && i.kind == IssueKind::Unreadable));
    assert!(found.iter().any(
        |i| ends_with(&i.file, "videos/S02_002/audio.wav") && i.kind == IssueKind::MissingFile
    ));
}

#[test]
fn ego4d_json_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::fs::read_to_string(fixture("ego4d").join("v2/annotations/fho_lta_train.json"))
        .expect("read");
    // Entry 2 loses its verb_label key; entry 3 gets an unknown noun id.
    let broken = src.replacen("\"verb_label\": 4,\n", "", 1).replacen(
        "\"noun_label\": 6",
        "\"noun_label\": 99",
        1,
    );
    let p = dir.path().join("fho_lta_train.json");
    std::fs::write(&p, &broken).expect("write");
    let starts: Vec<u64> = broken
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "    {")
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(starts.len(), 3);
    let checks = Ego4dChecks {
        n_verbs: Some(7),
        n_nouns: Some(7),
        require_labels: true,
    };
    let found = issues(parse_lta(&p, &checks));
    assert_eq!(found.len(), 2, "{found:#?}");
    // Checks on parsed entries point at the entry's opening brace.
    let missing = &found[0];
    assert_eq!(
        (missing.kind, missing.field.as_deref()),
        (IssueKind::MissingField, Some("verb_label"))
    );
    assert_eq!(
        (missing.line, missing.column),
        (Some(starts[1]), Some(5)),
        "{missing}"
    );
    let unknown = &found[1];
    assert_eq!(
        (unknown.kind, unknown.field.as_deref()),
        (IssueKind::UnknownClass, Some("noun_label"))
    );
    assert_eq!((unknown.line, unknown.column), (Some(starts[2]), Some(5)));

    // A field of the wrong type inside an entry is located at the value itself.
    let typed = src.replacen("\"action_idx\": 1,", "\"action_idx\": \"one\",", 1);
    std::fs::write(&p, &typed).expect("write");
    let found = issues(parse_lta(&p, &checks));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, IssueKind::Field);
    let line = typed
        .lines()
        .position(|l| l.contains("\"one\""))
        .expect("present") as u64
        + 1;
    assert_eq!(found[0].line, Some(line), "{}", found[0]);
    assert!(found[0].column.is_some_and(|c| c > 20), "{}", found[0]);

    // A required key missing from every entry of a state-change file is reported per entry.
    let oscc =
        std::fs::read_to_string(fixture("ego4d").join("v2/annotations/fho_oscc-pnr_train.json"))
            .expect("read");
    let no_uid = oscc.replace("\"video_uid\"", "\"video_id\"");
    let q = dir.path().join("fho_oscc-pnr_train.json");
    std::fs::write(&q, &no_uid).expect("write");
    let found = issues(parse_oscc_pnr(&q, true));
    assert_eq!(found.len(), 2);
    assert!(found
        .iter()
        .all(|i| i.field.as_deref() == Some("video_uid") && i.kind == IssueKind::MissingField));

    // Syntax errors and empty clip lists.
    std::fs::write(&q, "{\"clips\": [ {\"unique_id\": }").expect("write");
    let found = issues(parse_oscc_pnr(&q, true));
    assert_eq!((found[0].kind, found[0].line), (IssueKind::Syntax, Some(1)));
    std::fs::write(&q, "{\"version\": \"1\", \"clips\": []}").expect("write");
    assert_eq!(
        issues(parse_oscc_pnr(&q, true))[0].kind,
        IssueKind::EmptySplit
    );
}

#[test]
fn list_formats_report_located_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ind = dir.path().join("classInd.txt");
    std::fs::write(&ind, "1 ApplyEyeMakeup\n2 ApplyLipstick\n").expect("write");
    let classes = parse_ucf_class_ind(&ind).expect("classInd");
    let list = dir.path().join("trainlist01.txt");
    std::fs::write(
        &list,
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 3\nApplyLipstick/v_ApplyLipstick_g08_c01.avi 7\nApplyLipstick/v_ApplyLipstick_g08_c02.avi 1\nno_directory.avi 1\n",
    )
    .expect("write");
    let found = issues(parse_ucf_list(&list, &classes));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_eq!(
        (found[0].line, found[0].kind),
        (Some(2), IssueKind::UnknownClass)
    );
    assert_eq!(
        (found[1].line, found[1].column, found[1].kind),
        (Some(3), Some(43), IssueKind::UnknownClass)
    );
    assert_eq!((found[2].line, found[2].kind), (Some(4), IssueKind::Field));
    assert_eq!(found[3].line, Some(5));

    let csv = dir.path().join("vggsound.csv");
    std::fs::write(&csv, "---g-f_I2yQ,1,people marching,test\nshort,x,dog barking,val\n--0PQM4-hqg,30,waterfall burbling\n").expect("write");
    let found = issues(parse_vggsound(&csv));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (Some(2), Some(1)));
    assert_eq!((found[1].line, found[1].column), (Some(2), Some(2)));
    assert_eq!(
        (found[2].line, found[2].column, found[2].field.as_deref()),
        (Some(2), Some(4), Some("split"))
    );
    assert_eq!(
        (found[3].line, found[3].column, found[3].kind),
        (Some(3), Some(4), IssueKind::Columns)
    );

    let hmdb = dir.path().join("splits");
    std::fs::create_dir_all(&hmdb).expect("mkdir");
    std::fs::write(
        hmdb.join("wave_test_split1.txt"),
        "a_wave_0.avi 1 \nb_wave_0.avi 3 \nc_wave_0.avi\n",
    )
    .expect("write");
    let found = issues(parse_hmdb_splits(&hmdb, 1));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (Some(2), Some(14)));
    assert_eq!(
        (found[1].line, found[1].kind),
        (Some(3), IssueKind::Columns)
    );
    let empty = issues(parse_hmdb_splits(&hmdb, 2));
    assert_eq!(empty[0].kind, IssueKind::EmptySplit);

    let epic_classes = dir.path().join("EPIC_100_verb_classes.csv");
    std::fs::write(
        &epic_classes,
        "id,key,instances,category\n0,take,\"['take']\",retrieve\n2,put,\"['put'\",leave\n",
    )
    .expect("write");
    let found = issues(parse_epic_classes(&epic_classes));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (Some(3), Some(3)));
    assert_eq!((found[1].line, found[1].column), (Some(3), Some(1)));
}

#[test]
fn manifest_errors_are_located() {
    let text = "name = \"x\"\nformat = \"ucf101\"\n\n[splits.train]\nfile = \"a.txt\"\nfolds = 2\n";
    let err = issues(Manifest::from_toml("m.toml", text));
    assert_eq!(err.len(), 1);
    assert_eq!(
        (err[0].line, err[0].column, err[0].kind),
        (Some(6), Some(1), IssueKind::Manifest)
    );
    assert!(err[0].reason.contains("folds"), "{}", err[0].reason);

    let text = "name = \"x\"\nformat = \"vggsound\"\n[splits.train]\nfile = \"v.csv\"\n[media]\ntemplate = \"{clip}.mp4\"\n";
    let err = issues(Manifest::from_toml("m.toml", text));
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err.iter().any(|i| i.reason.contains("subset")));
    assert!(err.iter().any(|i| i.reason.contains("{clip}")));
}
