//! The output stage: events as JSON lines to stdout and/or a file.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

use crate::{
    event::{Event, Kind},
    metrics::Metrics,
};

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

pub struct Output {
    sinks: Vec<Sink>,
    metrics: Metrics,
    /// One line at a time, reused.
    line: Vec<u8>,
}

impl Output {
    pub fn new(stdout: bool, file: Option<&Path>, metrics: Metrics) -> Result<Self, OpenError> {
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
        Ok(Self {
            sinks,
            metrics,
            line: Vec::with_capacity(4096),
        })
    }

    /// Writes one event, serialised straight from its typed record, to
    /// every sink.
    pub fn write_event(&mut self, event: &Event) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, event) {
            tracing::error!(error = %e, "event could not be serialised; dropped");
            return;
        }
        self.line.push(b'\n');
        self.write_line(event.kind());
    }

    /// Writes one event, in its JSON form, to every sink.
    pub fn write_value(&mut self, kind: Kind, event: &serde_json::Value) {
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, event) {
            tracing::error!(error = %e, "event could not be serialised; dropped");
            return;
        }
        self.line.push(b'\n');
        self.write_line(kind);
    }

    /// Writes the line in `self.line` to every sink and counts it.
    fn write_line(&mut self, kind: Kind) {
        for sink in &mut self.sinks {
            let result = sink.writer.write_all(&self.line);
            Self::account(&self.metrics, sink, result);
        }
        self.metrics
            .events
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Flushes buffered lines, at the end of each batch.
    pub fn flush(&mut self) {
        for sink in &mut self.sinks {
            let result = sink.writer.flush();
            Self::account(&self.metrics, sink, result);
        }
    }

    /// One place that both logs and counts a sink error, so they agree.
    fn account(metrics: &Metrics, sink: &mut Sink, result: io::Result<()>) {
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
}
