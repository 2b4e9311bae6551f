//! The `[alerts]` configuration section: the list of sinks, each checked
//! here into a [`SinkSpec`] so that every mistake is reported at start with
//! the position of the offending key.

use std::{collections::BTreeMap, ops::Range, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

pub use super::syslog::Transport;
use super::{http::HttpTarget, syslog::Facility};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Host name carried by alerts (the Alertmanager `host` label, the
    /// syslog HOSTNAME). Unset: the machine's host name.
    pub host: Option<Spanned<String>>,
    /// The sinks, `[[alerts.sink]]`; alerts go to every one of them.
    pub sink: Vec<SinkConfig>,
}

/// One `[[alerts.sink]]` table as written. Keys that belong to another
/// sink type are errors, so a typo or a misplaced key never goes unnoticed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(rename = "type")]
    pub kind: Spanned<SinkType>,
    /// The `sink` label of its metrics and logs; defaults to the type.
    pub name: Option<Spanned<String>>,
    pub queue_size: Option<Spanned<usize>>,
    pub retry: Option<Spanned<RetryConfig>>,
    pub timeout_ms: Option<Spanned<u64>>,
    pub path: Option<Spanned<PathBuf>>,
    pub max_bytes: Option<Spanned<u64>>,
    pub keep: Option<Spanned<u32>>,
    pub transport: Option<Spanned<Transport>>,
    pub address: Option<Spanned<String>>,
    pub facility: Option<Spanned<Facility>>,
    pub url: Option<Spanned<String>>,
    pub generator_url: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    File,
    Stdout,
    Syslog,
    Alertmanager,
    Webhook,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Stdout => "stdout",
            Self::Syslog => "syslog",
            Self::Alertmanager => "alertmanager",
            Self::Webhook => "webhook",
        }
    }

    /// The keys this type takes besides the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::File => &["path", "max_bytes", "keep"],
            Self::Stdout => &[],
            Self::Syslog => &["transport", "address", "facility", "timeout_ms"],
            Self::Alertmanager => &["url", "generator_url", "timeout_ms"],
            Self::Webhook => &["url", "headers", "timeout_ms"],
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per alert, the first included.
    pub max_attempts: Spanned<u32>,
    /// Wait after the first failed attempt; it doubles after each failure.
    pub initial_backoff_ms: Spanned<u64>,
    /// Longest wait between attempts.
    pub max_backoff_ms: Spanned<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: Spanned::new(0..0, 10),
            initial_backoff_ms: Spanned::new(0..0, 500),
            max_backoff_ms: Spanned::new(0..0, 30_000),
        }
    }
}

pub const DEFAULT_QUEUE_SIZE: usize = 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_KEEP: u32 = 5;
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Retries with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1 for the first):
    /// `initial`, doubling each time, never more than `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A checked sink: what [`super::Sinks::start`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub name: String,
    pub queue_size: usize,
    pub backoff: Backoff,
    pub timeout: Duration,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Stdout,
    Syslog {
        transport: Transport,
        address: String,
        facility: Facility,
    },
    Alertmanager {
        target: HttpTarget,
        generator_url: Option<String>,
    },
    Webhook {
        target: HttpTarget,
        headers: Vec<(String, String)>,
    },
}

/// A configuration mistake at byte `offset` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub offset: usize,
    pub message: String,
}

fn err<T>(span: Range<usize>, message: String) -> Result<T, SpecError> {
    Err(SpecError {
        offset: span.start,
        message,
    })
}

impl AlertsConfig {
    /// The host name alerts carry.
    pub fn host(&self) -> String {
        match &self.host {
            Some(h) => h.get_ref().clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned()),
        }
    }

    /// Checks every sink; the first mistake is returned with its position.
    pub fn specs(&self) -> Result<Vec<SinkSpec>, SpecError> {
        if let Some(h) = &self.host {
            let host = h.get_ref();
            if host.is_empty() || host.len() > 255 || !host.bytes().all(|b| b.is_ascii_graphic()) {
                return err(
                    h.span(),
                    format!("alerts.host must be 1 to 255 printable ASCII characters without spaces, not {host:?}"),
                );
            }
        }
        let mut specs: Vec<SinkSpec> = Vec::new();
        for sink in &self.sink {
            let spec = sink.spec()?;
            if specs.iter().any(|s| s.name == spec.name) {
                let span = sink.name.as_ref().map_or(sink.kind.span(), Spanned::span);
                return err(
                    span,
                    format!(
                        "alerts.sink: two sinks are named {:?}; give each a distinct `name`",
                        spec.name
                    ),
                );
            }
            specs.push(spec);
        }
        Ok(specs)
    }
}

