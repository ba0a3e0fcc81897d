//! Dataset-independent sample descriptions that evaluation and training code consume, plus the
//! file naming conventions of the reference's pre-cut segments.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An exact `HH:MM:SS.fff` time, stored as integer milliseconds so that parsing and formatting
/// round-trip without floating-point drift (segment file names are derived from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the start of the video.
    pub millis: u64,
}

impl Timestamp {
    /// Parses `HH:MM:SS`, `HH:MM:SS.c`, `HH:MM:SS.cc` or `HH:MM:SS.ccc` (EPIC-KITCHENS uses two
    /// decimals for start/stop and three for the narration time). Minutes and seconds must be
    /// below 60; the error string explains what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad timestamp {s:?}: {why} (expected HH:MM:SS.cc)");
        let mut parts = s.split(':');
        let (Some(h), Some(m), Some(sec), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("needs three ':'-separated parts"));
        };
        let digits = |p: &str, what: &str| -> Result<u64, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{what} is not a number")));
            }
            p.parse::<u64>()
                .map_err(|_| bad(&format!("{what} overflows")))
        };
        let hours = digits(h, "hours")?;
        let minutes = digits(m, "minutes")?;
        let (whole, frac) = match sec.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (sec, None),
        };
        if whole.len() != 2 || m.len() != 2 {
            return Err(bad("minutes and seconds need two digits"));
        }
        let seconds = digits(whole, "seconds")?;
        if minutes >= 60 || seconds >= 60 {
            return Err(bad("minutes and seconds must be below 60"));
        }
        let millis_frac = match frac {
            None => 0,
            Some(f) if (1..=3).contains(&f.len()) => {
                let v = digits(f, "fraction")?;
                v * 10u64.pow(3 - f.len() as u32)
            }
            Some(_) => return Err(bad("fraction needs 1 to 3 digits")),
        };
        let millis = ((hours * 60 + minutes) * 60 + seconds)
            .checked_mul(1000)
            .and_then(|v| v.checked_add(millis_frac))
            .ok_or_else(|| bad("value overflows"))?;
        Ok(Self { millis })
    }

    /// From seconds, rounded to the nearest millisecond (negative or non-finite input gives 0).
    pub fn from_secs(s: f64) -> Self {
        let millis = if s.is_finite() && s > 0.0 {
            (s * 1000.0).round() as u64
        } else {
            0
        };
        Self { millis }
    }

    /// Seconds as a float.
    pub fn as_secs(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    /// `HHMMSScc`: the timestamp without ':' and '.', at the two-decimal precision of the
    /// EPIC-KITCHENS CSVs (milliseconds are truncated to centiseconds) — the form used in the
    /// reference's action-segment file names.
    pub fn compact(self) -> String {
        let cs = self.millis / 10;
        let (h, rest) = (cs / 360_000, cs % 360_000);
        let (m, rest) = (rest / 6000, rest % 6000);
        let (s, c) = (rest / 100, rest % 100);
        format!("{h:02}{m:02}{s:02}{c:02}")
    }
}

impl fmt::Display for Timestamp {
    /// `HH:MM:SS.cc` when the value is a whole number of centiseconds, else `HH:MM:SS.mmm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.millis;
        let (h, m, s, r) = (
            ms / 3_600_000,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
        );
        if r % 10 == 0 {
            write!(f, "{h:02}:{m:02}:{s:02}.{:02}", r / 10)
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}.{r:03}")
        }
    }
}

/// One temporally located action inside a longer video (EPIC-KITCHENS-100, Ego4D FHO, the
/// synthetic world). Evaluation code consumes this whatever the source dataset is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSegment {
    /// Unique key of the segment (EPIC `narration_id`; Ego4D `<clip_uid>_<action_idx>`).
    pub uid: String,
    /// The video file the times refer to (EPIC `video_id`; Ego4D `clip_uid`).
    pub video_id: String,
    /// Camera wearer, when the dataset records it (EPIC `participant_id`).
    pub participant: Option<String>,
    /// Start of the action in seconds from the start of `video_id`.
    pub start_s: f64,
    /// End of the action in seconds from the start of `video_id`.
    pub stop_s: f64,
    /// Verb class id (logit index), `None` for unlabelled test splits.
    pub verb: Option<usize>,
    /// Noun class id (logit index), `None` for unlabelled test splits.
    pub noun: Option<usize>,
    /// Free-text narration (EPIC) or `"<verb> <noun>"` (Ego4D), when available.
    pub narration: Option<String>,
    /// Start as an exact timestamp (the segment's file name is derived from it).
    pub start: Timestamp,
    /// End as an exact timestamp.
    pub stop: Timestamp,
}

impl ActionSegment {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.stop_s - self.start_s
    }

    /// File name of the pre-cut action segment the reference's linear probe reads:
    /// `<video_id>_<HHMMSScc>_<HHMMSScc>.MP4`.
    pub fn file_name(&self) -> String {
        action_segment_name(&self.video_id, self.start, self.stop)
    }

    /// `<video_id>_<HHMMSScc>_<HHMMSScc>` (the file name without extension).
    pub fn stem(&self) -> String {
        format!(
            "{}_{}_{}",
            self.video_id,
            self.start.compact(),
            self.stop.compact()
        )
    }
}

