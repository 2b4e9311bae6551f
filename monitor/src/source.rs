//! Where configuration and rule texts come from, and their errors naming
//! `file:line:col`: shared by every stage that reads a file, depending on
//! none of them.

/// A configuration or rule file that could not be read or is invalid; the
/// message names `file:line:col`.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
    /// Wrong as a whole, or in something it names (a certificate file),
    /// with no one place in the file to point at.
    #[error("{path}: {message}")]
    Content { path: String, message: String },
}

/// Where a configuration or rule text came from, for error messages.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at byte `offset` of this source.
    pub fn error(&self, offset: usize, message: &str) -> FileError {
        let (line, col) = line_col(self.text, offset);
        FileError::Invalid {
            path: self.name.to_owned(),
            line,
            col,
            message: message.trim().replace('\n', " "),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// ", did you mean X?" for the known name nearest to `name`, when one is
/// near enough to be a typo.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map_or(String::new(), |(_, k)| format!("; did you mean {k:?}?"))
}
