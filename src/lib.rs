//! One import for the whole toolkit: re-exports every crate of the workspace so that the root
//! examples and end-to-end tests (and users who want everything) depend on a single package.

pub use av_audio as audio;
pub use av_data as data;
pub use av_losses as losses;
pub use av_models as models;
pub use av_optim as optim;
pub use av_synth as synth;
pub use av_train as train;
pub use av_video as video;
pub use moi_detect;
