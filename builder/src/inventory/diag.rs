//! Diagnostics: errors that point at a file, line and column, a node and a field.

use std::fmt;
use std::ops::Range;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the error has no position.
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    /// An error about a whole file (no position).
    pub fn at_file(file: &Path, message: String) -> Self {
        Diagnostic { file: file.display().to_string(), line: 0, col: 0, message }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.col, self.message)
        } else {
            write!(f, "{}: error: {}", self.file, self.message)
        }
    }
}

/// Every error found in one validation run, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn single(file: &Path, message: &str) -> Self {
        Diagnostics(vec![Diagnostic::at_file(file, message.to_string())])
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sort by file and position so the output reads top to bottom like the files.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A source text with its display name, turning byte spans into line:column.
pub struct SourceFile<'a> {
    pub name: String,
    pub text: &'a str,
}

impl<'a> SourceFile<'a> {
    pub fn new(path: &Path, text: &'a str) -> Self {
        SourceFile { name: path.display().to_string(), text }
    }

    /// 1-based line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let at = (0..=at).rev().find(|&i| self.text.is_char_boundary(i)).unwrap_or(0);
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let (line, col) = span.map_or((0, 0), |s| self.line_col(s.start));
        Diagnostic { file: self.name.clone(), line, col, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let src = SourceFile::new(Path::new("f.toml"), "a = 1\nnäme = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "= " after the two-byte ä: byte 12 is column 6.
        assert_eq!(src.line_col(12), (2, 6));
        assert_eq!(src.error(Some(6..10), "bad").to_string(), "f.toml:2:1: error: bad");
        assert_eq!(src.error(None, "bad").to_string(), "f.toml: error: bad");
    }
}