impl SinkConfig {
    /// The optional keys that are set, with their spans.
    fn typed_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut keys = Vec::new();
        let mut add = |name, span: Option<Range<usize>>| {
            if let Some(s) = span {
                keys.push((name, s));
            }
        };
        add("timeout_ms", self.timeout_ms.as_ref().map(Spanned::span));
        add("path", self.path.as_ref().map(Spanned::span));
        add("max_bytes", self.max_bytes.as_ref().map(Spanned::span));
        add("keep", self.keep.as_ref().map(Spanned::span));
        add("transport", self.transport.as_ref().map(Spanned::span));
        add("address", self.address.as_ref().map(Spanned::span));
        add("facility", self.facility.as_ref().map(Spanned::span));
        add("url", self.url.as_ref().map(Spanned::span));
        add(
            "generator_url",
            self.generator_url.as_ref().map(Spanned::span),
        );
        add("headers", self.headers.as_ref().map(Spanned::span));
        keys
    }

    fn spec(&self) -> Result<SinkSpec, SpecError> {
        let kind = *self.kind.get_ref();
        for (key, span) in self.typed_keys() {
            if !kind.keys().contains(&key) {
                return err(
                    span,
                    format!(
                        "alerts.sink: `{key}` does not apply to a {} sink",
                        kind.as_str()
                    ),
                );
            }
        }
        let name = match &self.name {
            Some(n) => {
                let v = n.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 32
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return err(
                        n.span(),
                        format!(
                            "alerts.sink: name must be 1 to 32 letters, digits, - or _, not {v:?}"
                        ),
                    );
                }
                v.clone()
            }
            None => kind.as_str().to_owned(),
        };
        let queue_size = match &self.queue_size {
            Some(q) if *q.get_ref() == 0 => {
                return err(
                    q.span(),
                    "alerts.sink: queue_size must be at least 1".into(),
                )
            }
            Some(q) => *q.get_ref(),
            None => DEFAULT_QUEUE_SIZE,
        };
        let retry = self
            .retry
            .as_ref()
            .map(|r| r.get_ref().clone())
            .unwrap_or_default();
        if *retry.max_attempts.get_ref() == 0 {
            return err(
                retry.max_attempts.span(),
                "alerts.sink: retry.max_attempts must be at least 1".into(),
            );
        }
        if retry.max_backoff_ms.get_ref() < retry.initial_backoff_ms.get_ref() {
            return err(
                retry.max_backoff_ms.span(),
                "alerts.sink: retry.max_backoff_ms must not be less than retry.initial_backoff_ms"
                    .into(),
            );
        }
        let backoff = Backoff {
            max_attempts: *retry.max_attempts.get_ref(),
            initial: Duration::from_millis(*retry.initial_backoff_ms.get_ref()),
            max: Duration::from_millis(*retry.max_backoff_ms.get_ref()),
        };
        let timeout = match &self.timeout_ms {
            Some(t) if *t.get_ref() == 0 => {
                return err(
                    t.span(),
                    "alerts.sink: timeout_ms must be at least 1".into(),
                )
            }
            Some(t) => Duration::from_millis(*t.get_ref()),
            None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        };
        let target = self.target(kind)?;
        Ok(SinkSpec {
            name,
            queue_size,
            backoff,
            timeout,
            target,
        })
    }

    fn target(&self, kind: SinkType) -> Result<Target, SpecError> {
        let missing = |key: &str| {
            err(
                self.kind.span(),
                format!("alerts.sink: a {} sink needs `{key}`", kind.as_str()),
            )
        };
        Ok(match kind {
            SinkType::Stdout => Target::Stdout,
            SinkType::File => {
                let Some(path) = &self.path else {
                    return missing("path");
                };
                let max_bytes = match &self.max_bytes {
                    Some(m) if *m.get_ref() < 4096 => {
                        return err(
                            m.span(),
                            "alerts.sink: max_bytes must be at least 4096".into(),
                        )
                    }
                    Some(m) => *m.get_ref(),
                    None => DEFAULT_MAX_BYTES,
                };
                let keep = match &self.keep {
                    Some(k) if *k.get_ref() == 0 || *k.get_ref() > 1000 => {
                        return err(
                            k.span(),
                            "alerts.sink: keep must be between 1 and 1000".into(),
                        )
                    }
                    Some(k) => *k.get_ref(),
                    None => DEFAULT_KEEP,
                };
                Target::File {
                    path: path.get_ref().clone(),
                    max_bytes,
                    keep,
                }
            }
            SinkType::Syslog => {
                let transport = self
                    .transport
                    .as_ref()
                    .map_or(Transport::Unix, |t| *t.get_ref());
                let address = match (&self.address, transport) {
                    (None, Transport::Unix) => DEFAULT_SYSLOG_SOCKET.to_owned(),
                    (None, _) => return missing("address"),
                    (Some(a), Transport::Unix) => a.get_ref().clone(),
                    (Some(a), _) => {
                        let v = a.get_ref();
                        let port = v.rsplit_once(':').and_then(|(h, p)| {
                            (!h.is_empty()).then(|| p.parse::<u16>().ok()).flatten()
                        });
                        if !matches!(port, Some(p) if p != 0) {
                            return err(
                                a.span(),
                                format!("alerts.sink: address must be HOST:PORT for udp and tcp, not {v:?}"),
                            );
                        }
                        v.clone()
                    }
                };
                Target::Syslog {
                    transport,
                    address,
                    facility: self
                        .facility
                        .as_ref()
                        .map_or(Facility::Auth, |f| *f.get_ref()),
                }
            }
            SinkType::Alertmanager | SinkType::Webhook => {
                let Some(url) = &self.url else {
                    return missing("url");
                };
                let mut target =
                    HttpTarget::parse(url.get_ref()).or_else(|m| err(url.span(), m))?;
                if kind == SinkType::Alertmanager {
                    target.append_path("/api/v2/alerts");
                    Target::Alertmanager {
                        target,
                        generator_url: self.generator_url.as_ref().map(|g| g.get_ref().clone()),
                    }
                } else {
                    let headers = match &self.headers {
                        Some(h) => {
                            for (k, v) in h.get_ref() {
                                let name_ok =
                                    hyper::header::HeaderName::from_bytes(k.as_bytes()).is_ok();
                                let value_ok = hyper::header::HeaderValue::from_str(v).is_ok();
                                if !name_ok || !value_ok {
                                    return err(
                                        h.span(),
                                        format!("alerts.sink: invalid HTTP header {k:?}"),
                                    );
                                }
                            }
                            h.get_ref()
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        }
                        None => Vec::new(),
                    };
                    Target::Webhook { target, headers }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Source};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Source {
            name: "t.toml",
            text,
        })
        .map_err(|e| e.to_string())
    }

    fn specs(text: &str) -> Vec<SinkSpec> {
        parse(text)
            .expect("valid")
            .alerts
            .specs()
            .expect("valid specs")
    }

    #[test]
    fn every_sink_type_parses_with_defaults() {
        let s = specs(
            r#"
[[alerts.sink]]
type = "file"
path = "/var/log/edgewatch/alerts.jsonl"
[[alerts.sink]]
type = "stdout"
[[alerts.sink]]
type = "syslog"
[[alerts.sink]]
type = "syslog"
name = "collector"
transport = "tcp"
address = "logs.example.net:6514"
facility = "local3"
[[alerts.sink]]
type = "alertmanager"
url = "http://127.0.0.1:9093/"
[[alerts.sink]]
type = "webhook"
url = "http://127.0.0.1:8080/hook"
headers = { Authorization = "Bearer x" }
retry = { max_attempts = 3, initial_backoff_ms = 100, max_backoff_ms = 1000 }
queue_size = 8
"#,
        );
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "file",
                "stdout",
                "syslog",
                "collector",
                "alertmanager",
                "webhook"
            ]
        );
        assert_eq!(
            s[0].target,
            Target::File {
                path: "/var/log/edgewatch/alerts.jsonl".into(),
                max_bytes: DEFAULT_MAX_BYTES,
                keep: DEFAULT_KEEP
            }
        );
        assert_eq!(s[0].queue_size, DEFAULT_QUEUE_SIZE);
        assert_eq!(s[0].backoff.max_attempts, 10);
        assert_eq!(
            s[2].target,
            Target::Syslog {
                transport: Transport::Unix,
                address: "/dev/log".into(),
                facility: Facility::Auth
            }
        );
        let Target::Alertmanager { target, .. } = &s[4].target else {
            panic!("alertmanager")
        };
        assert_eq!(
            target.uri().to_string(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(s[5].queue_size, 8);
        assert_eq!(s[5].backoff.max_attempts, 3);
        assert_eq!(s[5].backoff.max, Duration::from_secs(1));
    }

    #[test]
    fn mistakes_point_at_the_key() {
        for (text, at, what) in [
            (
                "[[alerts.sink]]\ntype = \"file\"\nurl = \"http://x\"\n",
                "t.toml:3:7: ",
                "does not apply to a file sink",
            ),
            (
                "[[alerts.sink]]\ntype = \"file\"\n",
                "t.toml:2:8: ",
                "needs `path`",
            ),
            (
                "[[alerts.sink]]\ntype = \"pager\"\n",
                "t.toml:2:8: ",
                "unknown variant",
            ),
            (
                "[[alerts.sink]]\ntype = \"stdout\"\nbogus = 1\n",
                "t.toml:3:1: ",
                "bogus",
            ),
            (
                "[[alerts.sink]]\ntype = \"syslog\"\ntransport = \"udp\"\naddress = \"collector\"\n",
                "t.toml:4:11: ",
                "HOST:PORT",
            ),
            (
                "[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://hook.example.net/\"\n",
                "t.toml:3:7: ",
                "http://",
            ),
            (
                "[[alerts.sink]]\ntype = \"stdout\"\nqueue_size = 0\n",
                "t.toml:3:14: ",
                "queue_size",
            ),
            (
                "[[alerts.sink]]\ntype = \"stdout\"\nretry = { max_attempts = 0 }\n",
                "t.toml:3:26: ",
                "max_attempts",
            ),
            (
                "[[alerts.sink]]\ntype = \"stdout\"\n[[alerts.sink]]\ntype = \"stdout\"\n",
                "t.toml:4:8: ",
                "two sinks are named \"stdout\"",
            ),
            (
                "[[alerts.sink]]\ntype = \"file\"\npath = \"/x\"\nmax_bytes = 10\n",
                "t.toml:4:13: ",
                "max_bytes",
            ),
            (
                "[alerts]\nhost = \"gw 1\"\n",
                "t.toml:2:8: ",
                "alerts.host",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.starts_with(at), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    /// The commented examples in the embedded default are valid: with
    /// their `# ` taken off, they parse into one sink of each type.
    #[test]
    fn default_toml_examples_are_valid() {
        let (before, alerts) = crate::config::DEFAULT_TOML
            .split_once("\n[alerts]\n")
            .expect("an [alerts] section");
        let uncommented: Vec<&str> = alerts
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[[alerts.sink]]")
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect();
        let text = format!("{before}\n[alerts]\n{}\n", uncommented.join("\n"));
        let config = parse(&text).expect("examples parse");
        let s = config.alerts.specs().expect("examples are valid");
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["file", "stdout", "syslog", "alertmanager", "webhook"]
        );
        assert_eq!(config.alerts.host(), "gw1");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff {
            max_attempts: 100,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u128> = (1..=9).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.delay(64), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }
}
