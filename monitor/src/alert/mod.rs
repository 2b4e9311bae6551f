//! The alert stage: delivers each alert the detect stage raises to every
//! configured sink (JSON-lines file, stdout, syslog, Alertmanager, HTTP
//! webhook).
//!
//! Each sink has its own bounded queue and its own task that delivers in
//! order, retrying with exponential backoff. The detect stage only ever
//! does a non-blocking `try_send`: a sink that is down fills its own queue
//! and then drops (counted), and never slows the event pipeline or the
//! other sinks.

pub mod alertmanager;
pub mod config;
pub mod file;
pub mod http;
pub mod syslog;

use std::{
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use prometheus::{IntCounterVec, IntGaugeVec};
use serde_json::Value;
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
};

use self::{
    config::{AlertsConfig, Backoff, SinkSpec, Target},
    file::RotatingFile,
    http::HttpTarget,
    syslog::SyslogSink,
};
use crate::{
    detect::AlertRecord,
    metrics::{counter_vec, gauge_vec},
};

/// Why an alert was dropped: `reason` label values.
pub const DROP_REASONS: [&str; 4] = ["queue_full", "retries_exhausted", "rejected", "stopped"];

/// One alert on its way to the sinks: the record for the sinks that pick
/// fields, and its JSON line as the event stream has it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub record: AlertRecord,
    pub line: Vec<u8>,
}

impl Alert {
    /// An alert from its record and its JSON form (with `"kind": "alert"`).
    pub fn new(record: AlertRecord, json: &Value) -> Self {
        Self {
            record,
            line: json.to_string().into_bytes(),
        }
    }

    /// An alert from an alert line's JSON, or None when it is not one.
    pub fn from_value(json: &Value) -> Option<Self> {
        let mut record: AlertRecord = serde_json::from_value(json.clone()).ok()?;
        record.update = json.get("kind").and_then(Value::as_str) == Some("alert_update");
        Some(Self::new(record, json))
    }
}

/// A failed delivery attempt.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("HTTP status {status}: {body}")]
    Status {
        status: hyper::StatusCode,
        body: String,
        permanent: bool,
    },
    #[error("no address to send to")]
    NotConnected,
}

impl DeliveryError {
    /// The receiver refused this alert for good: retrying cannot help.
    fn permanent(&self) -> bool {
        matches!(
            self,
            Self::Status {
                permanent: true,
                ..
            }
        )
    }
}

/// A sink that could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open alert file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("alerts: {0}")]
    Config(String),
}

/// Counters of every sink, labelled by sink name.
#[derive(Clone)]
struct Counters {
    delivered: IntCounterVec,
    failures: IntCounterVec,
    dropped: IntCounterVec,
    queued: IntGaugeVec,
}

impl Counters {
    fn register(registry: &prometheus::Registry) -> Self {
        let counter = |name, help, labels: &[&str]| counter_vec(registry, name, help, labels);
        let delivered = counter(
            "alert_sink_delivered_total",
            "Alerts delivered, by sink.",
            &["sink"],
        );
        let failures = counter(
            "alert_sink_failures_total",
            "Delivery attempts that failed (each retry counts), by sink.",
            &["sink"],
        );
        let dropped = counter(
            "alert_sink_dropped_total",
            "Alerts given up, by sink and reason (queue_full, retries_exhausted, rejected, stopped).",
            &["sink", "reason"],
        );
        let queued = gauge_vec(
            registry,
            "alert_sink_queue_length",
            "Alerts waiting in the sink's queue.",
            &["sink"],
        );
        Self {
            delivered,
            failures,
            dropped,
            queued,
        }
    }

    /// One place that both logs and counts a dropped alert.
    fn drop_alert(&self, sink: &str, reason: &'static str, why: &dyn std::fmt::Display) {
        self.dropped.with_label_values(&[sink, reason]).inc();
        tracing::error!(sink, reason, error = %why, "alert dropped");
    }
}

/// The sink behind a queue.
enum Sink {
    File(RotatingFile),
    Stdout,
    Syslog(SyslogSink),
    Alertmanager {
        target: HttpTarget,
        generator_url: Option<String>,
        host: String,
    },
    Webhook {
        target: HttpTarget,
        headers: Vec<(String, String)>,
    },
}

impl Sink {
    fn open(target: Target, host: &str) -> Result<Self, StartError> {
        Ok(match target {
            Target::File {
                path,
                max_bytes,
                keep,
            } => Self::File(RotatingFile::open(path.clone(), max_bytes, keep).map_err(
                |source| StartError::File {
                    path: path.display().to_string(),
                    source,
                },
            )?),
            Target::Stdout => Self::Stdout,
            Target::Syslog {
                transport,
                address,
                facility,
            } => Self::Syslog(SyslogSink::new(
                transport,
                address,
                facility,
                host.to_owned(),
            )),
            Target::Alertmanager {
                target,
                generator_url,
            } => Self::Alertmanager {
                target,
                generator_url,
                host: host.to_owned(),
            },
            Target::Webhook { target, headers } => Self::Webhook { target, headers },
        })
    }

