//! The output stage: events as JSON lines to stdout and/or a file.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

use crate::{
    event::{Event, Kind},
    metrics::counter_vec,
};

/// Sinks events are written to: `sink` label values.
pub const SINKS: [&str; 2] = ["stdout", "file"];

/// The output stage's metrics: lines written, lines a sink refused, lines
/// dropped because the writer was behind.
#[derive(Clone)]
pub struct OutputMetrics {
    pub events: prometheus::IntCounterVec,
    pub output_errors: prometheus::IntCounterVec,
    pub output_dropped: prometheus::IntCounterVec,
}

impl OutputMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        let m = Self {
            events: counter_vec(registry, "events_total", "Events written, by kind.", &["kind"]),
            output_errors: counter_vec(
                registry,
                "output_errors_total",
                "Events that could not be written to a sink, by sink.",
                &["sink"],
            ),
            output_dropped: counter_vec(
                registry,
                "output_dropped_total",
                "Events not written because the writer was too far behind (its reader stalled), by kind.",
                &["kind"],
            ),
        };
        for k in Kind::ALL {
            m.events.with_label_values(&[k.as_str()]);
            m.output_dropped.with_label_values(&[k.as_str()]);
        }
        for s in SINKS {
            m.output_errors.with_label_values(&[s]);
        }
        m
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open event file {path}: {source}")]
pub struct OpenError {
    path: String,
    #[source]
    source: io::Error,
}

struct Sink {
    /// `sink` label value.
    name: &'static str,
    writer: Box<dyn Write + Send>,
    /// Set after a failure is logged, so a dead sink logs once.
    failing: bool,
}

/// Batches of lines the writer thread may hold before new ones are
/// dropped (and counted): a stalled reader of the event stream (a full
/// pipe to journald) costs events, never detection.
pub const QUEUE_BATCHES: usize = 256;

/// One batch of lines for the writer, with how many lines of each kind.
struct Batch {
    lines: Vec<u8>,
    kinds: Vec<(Kind, u64)>,
}

/// The output stage: lines are serialised here, on the pipeline's thread,
/// and written to the sinks by a writer thread behind a bounded queue.
pub struct Output {
    queue: Option<std::sync::mpsc::SyncSender<Batch>>,
    writer: Option<std::thread::JoinHandle<()>>,
    metrics: OutputMetrics,
    /// The batch being filled.
    pending: Batch,
    /// Set while batches are being dropped, so a stall logs once.
    stalled: bool,
}

impl Output {
    pub fn new(
        stdout: bool,
        file: Option<&Path>,
        metrics: OutputMetrics,
    ) -> Result<Self, OpenError> {
        let mut sinks = Vec::new();
        if stdout {
            sinks.push(Sink {
                name: "stdout",
                writer: Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
                failing: false,
            });
        }
        if let Some(path) = file {
            let f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| OpenError {
                    path: path.display().to_string(),
                    source,
                })?;
            sinks.push(Sink {
                name: "file",
                writer: Box::new(BufWriter::with_capacity(1 << 16, f)),
                failing: false,
            });
        }
        let (queue, rx) = std::sync::mpsc::sync_channel::<Batch>(QUEUE_BATCHES);
        let m = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                for batch in rx {
                    for sink in &mut sinks {
                        let result = sink
                            .writer
                            .write_all(&batch.lines)
                            .and_then(|()| sink.writer.flush());
                        account(&m, sink, result);
                    }
                    for (kind, n) in batch.kinds {
                        m.events.with_label_values(&[kind.as_str()]).inc_by(n);
                    }
                }
            })
            .map_err(|source| OpenError {
                path: "output writer thread".to_owned(),
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            writer: Some(writer),
            metrics,
            pending: Batch {
                lines: Vec::with_capacity(1 << 16),
                kinds: Vec::new(),
            },
            stalled: false,
        })
    }

    /// Adds one event, serialised straight from its typed record.
    pub fn write_event(&mut self, event: &Event) {
        let at = self.pending.lines.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending.lines, event) {
            self.pending.lines.truncate(at);
            tracing::error!(error = %e, "event could not be serialised; dropped");
            return;
        }
        self.pending.lines.push(b'\n');
        self.count(event.kind());
    }

    /// Adds one line already in JSON form (an alert).
    pub fn write_value(&mut self, kind: Kind, event: &serde_json::Value) {
        let at = self.pending.lines.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending.lines, event) {
            self.pending.lines.truncate(at);
            tracing::error!(error = %e, "event could not be serialised; dropped");
            return;
        }
        self.pending.lines.push(b'\n');
        self.count(kind);
    }

    fn count(&mut self, kind: Kind) {
        match self.pending.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.pending.kinds.push((kind, 1)),
        }
    }

    /// Hands the lines of the batch to the writer, at the end of each
    /// batch. Never waits: when the writer is that far behind, the lines
    /// are dropped and counted (`edgewatch_output_dropped_total`).
    pub fn flush(&mut self) {
        if self.pending.lines.is_empty() {
            return;
        }
        let batch = std::mem::replace(
            &mut self.pending,
            Batch {
                lines: Vec::with_capacity(1 << 16),
                kinds: Vec::new(),
            },
        );
        let Some(queue) = &self.queue else { return };
        match queue.try_send(batch) {
            Ok(()) => {
                if self.stalled {
                    tracing::info!("event output caught up");
                    self.stalled = false;
                }
            }
            Err(
                std::sync::mpsc::TrySendError::Full(batch)
                | std::sync::mpsc::TrySendError::Disconnected(batch),
            ) => {
                for (kind, n) in batch.kinds {
                    self.metrics
                        .output_dropped
                        .with_label_values(&[kind.as_str()])
                        .inc_by(n);
                }
                if !self.stalled {
                    tracing::error!(
                        queued = QUEUE_BATCHES,
                        "event output stalled (its reader is not reading); events are dropped and counted, detection goes on"
                    );
                    self.stalled = true;
                }
            }
        }
    }

    /// Flushes, then waits for the writer to write everything queued (at
    /// shutdown).
    pub fn finish(&mut self) {
        self.flush();
        self.queue = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One place that both logs and counts a sink error, so they agree.
fn account(metrics: &OutputMetrics, sink: &mut Sink, result: io::Result<()>) {
    match result {
        Ok(()) => {
            if sink.failing {
                tracing::info!(sink = sink.name, "event sink recovered");
                sink.failing = false;
            }
        }
        Err(e) => {
            metrics.output_errors.with_label_values(&[sink.name]).inc();
            if !sink.failing {
                tracing::error!(sink = sink.name, error = %e, "event sink failing; events to it are lost and counted");
                sink.failing = true;
            }
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub stdout: bool,
    pub file: Option<std::path::PathBuf>,
    pub kinds: Vec<crate::event::Kind>,
    pub seed_events: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            stdout: true,
            file: None,
            kinds: crate::event::Kind::ALL.to_vec(),
            seed_events: true,
        }
    }
}
