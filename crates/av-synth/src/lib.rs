//! A procedural audible-interaction world: untrimmed egocentric-like streams in which sounds
//! coincide with visual state changes, labelled in the EPIC-KITCHENS-100 schema.
//!
//! It is the built-in dataset of `replai-pretrain`: deterministic from a seed, generated in
//! memory in seconds, and exportable to disk (frame folders, WAV, CSV, optionally MP4) so the
//! same loaders that read real data can read it.
//!
//! Each video shows one object (a noun: shape x colour) on a textured, drifting, flickering
//! background with static clutter. Every few seconds an interaction (a verb from reversible
//! pairs: open/close the lid, turn the inner light on/off, put/take the object) changes the
//! object's state within a couple of frames, and an impact-like sound peaks at that moment: its
//! spectrum depends on the noun, its envelope on the verb. Between interactions the state
//! persists, so RepLAI's before/after clips differ exactly by the change. Loud distractor sounds
//! without visual change, nearly silent interactions and ambient drop-outs make moment-of-
//! interaction detection useful but imperfect. See `docs/synthetic-world.md` for the rationale.
//!
//! ```
//! use av_synth::{World, WorldConfig};
//!
//! let cfg = WorldConfig { n_videos: 2, val_videos: 1, min_duration_s: 4.0, max_duration_s: 4.0,
//!                         ..WorldConfig::default() };
//! let world = World::new(cfg)?;                  // timelines only
//! let video = world.video(0)?;                   // render one video on demand
//! assert_eq!(video.frames.len(), 64);            // 4 s at 16 fps
//! assert_eq!(video.audio.len(), 4 * 44_100);
//! let csv = world.labels_epic_csv(None)?;        // EPIC-100 annotation schema
//! assert!(csv.starts_with("narration_id,participant_id,video_id"));
//! # Ok::<(), av_synth::SynthError>(())
//! ```

mod config;
mod error;
mod export;
mod labels;
mod render;
mod script;
mod sound;
mod vocab;
mod world;

pub use config::WorldConfig;
pub use error::SynthError;
#[cfg(feature = "ffmpeg")]
pub use export::write_mp4;
pub use export::{
    ffmpeg_cli_available, write_frame_folder, ExportOptions, ExportSummary, FrameFormat,
    NOUN_CLASSES_CSV, TRAIN_CSV, VALIDATION_CSV, VERB_CLASSES_CSV,
};
pub use labels::{
    epic_csv, epic_frame, epic_timestamp, noun_classes_csv, verb_classes_csv, EPIC_COLUMNS,
};
pub use script::{
    Distractor, DistractorKind, Interaction, ObjectState, Silence, Split, VideoScript,
};
pub use vocab::{
    narration, noun_colour, noun_name, noun_shape, verb_name, COLOURS, MAX_NOUNS, MAX_VERBS,
    SHAPES, VERB_NAMES,
};
pub use world::{SynthVideo, World};
