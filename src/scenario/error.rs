//! [`ScenarioError`] and the mapping from byte offsets in the file to `file:line:col`.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a scenario was refused. Every message is one line naming where (`file:line:col`, or the
/// command-line flag), the key, the bad value and the form that was expected, because the user
/// fixes it by reading that line and nothing else.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something in the file is wrong.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column (in characters) of the offending key or value.
        col: usize,
        /// Key, bad value and expected form.
        message: String,
    },
    /// A command-line override (`--target`, `--server-ca`, `--insecure`) is wrong or does not
    /// fit the scenario; it has no place in the file, so the message names the flag.
    #[error("{path}: {message}")]
    Flag {
        /// The scenario file the flag was applied to.
        path: PathBuf,
        /// The flag, its value and what was expected.
        message: String,
    },
}

/// The file being validated: turns offsets into positioned errors.
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at byte `offset` of the file.
    pub fn at(&self, offset: usize, message: impl Into<String>) -> ScenarioError {
        let (line, col) = line_col(self.text, offset);
        ScenarioError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// An error about a command-line flag.
    pub fn flag(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Flag {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }

    /// A TOML syntax or shape error (unknown key, wrong type, missing key), positioned by the
    /// span toml reports, with the key name added when toml's message lacks it.
    pub fn toml(&self, err: &toml::de::Error) -> ScenarioError {
        let span = err.span().unwrap_or(0..0);
        let mut message = toml_words(err.message());
        if let Some(key) = missing_key(&message) {
            if let Some(example) = example(key) {
                message = format!("{message} (expected e.g. {example})");
            }
        } else if let Some(key) = key_at(self.text, span.clone()) {
            if !message.contains(&format!("`{key}`")) {
                message = format!("{key}: {message}");
            }
        }
        self.at(span.start, message)
    }

    /// A path written in the file, relative to the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) => dir.join(path),
            None => path.to_path_buf(),
        }
    }
}

/// serde's message in TOML's words: serde names Rust types (`u64`, `struct RawConnect`,
/// `sequence`) where users wrote integers, tables and arrays.
fn toml_words(message: &str) -> String {
    let mut out = message
        .trim()
        .replace('\n', " ")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer")
        .replace("expected u16", "expected an integer 0..=65535")
        .replace("expected u8", "expected an integer 0..=255")
        .replace(
            "expected a sequence",
            "expected an array ([[table]] or [...])",
        );
    while let Some(at) = out.find("expected struct ") {
        let name_len = out[at + 16..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(out.len() - at - 16);
        out.replace_range(at..at + 16 + name_len, "expected a table");
    }
    out
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The key a span belongs to: the span itself when it is a key (`devics = 3`), the key
/// before the `=` when the span is a value (`devices = "ten"`), the table's name when it is a
/// header (`[group]`).
fn key_at(text: &str, span: Range<usize>) -> Option<&str> {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let spanned = text.get(span.clone())?;
    if spanned.starts_with('[') {
        return Some(spanned.trim_matches(['[', ']', ' ', '\t'])).filter(|k| !k.is_empty());
    }
    let after = text.get(span.end..)?.trim_start_matches([' ', '\t']);
    if !spanned.is_empty() && spanned.chars().all(is_key_char) && after.starts_with('=') {
        return Some(spanned);
    }
    let before = text.get(..span.start)?.trim_end_matches([' ', '\t']);
    let before = before.strip_suffix('=')?.trim_end_matches([' ', '\t']);
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_key_char(*c))
        .last()?
        .0;
    Some(&before[start..])
}

/// The key of serde's "missing field `x`" message.
fn missing_key(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// An example line for a required key, so a "missing field" error shows the expected form.
fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" => r#"name = "sensors""#,
        "duration" => r#"duration = "60s""#,
        "devices" => "devices = 100",
        "client_id" => r#"client_id = "sensor-{index:05}""#,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_in_characters() {
        let text = "a = 1\nbé = \"x\"\n\nz";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // "é" is two bytes: the `=` at byte 10 is the 4th character of line 2.
        assert_eq!(line_col(text, 10), (2, 4));
        // An offset inside "é" counts as the "é".
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, text.len() - 1), (4, 1));
        assert_eq!(line_col(text, 10_000), (4, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }

    #[test]
    fn key_at_finds_keys_and_values() {
        let text = "devics = 3\nconnect = { rate = 5 }\n[[group]]\n";
        assert_eq!(key_at(text, 0..6), Some("devics"));
        assert_eq!(key_at(text, 9..10), Some("devics"));
        let five = text.find('5').unwrap();
        assert_eq!(key_at(text, five..five + 1), Some("rate"));
        let header = text.find("[[").unwrap();
        assert_eq!(key_at(text, header..header + 9), Some("group"));
    }

    #[test]
    fn toml_words_hide_rust_types() {
        assert_eq!(
            toml_words("invalid type: string \"x\", expected struct RawConnect"),
            "invalid type: string \"x\", expected a table"
        );
        assert_eq!(
            toml_words("invalid value: integer `-1`, expected u64"),
            "invalid value: integer `-1`, expected a non-negative integer"
        );
    }
}
