//! The reference moment-of-interaction detector finds the world's interactions, also fires on
//! distractors, and mostly misses the nearly silent interactions.

use av_synth::{World, WorldConfig};
use moi_detect::{detect, MoiConfig};

#[test]
fn reference_moi_detection_finds_interactions() -> anyhow::Result<()> {
    let cfg = WorldConfig {
        n_videos: 6,
        val_videos: 1,
        min_duration_s: 20.0,
        max_duration_s: 20.0,
        width: 16,
        height: 16,
        ..WorldConfig::default()
    };
    let world = World::generate(&cfg)?;
    let moi = MoiConfig::default();
    let tol = 0.06;
    let (mut loud, mut loud_hit, mut quiet, mut quiet_hit) = (0usize, 0usize, 0usize, 0usize);
    let (mut distr, mut distr_hit, mut moments, mut explained) = (0usize, 0usize, 0usize, 0usize);
    let (mut all, mut all_hit) = (0usize, 0usize);
    for v in world.videos() {
        let found = detect(&v.audio, v.sample_rate(), &moi)?;
        let near = |t: f64| found.iter().any(|m| (m.time_s - t).abs() <= tol);
        for it in v.interactions() {
            all += 1;
            all_hit += near(it.time_s) as usize;
            if it.quiet {
                quiet += 1;
                quiet_hit += near(it.time_s) as usize;
            } else {
                loud += 1;
                loud_hit += near(it.time_s) as usize;
            }
        }
        for d in v.distractors() {
            distr += 1;
            distr_hit += near(d.time_s) as usize;
        }
        for m in &found {
            moments += 1;
            let close = |t: f64| (m.time_s - t).abs() <= 0.15;
            explained += (v.interactions().iter().any(|i| close(i.time_s))
                || v.distractors().iter().any(|d| close(d.time_s)))
                as usize;
        }
    }
    let recall = all_hit as f64 / all.max(1) as f64;
    eprintln!(
        "interactions {all_hit}/{all} (loud {loud_hit}/{loud}, quiet {quiet_hit}/{quiet}), \
         distractors {distr_hit}/{distr}, moments explained {explained}/{moments}"
    );
    assert!(
        all >= 30,
        "too few interactions ({all}) for a meaningful rate"
    );
    assert!(recall >= 0.7, "recall {recall:.2}");
    assert!(
        loud_hit as f64 >= 0.8 * loud as f64,
        "loud recall {loud_hit}/{loud}"
    );
    assert!(
        distr > 0 && distr_hit > 0,
        "distractors never fire ({distr_hit}/{distr})"
    );
    assert!(
        quiet == 0 || quiet_hit < quiet,
        "quiet interactions are all detected"
    );
    assert!(
        explained as f64 >= 0.8 * moments as f64,
        "{explained}/{moments} moments explained"
    );
    Ok(())
}
