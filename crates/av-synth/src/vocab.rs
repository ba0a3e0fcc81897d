//! The world's vocabulary: verb and noun classes, their names and their audio-visual signatures.

/// Largest supported number of verb classes (three reversible pairs).
pub const MAX_VERBS: usize = 6;
/// Largest supported number of noun classes (four shapes x four colours).
pub const MAX_NOUNS: usize = SHAPES.len() * COLOURS.len();

/// Verb names in class order; pairs `(2k, 2k+1)` undo each other.
pub const VERB_NAMES: [&str; MAX_VERBS] = ["open", "close", "turn-on", "turn-off", "put", "take"];

/// EPIC-style verb categories, one per verb.
pub const VERB_CATEGORIES: [&str; MAX_VERBS] = [
    "manipulate",
    "manipulate",
    "operate",
    "operate",
    "leave",
    "retrieve",
];

/// Object shapes; a noun is `shape + colour`.
pub const SHAPES: [&str; 4] = ["box", "jar", "bottle", "bowl"];
/// Object colours (names).
pub const COLOURS: [&str; 4] = ["red", "blue", "green", "yellow"];
/// Object colours (sRGB), far apart in hue so that nouns are visually distinct.
pub(crate) const COLOUR_RGB: [[f32; 3]; 4] = [
    [205.0, 45.0, 40.0],
    [40.0, 75.0, 210.0],
    [40.0, 165.0, 70.0],
    [215.0, 185.0, 40.0],
];

/// What an interaction does to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The lid goes to the given state (`true` = open).
    Lid(bool),
    /// The light goes to the given state (`true` = on).
    Light(bool),
    /// The object appears (`true`) or disappears.
    Presence(bool),
}

/// The effect of verb class `verb`.
pub(crate) fn verb_effect(verb: usize) -> Effect {
    match verb {
        0 => Effect::Lid(true),
        1 => Effect::Lid(false),
        2 => Effect::Light(true),
        3 => Effect::Light(false),
        4 => Effect::Presence(true),
        _ => Effect::Presence(false),
    }
}

/// Shape index of noun class `noun`.
pub fn noun_shape(noun: usize) -> usize {
    noun % SHAPES.len()
}

/// Colour index of noun class `noun`.
pub fn noun_colour(noun: usize) -> usize {
    (noun / SHAPES.len()) % COLOURS.len()
}

/// EPIC-style noun key, `shape:colour` (EPIC writes sub-types after a colon, e.g. `pan:frying`).
pub fn noun_name(noun: usize) -> String {
    format!(
        "{}:{}",
        SHAPES[noun_shape(noun)],
        COLOURS[noun_colour(noun)]
    )
}

/// Narration text as a person would say it, e.g. `open red box`.
pub fn narration(verb: usize, noun: usize) -> String {
    format!(
        "{} {} {}",
        VERB_NAMES[verb.min(MAX_VERBS - 1)],
        COLOURS[noun_colour(noun)],
        SHAPES[noun_shape(noun)]
    )
}

/// Verb name of class `verb` (`None` past the vocabulary).
pub fn verb_name(verb: usize) -> Option<&'static str> {
    VERB_NAMES.get(verb).copied()
}

/// Base frequency (Hz) of a colour's "material": the colour picks the register of the sound.
pub(crate) fn material_f0(colour: usize) -> f32 {
    [320.0, 610.0, 1150.0, 2150.0][colour % 4]
}

/// Partial ratios of a shape's resonances: the shape picks the timbre (inharmonic bar, plate,
/// harmonic tube, bell-like bowl).
pub(crate) fn shape_ratios(shape: usize) -> &'static [f32] {
    match shape % 4 {
        0 => &[1.0, 2.76, 5.40],
        1 => &[1.0, 1.59, 2.14, 2.65],
        2 => &[1.0, 2.0, 3.0, 4.0],
        _ => &[1.0, 1.19, 2.51, 3.87],
    }
}

/// Cut-off (Hz) of the noise part of an impact: brighter for higher-pitched materials.
pub(crate) fn material_noise_cutoff(colour: usize) -> f32 {
    [1_500.0, 3_000.0, 6_000.0, 11_000.0][colour % 4]
}
