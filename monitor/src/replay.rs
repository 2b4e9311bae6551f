//! `monitor replay`: recorded events through the detect stage, offline.

use std::{
    io::{self, BufRead, BufReader, Write},
    path::Path,
};

use crate::{
    config::Config,
    detect::{
        rule::RuleError,
        stage::{load_rules, Detect},
    },
    event::{Event, Kind},
};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("writing alerts: {0}")]
    Write(#[source] io::Error),
}

/// One recorded line as the rules judged it.
pub struct Judged {
    pub alerts: Vec<serde_json::Value>,
    /// The line is an event, but not of this version's schema.
    pub untyped: bool,
}

/// Runs one recorded line through the rules: a line of this version's
/// schema as the typed record the daemon judges, any other JSON object by
/// its JSON fields. `None` when the line is not a JSON object.
pub fn judge_line(detect: &mut Detect, line: &[u8]) -> Option<Judged> {
    if let Ok(ev) = serde_json::from_slice::<Event>(line) {
        return Some(Judged {
            alerts: detect.observe_event(&ev),
            untyped: false,
        });
    }
    let v = serde_json::from_slice::<serde_json::Value>(line).ok()?;
    if !v.is_object() {
        return None;
    }
    Some(Judged {
        untyped: v.get("kind").and_then(serde_json::Value::as_str) != Some(Kind::Alert.as_str()),
        alerts: detect.observe(&v),
    })
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub alerts: u64,
    /// Events that are not of this version's schema (hand-written, or from
    /// another version), judged in their JSON form.
    pub untyped: u64,
    /// Lines that were not JSON objects, by line number.
    pub bad_lines: Vec<u64>,
}

/// Replays the events in `path` (`-` for stdin) through the rules of
/// `config` plus `extra` rule paths, writing alerts to `out`.
pub fn run(
    path: &Path,
    config: &Config,
    extra: &[std::path::PathBuf],
    out: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let rules = load_rules(&config.detect, extra)?;
    let mut detect = Detect::new(rules, None);
    let name = path.display().to_string();
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(BufReader::new(io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|source| ReplayError::Read {
            path: name.clone(),
            source,
        })?;
        Box::new(BufReader::new(f))
    };
    let mut summary = Summary::default();
    let mut write =
        |alerts: Vec<serde_json::Value>, summary: &mut Summary| -> Result<(), ReplayError> {
            for a in alerts {
                summary.alerts += 1;
                serde_json::to_writer(&mut *out, &a).map_err(|e| ReplayError::Write(e.into()))?;
                out.write_all(b"\n").map_err(ReplayError::Write)?;
            }
            Ok(())
        };
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ReplayError::Read {
            path: name.clone(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match judge_line(&mut detect, line.as_bytes()) {
            Some(judged) => {
                summary.events += 1;
                summary.untyped += u64::from(judged.untyped);
                write(judged.alerts, &mut summary)?;
            }
            None => {
                eprintln!("{name}:{}: not a JSON event, skipped", n + 1);
                summary.bad_lines.push(n as u64 + 1);
            }
        }
    }
    let alerts = detect.flush();
    write(alerts, &mut summary)?;
    Ok(summary)
}
