//! Shared CSV plumbing: read every record with its line number, and parse fields while recording
//! located issues instead of stopping at the first one.

use std::path::Path;
use std::str::FromStr;

use csv::StringRecord;

use crate::error::{Issue, IssueKind};
use crate::types::Timestamp;

/// Reads all records of a CSV text (no header handling), with their 1-based line numbers.
/// Malformed records become issues; empty lines are skipped.
pub(crate) fn records(
    path: &Path,
    text: &str,
    issues: &mut Vec<Issue>,
) -> Vec<(u64, StringRecord)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    let mut record = StringRecord::new();
    loop {
        let line = reader.position().line().max(1);
        match reader.read_record(&mut record) {
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                out.push((line, record.clone()));
            }
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                issues.push(Issue::at(
                    path,
                    line,
                    None,
                    IssueKind::Syntax,
                    format!("malformed CSV record: {e}"),
                ));
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    out
}

/// Checks that a header record equals `expected` (case-sensitive, surrounding spaces ignored).
pub(crate) fn check_header(
    path: &Path,
    line: u64,
    rec: &StringRecord,
    expected: &[&str],
) -> Option<Issue> {
    for (i, want) in expected.iter().enumerate() {
        match rec.get(i) {
            Some(got) if got.trim() == *want => {}
            Some(got) => {
                return Some(
                    Issue::at(
                        path,
                        line,
                        Some(i as u64 + 1),
                        IssueKind::Columns,
                        format!("header column {} is {got:?}, expected {want:?}", i + 1),
                    )
                    .with_field(*want),
                )
            }
            None => {
                return Some(Issue::at(
                    path,
                    line,
                    Some(i as u64 + 1),
                    IssueKind::Columns,
                    format!(
                        "header has {} columns, expected {} ({})",
                        rec.len(),
                        expected.len(),
                        expected.join(",")
                    ),
                ))
            }
        }
    }
    if rec.len() > expected.len() {
        return Some(Issue::at(
            path,
            line,
            Some(expected.len() as u64 + 1),
            IssueKind::Columns,
            format!(
                "header has {} columns, expected {}",
                rec.len(),
                expected.len()
            ),
        ));
    }
    None
}

/// Checks a data record's field count; the issue points at the first missing or extra field.
pub(crate) fn check_len(
    path: &Path,
    line: u64,
    rec: &StringRecord,
    expected: usize,
) -> Option<Issue> {
    (rec.len() != expected).then(|| {
        Issue::at(
            path,
            line,
            Some(rec.len().min(expected) as u64 + 1),
            IssueKind::Columns,
            format!("expected {expected} fields, found {}", rec.len()),
        )
    })
}

/// One record being parsed: every accessor records a located issue on failure and returns `None`.
pub(crate) struct Row<'a> {
    pub path: &'a Path,
    pub line: u64,
    pub rec: &'a StringRecord,
    pub names: &'a [&'a str],
    pub issues: &'a mut Vec<Issue>,
}

