//! The file sink: alerts as JSON lines in a file that rotates by size
//! (`alerts.jsonl` becomes `alerts.jsonl.1`, the older ones shift up and
//! the oldest past `keep` is removed), and the stdout sink.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// A JSON-lines file rotated when the next line would take it past
/// `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<(File, u64)>,
}

impl RotatingFile {
    /// Opens (creates) the file now, so a bad path fails at start.
    pub fn open(path: PathBuf, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let mut f = Self {
            path,
            max_bytes,
            keep,
            file: None,
        };
        f.current()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&mut self) -> io::Result<&mut (File, u64)> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let size = file.metadata()?.len();
            self.file = Some((file, size));
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("alert file is not open"))
    }

    /// Appends one line (a newline is added), rotating first if needed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        let size = self.current()?.1;
        if size > 0 && size + len > self.max_bytes {
            self.file = None;
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let result = self.current().and_then(|(file, size)| {
            file.write_all(&buf)?;
            *size += len;
            Ok(())
        });
        if result.is_err() {
            // Reopen at the next attempt: the file may have been removed.
            self.file = None;
        }
        result
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `path.N` to `path.N+1` (the last one is overwritten) and
    /// `path` to `path.1`.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.keep).rev() {
            match std::fs::rename(self.numbered(n), self.numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.numbered(1))
    }
}

/// Writes one JSON line to standard output, whole.
pub fn write_stdout(line: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edgewatch-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = scratch("rotate");
        let path = dir.join("alerts.jsonl");
        // 99 bytes a line with its newline: two lines fit in 200 bytes.
        let mut f = RotatingFile::open(path.clone(), 200, 2).expect("open");
        for i in 0..7 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(82));
            assert_eq!(line.len() + 1, 99);
            f.write_line(line.as_bytes()).expect("write");
        }
        let read = |p: &Path| -> Vec<u64> {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                        .as_u64()
                        .expect("n")
                })
                .collect()
        };
        assert_eq!(read(&path), [6]);
        assert_eq!(read(&dir.join("alerts.jsonl.1")), [4, 5]);
        assert_eq!(read(&dir.join("alerts.jsonl.2")), [2, 3]);
        assert!(!dir.join("alerts.jsonl.3").exists());
        // A line longer than the limit still goes in, alone.
        f.write_line("y".repeat(300).as_bytes()).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 301);
        assert_eq!(read(&dir.join("alerts.jsonl.1")), [6]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_fails_at_open() {
        assert!(RotatingFile::open("/nonexistent-dir/x.jsonl".into(), 4096, 1).is_err());
    }
}