    /// One attempt. The file and stdout write synchronously: local
    /// appends of a line are quick, and they keep the line order.
    async fn deliver(&mut self, alert: &Alert, timeout: Duration) -> Result<(), DeliveryError> {
        match self {
            Self::File(f) => Ok(f.write_line(&alert.line)?),
            Self::Stdout => Ok(file::write_stdout(&alert.line)?),
            Self::Syslog(s) => s.deliver(alert, timeout).await,
            Self::Alertmanager {
                target,
                generator_url,
                host,
            } => {
                let body = alertmanager::payload(alert, host, generator_url.as_deref());
                target
                    .post_json(body.to_string().into_bytes(), &[], timeout)
                    .await
            }
            Self::Webhook { target, headers } => {
                target.post_json(alert.line.clone(), headers, timeout).await
            }
        }
    }
}

struct Queue {
    name: String,
    tx: mpsc::Sender<Arc<Alert>>,
    task: JoinHandle<()>,
    /// Set once a full queue has been logged; the task clears it after a
    /// delivery, so a long outage logs once and every drop is counted.
    full_logged: Arc<AtomicBool>,
}

/// The running sinks.
pub struct Sinks {
    queues: Vec<Queue>,
    counters: Counters,
}

impl Sinks {
    /// Opens the configured sinks and starts one task each; needs a tokio
    /// runtime.
    pub fn start(
        config: &AlertsConfig,
        registry: &prometheus::Registry,
    ) -> Result<Self, StartError> {
        let specs = config.specs().map_err(|e| StartError::Config(e.message))?;
        let counters = Counters::register(registry);
        let host = config.host();
        let mut queues = Vec::new();
        for spec in specs {
            let SinkSpec {
                name,
                queue_size,
                backoff,
                timeout,
                target,
            } = spec;
            let sink = Sink::open(target, &host)?;
            counters.delivered.with_label_values(&[&name]);
            counters.failures.with_label_values(&[&name]);
            counters.queued.with_label_values(&[&name]).set(0);
            for reason in DROP_REASONS {
                counters.dropped.with_label_values(&[&name, reason]);
            }
            let (tx, rx) = mpsc::channel(queue_size);
            let full_logged = Arc::new(AtomicBool::new(false));
            let worker = Worker {
                name: name.clone(),
                sink,
                backoff,
                timeout,
                counters: counters.clone(),
                full_logged: full_logged.clone(),
            };
            let task = tokio::spawn(worker.run(rx));
            queues.push(Queue {
                name,
                tx,
                task,
                full_logged,
            });
        }
        Ok(Self { queues, counters })
    }

    /// No sinks: alerts go nowhere but the event stream.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues an alert on every sink without waiting.
    pub fn send(&self, alert: Alert) {
        let alert = Arc::new(alert);
        for q in &self.queues {
            match q.tx.try_send(alert.clone()) {
                Ok(()) => self.counters.queued.with_label_values(&[&q.name]).inc(),
                Err(TrySendError::Full(_)) => {
                    if q.full_logged.swap(true, Ordering::Relaxed) {
                        self.counters
                            .dropped
                            .with_label_values(&[&q.name, "queue_full"])
                            .inc();
                    } else {
                        self.counters.drop_alert(
                            &q.name,
                            "queue_full",
                            &"the sink's queue is full",
                        );
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    self.counters
                        .drop_alert(&q.name, "stopped", &"the sink's task has stopped");
                }
            }
        }
    }

    /// Stops taking alerts and gives the sinks until `grace` has passed
    /// to deliver what they hold; what is left then is logged as lost.
    pub async fn close(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for q in self.queues {
            drop(q.tx);
            let mut task = q.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let left = self.counters.queued.with_label_values(&[&q.name]).get();
                tracing::error!(
                    sink = q.name,
                    queued = left,
                    "alert sink did not finish delivering within {grace:?} of shutdown; its alerts are lost"
                );
            }
        }
    }
}