impl Row<'_> {
    fn issue(&mut self, i: usize, kind: IssueKind, reason: String) {
        let mut issue = Issue::at(self.path, self.line, Some(i as u64 + 1), kind, reason);
        if let Some(name) = self.names.get(i) {
            issue = issue.with_field(*name);
        }
        self.issues.push(issue);
    }

    /// The raw field (trimmed), or "" when absent.
    pub fn raw(&self, i: usize) -> &str {
        self.rec.get(i).map_or("", str::trim)
    }

    /// A non-empty string field.
    pub fn text(&mut self, i: usize) -> Option<String> {
        let v = self.raw(i).to_string();
        if v.is_empty() {
            self.issue(i, IssueKind::MissingField, "empty field".into());
            None
        } else {
            Some(v)
        }
    }

    /// A string field that may be empty (or `NaN`, as pandas writes missing values).
    pub fn opt_text(&self, i: usize) -> Option<String> {
        let v = self.raw(i);
        (!v.is_empty() && v != "NaN" && v != "nan").then(|| v.to_string())
    }

    /// A field parsed with `FromStr`.
    pub fn parse<T: FromStr>(&mut self, i: usize, what: &str) -> Option<T> {
        let v = self.raw(i).to_string();
        if v.is_empty() {
            self.issue(
                i,
                IssueKind::MissingField,
                format!("empty field, expected {what}"),
            );
            return None;
        }
        match v.parse::<T>() {
            Ok(x) => Some(x),
            Err(_) => {
                self.issue(i, IssueKind::Field, format!("{v:?} is not {what}"));
                None
            }
        }
    }

    /// A finite, non-negative float.
    pub fn seconds(&mut self, i: usize) -> Option<f64> {
        let x: f64 = self.parse(i, "a number of seconds")?;
        if x.is_finite() && x >= 0.0 {
            Some(x)
        } else {
            self.issue(
                i,
                IssueKind::Field,
                format!("{x} is not a valid number of seconds"),
            );
            None
        }
    }

    /// An `HH:MM:SS.cc` timestamp.
    pub fn timestamp(&mut self, i: usize) -> Option<Timestamp> {
        let v = self.raw(i).to_string();
        match Timestamp::parse(&v) {
            Ok(t) => Some(t),
            Err(reason) => {
                self.issue(i, IssueKind::Field, reason);
                None
            }
        }
    }

    /// A class id that must be below `n` when `n` is known.
    pub fn class_id(&mut self, i: usize, n: Option<usize>, what: &str) -> Option<usize> {
        let id: usize = self.parse(i, &format!("a {what} class id (non-negative integer)"))?;
        self.check_class(i, id, n, what)
    }

    /// Records an issue when `id >= n`.
    pub fn check_class(
        &mut self,
        i: usize,
        id: usize,
        n: Option<usize>,
        what: &str,
    ) -> Option<usize> {
        match n {
            Some(n) if id >= n => {
                self.issue(
                    i,
                    IssueKind::UnknownClass,
                    format!(
                        "unknown {what} class id {id} (the class list has {n} classes: 0..{n})"
                    ),
                );
                None
            }
            _ => Some(id),
        }
    }

    /// Records an arbitrary issue at field `i`.
    pub fn fail(&mut self, i: usize, kind: IssueKind, reason: String) {
        self.issue(i, kind, reason);
    }
}

/// Parses a Python list literal as pandas writes it (`['plate', "box:lunch"]`, `[2, 5]`, `[]`).
pub(crate) fn python_list(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("{s:?} is not a list literal like ['a', 'b']"))?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '\'' || c == '"' {
            chars.next();
            let mut item = String::new();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    match chars.next() {
                        Some(e) => item.push(e),
                        None => break,
                    }
                } else if ch == c {
                    closed = true;
                    break;
                } else {
                    item.push(ch);
                }
            }
            if !closed {
                return Err(format!("unterminated string in list {s:?}"));
            }
            out.push(item);
        } else {
            let mut item = String::new();
            while let Some(&ch) = chars.peek() {
                if ch == ',' {
                    break;
                }
                item.push(ch);
                chars.next();
            }
            let item = item.trim().to_string();
            if item.is_empty() {
                return Err(format!("empty element in list {s:?}"));
            }
            out.push(item);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(other) => return Err(format!("unexpected {other:?} in list {s:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::python_list;

    #[test]
    fn python_lists() {
        assert_eq!(python_list("['plate']").expect("ok"), vec!["plate"]);
        assert_eq!(
            python_list("['box:lunch', \"it's\"]").expect("ok"),
            vec!["box:lunch", "it's"]
        );
        assert_eq!(python_list("[2, 15]").expect("ok"), vec!["2", "15"]);
        assert!(python_list("[]").expect("ok").is_empty());
        assert!(python_list("plate").is_err());
        assert!(python_list("['plate").is_err());
        assert!(python_list("[1,,2]").is_err());
    }
}