/// One labelled clip of a classification dataset (UCF-101, HMDB-51, VGGSound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipLabel {
    /// Media path relative to the dataset's media root, without any layout template applied
    /// (UCF `Class/v_Class_g01_c01.avi`, HMDB `class/video.avi`, VGGSound `<id>_<start:06>`).
    pub path: String,
    /// Class id (0-based logit index).
    pub label: usize,
    /// Start of the clip inside the source video in seconds (VGGSound), if the clip is a window.
    pub start_s: Option<f64>,
    /// End of the clip inside the source video in seconds, if the clip is a window.
    pub stop_s: Option<f64>,
}

/// Reference name of an action segment file: `P01_102_00000054_00000223.MP4` for the action of
/// `P01_102` from `00:00:00.54` to `00:00:02.23`.
pub fn action_segment_name(video_id: &str, start: Timestamp, stop: Timestamp) -> String {
    format!("{video_id}_{}_{}.MP4", start.compact(), stop.compact())
}

/// Reference name of a pretraining segment: seconds zero-padded to six digits,
/// `P01_04_000070_000080.MP4` for seconds 70–80 of `P01_04`.
pub fn pretrain_segment_name(video_id: &str, start_s: u64, stop_s: u64, ext: &str) -> String {
    format!("{video_id}_{start_s:06}_{stop_s:06}.{ext}")
}

/// Inverse of [`pretrain_segment_name`] (also accepts action-segment names): returns
/// `(video_id, start, stop)` as the two trailing numeric fields, or `None` when the name does not
/// end in `_<digits>_<digits>.<ext>`.
pub fn parse_segment_name(file_name: &str) -> Option<(&str, u64, u64)> {
    let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
    let (rest, stop) = stem.rsplit_once('_')?;
    let (video_id, start) = rest.rsplit_once('_')?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if video_id.is_empty() {
        return None;
    }
    Some((video_id, num(start)?, num(stop)?))
}

/// Fixed-length, non-overlapping windows `[k·len, (k+1)·len)` (whole seconds) covering a video of
/// `duration_s` seconds. A trailing remainder is kept as a shorter last window only when it lasts
/// at least `min_tail_s` seconds (pass `len_s` to keep complete windows only, the default of
/// `replai-prep segments`). The reference never published its cutting script; this is the
/// documented choice of this toolkit.
pub fn fixed_windows(duration_s: f64, len_s: u64, min_tail_s: f64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if !(duration_s.is_finite() && duration_s > 0.0) || len_s == 0 {
        return out;
    }
    let mut start = 0u64;
    loop {
        let stop = start + len_s;
        if stop as f64 <= duration_s + 1e-9 {
            out.push((start, stop));
            start = stop;
            continue;
        }
        let tail = duration_s - start as f64;
        if tail >= min_tail_s && tail > 0.0 {
            // The name carries whole seconds: round the end down, keep it only if non-empty.
            let end = duration_s.floor() as u64;
            if end > start {
                out.push((start, end));
            }
        }
        return out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trip_and_compact() {
        let t = Timestamp::parse("00:00:02.23").expect("valid");
        assert_eq!(t.millis, 2230);
        assert_eq!(t.compact(), "00000223");
        assert_eq!(t.to_string(), "00:00:02.23");
        let n = Timestamp::parse("01:02:03.456").expect("valid");
        assert_eq!(n.millis, 3_723_456);
        assert_eq!(n.to_string(), "01:02:03.456");
        assert_eq!(Timestamp::parse("00:00:01.5").expect("valid").millis, 1500);
        for bad in [
            "",
            "00:00",
            "00:0:01.00",
            "00:60:00.00",
            "00:00:61.00",
            "aa:00:00.00",
            "00:00:00.1234",
            "00:00:00.",
            "00:00:00.0x",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reference_names() {
        let start = Timestamp::parse("00:00:00.54").expect("valid");
        let stop = Timestamp::parse("00:00:02.23").expect("valid");
        assert_eq!(
            action_segment_name("P01_102", start, stop),
            "P01_102_00000054_00000223.MP4"
        );
        assert_eq!(
            pretrain_segment_name("P01_04", 70, 80, "MP4"),
            "P01_04_000070_000080.MP4"
        );
        assert_eq!(
            parse_segment_name("P01_04_000070_000080.MP4"),
            Some(("P01_04", 70, 80))
        );
        assert_eq!(parse_segment_name("P01_04.MP4"), None);
    }

    #[test]
    fn windows() {
        assert_eq!(fixed_windows(25.0, 10, 10.0), vec![(0, 10), (10, 20)]);
        assert_eq!(
            fixed_windows(25.5, 10, 5.0),
            vec![(0, 10), (10, 20), (20, 25)]
        );
        assert_eq!(fixed_windows(20.0, 10, 10.0), vec![(0, 10), (10, 20)]);
        assert!(fixed_windows(9.0, 10, 10.0).is_empty());
        assert!(fixed_windows(f64::NAN, 10, 1.0).is_empty());
    }
}