struct Worker {
    name: String,
    sink: Sink,
    backoff: Backoff,
    timeout: Duration,
    counters: Counters,
    full_logged: Arc<AtomicBool>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Alert>>) {
        let mut failing = false;
        while let Some(alert) = rx.recv().await {
            self.counters.queued.with_label_values(&[&self.name]).dec();
            let mut attempt = 1;
            loop {
                let error = match self.sink.deliver(&alert, self.timeout).await {
                    Ok(()) => {
                        self.counters
                            .delivered
                            .with_label_values(&[&self.name])
                            .inc();
                        self.full_logged.store(false, Ordering::Relaxed);
                        if failing {
                            tracing::info!(sink = self.name, "alert sink recovered");
                            failing = false;
                        }
                        break;
                    }
                    Err(e) => e,
                };
                self.counters
                    .failures
                    .with_label_values(&[&self.name])
                    .inc();
                if error.permanent() {
                    self.counters.drop_alert(&self.name, "rejected", &error);
                    break;
                }
                if attempt >= self.backoff.max_attempts {
                    self.counters
                        .drop_alert(&self.name, "retries_exhausted", &error);
                    break;
                }
                if !failing {
                    tracing::warn!(sink = self.name, error = %error, "alert delivery failed; retrying with backoff");
                    failing = true;
                }
                tokio::time::sleep(self.backoff.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _, Write as _},
        net::TcpListener,
    };

    use serde_json::json;

    use super::*;
    use crate::config::{Config, Source};

    fn alert(n: u64) -> Alert {
        Alert::from_value(&json!({
            "kind": "alert", "ts": "2026-11-26T01:02:03Z", "alert_id": format!("A-{n}"),
            "rule": "EW-PROC-003", "title": "t", "severity": "medium", "attack": ["T1105"],
            "process": {"pid": n}, "connections": [], "evidence": [], "count": 1, "lineage": n,
        }))
        .expect("alert")
    }

    fn sinks(toml: &str, metrics: &prometheus::Registry) -> Sinks {
        let config = Config::parse(Source {
            name: "t.toml",
            text: toml,
        })
        .expect("valid config");
        Sinks::start(&config.alerts, metrics).expect("sinks start")
    }

    fn value(m: &prometheus::Registry, series: &str) -> f64 {
        let text = String::from_utf8(crate::metrics::render(m)).expect("utf8");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// A webhook sink to a loopback port, with quick retries.
    fn webhook(port: u16, max_attempts: u32, metrics: &prometheus::Registry) -> Sinks {
        sinks(
            &format!(
                "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/h\"\n\
                 retry = {{ max_attempts = {max_attempts}, initial_backoff_ms = 10, max_backoff_ms = 20 }}\n"
            ),
            metrics,
        )
    }

    /// Delivered alerts and failed attempts of the webhook sink.
    fn webhook_counts(m: &prometheus::Registry) -> (f64, f64) {
        (
            value(m, "edgewatch_alert_sink_delivered_total{sink=\"webhook\"}"),
            value(m, "edgewatch_alert_sink_failures_total{sink=\"webhook\"}"),
        )
    }

    /// An HTTP server on loopback that answers each request with the next
    /// status of `statuses` and hands over the bodies.
    fn http_server(statuses: Vec<u16>) -> (u16, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for status in statuses {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).expect("read");
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).expect("body");
                let _ = tx.send(String::from_utf8(body).expect("utf8"));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
                );
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn failed_attempts_are_retried_until_delivered() {
        let m = crate::metrics::registry();
        let (port, bodies) = http_server(vec![503, 500, 200]);
        let s = webhook(port, 5, &m);
        s.send(alert(1));
        s.close(Duration::from_secs(20)).await;
        let got: Vec<Value> = bodies
            .try_iter()
            .map(|b| serde_json::from_str(&b).expect("json"))
            .collect();
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|b| b["alert_id"] == "A-1" && b["kind"] == "alert"));
        assert_eq!(webhook_counts(&m), (1.0, 2.0));
    }

    #[tokio::test]
    async fn exhausted_and_rejected_alerts_are_dropped_and_counted() {
        let m = crate::metrics::registry();
        let (port, _bodies) = http_server(vec![503, 503, 400]);
        let s = webhook(port, 2, &m);
        s.send(alert(1));
        s.send(alert(2));
        s.close(Duration::from_secs(20)).await;
        let dropped = |r| {
            value(
                &m,
                &format!("edgewatch_alert_sink_dropped_total{{reason=\"{r}\",sink=\"webhook\"}}"),
            )
        };
        assert_eq!(dropped("retries_exhausted"), 1.0);
        assert_eq!(dropped("rejected"), 1.0);
        assert_eq!(webhook_counts(&m), (0.0, 3.0));
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_blocking_and_other_sinks_still_deliver() {
        let m = crate::metrics::registry();
        let dir = std::env::temp_dir().join(format!("edgewatch-unit-sinks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("alerts.jsonl");
        // A port nothing listens on: every attempt fails.
        let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = dead.local_addr().expect("addr").port();
        drop(dead);
        let s = sinks(
            &format!(
                "[[alerts.sink]]\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\n\
                 queue_size = 1\nretry = {{ max_attempts = 1000, initial_backoff_ms = 1000 }}\n\
                 [[alerts.sink]]\ntype = \"file\"\npath = \"{}\"\n",
                path.display()
            ),
            &m,
        );
        for n in 0..5 {
            s.send(alert(n));
        }
        // The first is being retried, the second waits, the rest are dropped.
        assert!(
            value(
                &m,
                "edgewatch_alert_sink_dropped_total{reason=\"queue_full\",sink=\"alertmanager\"}"
            ) >= 3.0
        );
        s.close(Duration::from_millis(500)).await;
        let lines = std::fs::read_to_string(&path).expect("alert file");
        assert_eq!(lines.lines().count(), 5);
        assert_eq!(
            value(&m, "edgewatch_alert_sink_delivered_total{sink=\"file\"}"),
            5.0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
