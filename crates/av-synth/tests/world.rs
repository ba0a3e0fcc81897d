//! Generator behaviour: determinism, label consistency, visual state changes, sources.

use av_synth::{Split, SynthError, World, WorldConfig, VERB_NAMES};
use av_video::VideoSource;

fn small(n_videos: usize, duration_s: f64) -> WorldConfig {
    WorldConfig {
        n_videos,
        val_videos: 1,
        min_duration_s: duration_s,
        max_duration_s: duration_s,
        width: 32,
        height: 32,
        ..WorldConfig::default()
    }
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() -> anyhow::Result<()> {
    let cfg = small(4, 5.0);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build()?;
    let a = one.install(|| World::generate(&cfg))?;
    let b = three.install(|| World::generate(&cfg))?;
    assert_eq!(a.videos().len(), 4);
    for (va, vb) in a.videos().iter().zip(b.videos()) {
        assert_eq!(va, vb, "video {} differs between 1 and 3 threads", va.id());
    }
    // Lazy rendering of a single video matches the eager one.
    let lazy = World::new(cfg.clone())?;
    assert!(lazy.videos().is_empty());
    assert_eq!(&lazy.video(2)?, &a.videos()[2]);
    // A video depends only on (seed, index), not on how many videos the world has.
    let bigger = World::new(WorldConfig {
        n_videos: 9,
        ..cfg.clone()
    })?;
    assert_eq!(bigger.video(1)?.frames, a.videos()[1].frames);
    assert_eq!(bigger.video(1)?.audio, a.videos()[1].audio);
    // A different seed gives a different world.
    let other = World::new(WorldConfig { seed: 8, ..cfg })?.video(0)?;
    assert_ne!(other.audio, a.videos()[0].audio);
    assert_ne!(other.frames, a.videos()[0].frames);
    Ok(())
}

#[test]
fn shapes_and_ranges() -> anyhow::Result<()> {
    let cfg = small(2, 6.0);
    let v = World::new(cfg.clone())?.video(0)?;
    assert_eq!(v.frames.len(), 96);
    assert_eq!(v.audio.len(), 6 * 44_100);
    assert!(v.frames.iter().all(|f| f.dim() == (32, 32, 3)));
    assert!(v.audio.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
    let peak = v.audio.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(peak > 0.1, "events should be loud, peak {peak}");
    // Not a blank image: the texture and the object give spatial variation.
    let f = &v.frames[10];
    let mean = f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / f.len() as f64;
    assert!(var.sqrt() > 10.0, "frame std {}", var.sqrt());
    Ok(())
}

#[test]
fn timelines_respect_the_configuration() -> anyhow::Result<()> {
    let cfg = WorldConfig {
        n_videos: 300,
        val_videos: 60,
        ..WorldConfig::default()
    };
    let world = World::new(cfg.clone())?;
    let mut verb_counts = [0usize; 6];
    let mut noun_counts = vec![0usize; cfg.n_nouns];
    for s in world.scripts() {
        let want_split = if s.index >= 240 {
            Split::Validation
        } else {
            Split::Train
        };
        assert_eq!(s.split, want_split);
        assert!(s.duration_s >= cfg.min_duration_s - 0.5 / cfg.fps);
        assert!(s.duration_s <= cfg.max_duration_s + 0.5 / cfg.fps);
        assert_eq!(s.n_frames as f64, (s.duration_s * cfg.fps).round());
        assert_eq!(s.states.len(), s.interactions.len() + 1);
        for (k, it) in s.interactions.iter().enumerate() {
            assert!(
                it.time_s >= cfg.edge_margin_s && it.time_s <= s.duration_s - cfg.edge_margin_s
            );
            assert!(it.start_s <= it.time_s && it.time_s <= it.stop_s);
            assert!((it.stop_s - it.time_s - cfg.segment_after_s).abs() < 0.006);
            assert!((it.time_s - it.start_s - cfg.segment_before_s).abs() < 0.006);
            if k > 0 {
                let gap = it.time_s - s.interactions[k - 1].time_s;
                assert!(gap >= cfg.min_gap_s - 1e-9, "gap {gap} in {}", s.video_id);
            }
            // The verb is possible in the state before it, and does what it says.
            let (before, after) = (&s.states[k], &s.states[k + 1]);
            match VERB_NAMES[it.verb] {
                "open" => assert!(!before.lid_open && after.lid_open && before.present),
                "close" => assert!(before.lid_open && !after.lid_open && before.present),
                "turn-on" => assert!(!before.light_on && after.light_on && before.present),
                "turn-off" => assert!(before.light_on && !after.light_on && before.present),
                "put" => assert!(!before.present && after.present),
                "take" => assert!(before.present && !after.present),
                other => panic!("unknown verb {other}"),
            }
            assert_eq!(it.noun, after.noun);
            verb_counts[it.verb] += 1;
            noun_counts[it.noun] += 1;
        }
        for d in &s.distractors {
            assert!(s
                .interactions
                .iter()
                .all(|i| (i.time_s - d.time_s).abs() >= cfg.distractor_clearance_s - 1e-3));
        }
    }
    let total: usize = verb_counts.iter().sum();
    assert!(total > 2000, "only {total} interactions");
    for (v, &c) in verb_counts.iter().enumerate() {
        let share = c as f64 / total as f64;
        assert!(
            (0.11..0.23).contains(&share),
            "verb {} share {share:.3}",
            VERB_NAMES[v]
        );
    }
    let quiet = world
        .scripts()
        .iter()
        .flat_map(|s| &s.interactions)
        .filter(|i| i.quiet)
        .count() as f64
        / total as f64;
    assert!((0.05..0.15).contains(&quiet), "quiet share {quiet}");
    for (n, &c) in noun_counts.iter().enumerate() {
        assert!(
            c as f64 > 0.6 * total as f64 / cfg.n_nouns as f64,
            "noun {n} has {c}"
        );
    }
    Ok(())
}

#[test]
fn fewer_verbs_keep_the_object_in_view() -> anyhow::Result<()> {
    let world = World::new(WorldConfig {
        n_verbs: 2,
        n_videos: 20,
        ..WorldConfig::default()
    })?;
    for s in world.scripts() {
        assert!(s.states.iter().all(|st| st.present));
        assert!(s.interactions.iter().all(|i| i.verb < 2));
        assert!(s.interactions.iter().all(|i| i.noun == s.states[0].noun));
    }
    Ok(())
}

/// Mean absolute difference of two frames inside / outside a box, and the number of pixels
/// inside the box that changed by more than 20 levels in some channel.
fn region_diff(
    a: &ndarray::Array3<u8>,
    b: &ndarray::Array3<u8>,
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
) -> (f64, f64, usize) {
    let (h, w, _) = a.dim();
    let (mut din, mut nin, mut dout, mut nout, mut changed) = (0.0, 0usize, 0.0, 0usize, 0usize);
    for y in 0..h {
        for x in 0..w {
            let inside = (x0..x1).contains(&x) && (y0..y1).contains(&y);
            let mut big = false;
            for c in 0..3 {
                let d = (a[[y, x, c]] as f64 - b[[y, x, c]] as f64).abs();
                big |= d > 20.0;
                if inside {
                    din += d;
                    nin += 1;
                } else {
                    dout += d;
                    nout += 1;
                }
            }
            changed += (inside && big) as usize;
        }
    }
    (din / nin.max(1) as f64, dout / nout.max(1) as f64, changed)
}

#[test]
fn state_changes_are_local_and_persistent() -> anyhow::Result<()> {
    // Without camera motion, flicker and sensor noise, only the object's region may change.
    let cfg = WorldConfig {
        n_videos: 3,
        val_videos: 0,
        min_duration_s: 12.0,
        max_duration_s: 12.0,
        drift_px: 0.0,
        flicker: 0.0,
        pixel_noise: 0.0,
        ..WorldConfig::default()
    };
    let world = World::generate(&cfg)?;
    let mut checked = 0;
    for v in world.videos() {
        for (k, it) in v.interactions().iter().enumerate() {
            let at = |t: f64| &v.frames[((t * cfg.fps).round() as usize).min(v.frames.len() - 1)];
            // RepLAI's before clip [t-0.6, t-0.1] and after clip [t+0.1, t+0.6] are each static.
            assert_eq!(
                at(it.time_s - 0.55),
                at(it.time_s - 0.15),
                "{} #{k}: before clip moves",
                v.id()
            );
            assert_eq!(
                at(it.time_s + 0.15),
                at(it.time_s + 0.55),
                "{} #{k}: after clip moves",
                v.id()
            );
            let s = &v.script.states[k + 1];
            let st = if s.present { s } else { &v.script.states[k] };
            let r = st.radius as f64 * 2.0 + 2.0;
            let (x0, x1) = (
                (st.cx as f64 - r).max(0.0) as usize,
                (st.cx as f64 + r).ceil() as usize,
            );
            let (y0, y1) = (
                (st.cy as f64 - r).max(0.0) as usize,
                (st.cy as f64 + r).ceil() as usize,
            );
            let (din, dout, changed) =
                region_diff(at(it.time_s - 0.3), at(it.time_s + 0.3), x0, x1, y0, y1);
            assert!(
                din > 0.5 && changed >= 8,
                "{} #{k} ({}): change too small inside ({din}, {changed} px)",
                v.id(),
                VERB_NAMES[it.verb]
            );
            assert!(
                dout == 0.0,
                "{} #{k}: pixels outside the object changed ({dout})",
                v.id()
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} interactions checked");

    // With the default nuisances the change still dominates the object's region.
    let world = World::new(WorldConfig {
        n_videos: 2,
        val_videos: 0,
        min_duration_s: 12.0,
        max_duration_s: 12.0,
        ..WorldConfig::default()
    })?;
    let v = world.video(0)?;
    let (mut across, mut within) = (0.0, 0.0);
    for (k, it) in v.interactions().iter().enumerate() {
        let at = |t: f64| &v.frames[((t * cfg.fps).round() as usize).min(v.frames.len() - 1)];
        let s = &v.script.states[k + 1];
        let st = if s.present { s } else { &v.script.states[k] };
        let r = st.radius as f64;
        let (x0, x1) = (
            (st.cx as f64 - r).max(0.0) as usize,
            (st.cx as f64 + r) as usize,
        );
        let (y0, y1) = (
            (st.cy as f64 - 1.5 * r).max(0.0) as usize,
            (st.cy as f64 + r) as usize,
        );
        across += region_diff(at(it.time_s - 0.2), at(it.time_s + 0.2), x0, x1, y0, y1).0;
        within += region_diff(at(it.time_s + 0.2), at(it.time_s + 0.6), x0, x1, y0, y1).0;
    }
    assert!(
        across > 1.5 * within,
        "change {across} vs nuisance {within}"
    );
    Ok(())
}

#[test]
fn in_memory_source_matches_the_video() -> anyhow::Result<()> {
    let world = World::new(small(1, 4.0))?;
    let v = world.video(0)?;
    let mut src = v.to_source()?;
    assert_eq!(src.meta().n_frames, v.frames.len());
    assert_eq!(src.meta().fps, 16.0);
    assert!((src.meta().duration_s - 4.0).abs() < 1e-9);
    let frames = src.read_frames(1.0, 1.5)?;
    assert!(frames.len() >= 8);
    assert_eq!(
        frames[0].image,
        v.frames[(frames[0].pts_s * 16.0).round() as usize]
    );
    let (audio, rate) = src
        .read_audio()?
        .ok_or_else(|| anyhow::anyhow!("no audio"))?;
    assert_eq!(rate, 44_100);
    assert_eq!(audio[..], v.audio[..]);
    Ok(())
}

#[test]
fn invalid_configurations_name_the_field() {
    let bad = |cfg: WorldConfig, field: &str| match World::new(cfg) {
        Err(SynthError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected an error on {field}, got {other:?}"),
    };
    bad(
        WorldConfig {
            n_videos: 0,
            ..Default::default()
        },
        "n_videos",
    );
    bad(
        WorldConfig {
            val_videos: 99,
            ..Default::default()
        },
        "val_videos",
    );
    bad(
        WorldConfig {
            n_verbs: 3,
            ..Default::default()
        },
        "n_verbs",
    );
    bad(
        WorldConfig {
            n_nouns: 17,
            ..Default::default()
        },
        "n_nouns",
    );
    bad(
        WorldConfig {
            fps: f64::NAN,
            ..Default::default()
        },
        "fps",
    );
    bad(
        WorldConfig {
            max_duration_s: 5.0,
            ..Default::default()
        },
        "max_duration_s",
    );
    bad(
        WorldConfig {
            min_duration_s: 1.0,
            max_duration_s: 1.0,
            ..Default::default()
        },
        "min_duration_s",
    );
    bad(
        WorldConfig {
            mean_gap_s: 1.0,
            ..Default::default()
        },
        "mean_gap_s",
    );
    bad(
        WorldConfig {
            width: 2,
            ..Default::default()
        },
        "width",
    );
    assert!(matches!(
        World::new(WorldConfig::default()).and_then(|w| w.video(32)),
        Err(SynthError::NoSuchVideo { index: 32, len: 32 })
    ));
    // Unknown keys are rejected; partial configs fill in defaults.
    assert!(serde_json::from_str::<WorldConfig>(r#"{"n_video": 3}"#).is_err());
    let partial: Result<WorldConfig, _> =
        serde_json::from_str(r#"{"n_videos": 3, "val_videos": 1}"#);
    assert!(matches!(partial, Ok(c) if c.n_videos == 3 && c.fps == 16.0));
}
