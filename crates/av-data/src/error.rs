//! Errors. Parsers collect every problem they find into [`Issue`]s and return them together, so a
//! user fixes a broken annotation copy in one pass instead of one line per run.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of problem an [`Issue`] is; lets callers (and tests) react without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IssueKind {
    /// The file is not well-formed CSV / JSON / TOML / text at this position.
    Syntax,
    /// A row has the wrong number of fields, or a header is not the expected one.
    Columns,
    /// A field could not be parsed as the expected type (integer, float, timestamp, list, ...).
    Field,
    /// A required field is absent (JSON) or empty (CSV).
    MissingField,
    /// A class id or class name is not in the class list / taxonomy.
    UnknownClass,
    /// A time interval is inverted, or ends after the video it belongs to.
    Interval,
    /// The same key (class id, segment uid, ...) appears twice.
    Duplicate,
    /// A split selected no sample at all.
    EmptySplit,
    /// A file or directory the manifest expects does not exist.
    MissingFile,
    /// A file exists but cannot be opened/read, or is empty.
    Unreadable,
    /// The manifest itself is inconsistent (class counts, templates, split options).
    Manifest,
}

/// One problem, located as precisely as the format allows (1-based line and column).
///
/// For CSV files the column is the 1-based field number (and `field` names it); for JSON and
/// TOML files it is the 1-based character column reported by the parser.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// The file the problem is in (or the missing file itself).
    pub file: PathBuf,
    /// 1-based line, when the problem is inside the file.
    pub line: Option<u64>,
    /// 1-based column (CSV: field number; JSON/TOML: character column).
    pub column: Option<u64>,
    /// Name of the CSV column or JSON field involved, when known.
    pub field: Option<String>,
    /// The category of the problem.
    pub kind: IssueKind,
    /// Human-readable explanation, including the offending value.
    pub reason: String,
}

impl Issue {
    /// A problem about a whole file (missing, unreadable, empty split).
    pub fn file(path: impl Into<PathBuf>, kind: IssueKind, reason: impl Into<String>) -> Self {
        Self {
            file: path.into(),
            line: None,
            column: None,
            field: None,
            kind,
            reason: reason.into(),
        }
    }

    /// A problem at a line (and optionally a column) of a file.
    pub fn at(
        path: impl Into<PathBuf>,
        line: u64,
        column: Option<u64>,
        kind: IssueKind,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            file: path.into(),
            line: Some(line),
            column,
            field: None,
            kind,
            reason: reason.into(),
        }
    }

    /// Attaches the name of the column / JSON field involved.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, " [{field}]")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// At most this many issues are spelled out by `Display`; the full list stays in the value.
const DISPLAY_LIMIT: usize = 50;

/// The list of all problems found by one parse / validation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the problems in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Issue> {
        self.0.iter()
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })?;
        for issue in self.0.iter().take(DISPLAY_LIMIT) {
            write!(f, "\n  {issue}")?;
        }
        if n > DISPLAY_LIMIT {
            write!(f, "\n  ... and {} more", n - DISPLAY_LIMIT)?;
        }
        Ok(())
    }
}

/// Errors of the av-data crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// One or more problems in annotation files or in the data tree (all of them, not the first).
    #[error("{0}")]
    Invalid(Issues),
    /// A file could not be read at all.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A caller-supplied argument is out of range (e.g. a few-shot ratio of 0).
    #[error("invalid argument: {0}")]
    Argument(String),
    /// Buffers handed to the batching helpers do not match the requested shape.
    #[error("cannot collate: {0}")]
    Shape(String),
    /// candle failed to build a tensor.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl DataError {
    /// The collected issues, if this is an [`DataError::Invalid`] error.
    pub fn issues(&self) -> &[Issue] {
        match self {
            DataError::Invalid(issues) => &issues.0,
            _ => &[],
        }
    }
}

/// Turns a list of issues into `Ok(value)` when empty, an [`DataError::Invalid`] otherwise.
pub(crate) fn finish<T>(value: T, issues: Vec<Issue>) -> Result<T, DataError> {
    if issues.is_empty() {
        Ok(value)
    } else {
        Err(DataError::Invalid(Issues(issues)))
    }
}

/// Reads a whole text file; a missing or unreadable file becomes an [`Issue`] so that callers
/// loading several files can report all missing ones together.
pub(crate) fn read_text(path: &Path) -> Result<String, Issue> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| {
            let (line, col) = line_col_of_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
            Issue::at(
                path,
                line,
                Some(col),
                IssueKind::Syntax,
                "file is not valid UTF-8",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Issue::file(
            path,
            IssueKind::MissingFile,
            "file does not exist",
        )),
        Err(e) => Err(Issue::file(
            path,
            IssueKind::Unreadable,
            format!("cannot read file: {e}"),
        )),
    }
}

/// 1-based (line, column) of a byte offset; the column counts characters, as editors do.
pub(crate) fn line_col_of_bytes(bytes: &[u8], offset: usize) -> (u64, u64) {
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count() as u64
        + 1;
    (line, col)
}
