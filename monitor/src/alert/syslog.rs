//! The syslog sink: one RFC 5424 message per alert, to a local datagram
//! socket (/dev/log), to a UDP collector (RFC 5426, one message per
//! datagram) or to a TCP collector with octet-counting framing (RFC 6587).
//!
//! <https://www.rfc-editor.org/rfc/rfc5424>

use std::{fmt::Write as _, time::Duration};

use serde::Deserialize;
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket, UnixDatagram},
};

use super::{Alert, DeliveryError};
use crate::detect::rule::Severity;

/// The structured-data id of the alert fields. 32473 is the private
/// enterprise number RFC 5612 reserves for documentation and examples.
pub const SD_ID: &str = "edgewatch@32473";
/// APP-NAME of every message.
pub const APP_NAME: &str = "edgewatch";
/// Most bytes of the command line quoted in MSG; the whole alert is in
/// the other sinks.
const CMDLINE_MAX: usize = 1024;

/// How a syslog sink reaches its collector.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A local datagram socket such as /dev/log.
    Unix,
    /// One datagram per message (RFC 5426).
    Udp,
    /// Octet-counting framing (RFC 6587).
    Tcp,
}

/// Syslog facilities an alert can be filed under.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    User,
    Daemon,
    Auth,
    Syslog,
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number (RFC 5424 section 6.2.1).
    pub fn code(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Daemon => 3,
            Self::Auth => 4,
            Self::Syslog => 5,
            Self::Authpriv => 10,
            Self::Local0 => 16,
            Self::Local1 => 17,
            Self::Local2 => 18,
            Self::Local3 => 19,
            Self::Local4 => 20,
            Self::Local5 => 21,
            Self::Local6 => 22,
            Self::Local7 => 23,
        }
    }
}

/// The syslog severity of an alert severity.
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// A header field: printable US-ASCII without spaces, at most `max`
/// characters, or the NILVALUE `-`.
fn header_field(value: &str, max: usize) -> &str {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        "-"
    } else {
        value
    }
}

/// Escapes a PARAM-VALUE: `"`, `\` and `]` take a backslash.
fn param_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// RFC 3339 with at most microseconds, as TIME-SECFRAC allows 6 digits.
fn timestamp(ts: &str) -> String {
    let Some((whole, frac)) = ts.split_once('.') else {
        return ts.to_owned();
    };
    let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
    let zone = &frac[digits.len()..];
    let kept = &digits[..digits.len().min(6)];
    if kept.is_empty() {
        format!("{whole}{zone}")
    } else {
        format!("{whole}.{kept}{zone}")
    }
}

/// The RFC 5424 message for an alert (without transport framing).
pub fn format(alert: &Alert, facility: Facility, host: &str, procid: u32) -> String {
    let a = &alert.record;
    let pri = u16::from(facility.code()) * 8 + u16::from(syslog_severity(a.severity));
    let ts = if a.ts.is_empty() {
        "-".to_owned()
    } else {
        timestamp(&a.ts)
    };
    let mut m = format!(
        "<{pri}>1 {ts} {} {APP_NAME} {procid} {} [{SD_ID}",
        header_field(host, 255),
        header_field(&a.rule, 32),
    );
    let pid = a.process.get("pid").map(ToString::to_string);
    let exe = a.process.get("exe").and_then(|e| e.as_str());
    let count = a.count.to_string();
    let attack = a.attack.join(",");
    let params = [
        ("alert_id", Some(a.alert_id.as_str())),
        ("rule", Some(a.rule.as_str())),
        ("severity", Some(a.severity.as_str())),
        ("technique", Some(attack.as_str()).filter(|t| !t.is_empty())),
        ("pid", pid.as_deref()),
        ("exe", exe),
        ("count", Some(count.as_str())),
        ("repeat", a.repeat.then_some("true")),
        ("update", a.update.then_some("true")),
    ];
    for (name, value) in params {
        if let Some(v) = value {
            let _ = write!(m, " {name}=\"");
            param_value(&mut m, v);
            m.push('"');
        }
    }
    m.push_str("] ");
    m.push_str(&a.title);
    let mut cmdline = a
        .process
        .get("argv")
        .and_then(|v| v.as_array())
        .map(|argv| {
            argv.iter()
                .filter_map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if cmdline.len() > CMDLINE_MAX {
        let mut cut = CMDLINE_MAX;
        while !cmdline.is_char_boundary(cut) {
            cut -= 1;
        }
        cmdline.truncate(cut);
        cmdline.push_str("...");
    }
    if !cmdline.is_empty() {
        m.push_str(": ");
        // One message is one line.
        m.extend(
            cmdline
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
    }
    if a.repeat {
        let _ = write!(m, " (repeated, {} matches)", a.count);
    }
    if a.update {
        let _ = write!(m, " (another match, {} so far)", a.count);
    }
    m
}

/// A connection to the collector, opened at the first delivery and again
/// after a failure.
pub struct SyslogSink {
    transport: Transport,
    address: String,
    facility: Facility,
    host: String,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
    unix: Option<UnixDatagram>,
}

impl SyslogSink {
    pub fn new(transport: Transport, address: String, facility: Facility, host: String) -> Self {
        Self {
            transport,
            address,
            facility,
            host,
            tcp: None,
            udp: None,
            unix: None,
        }
    }

    pub async fn deliver(&mut self, alert: &Alert, timeout: Duration) -> Result<(), DeliveryError> {
        let message = format(alert, self.facility, &self.host, std::process::id());
        let result = tokio::time::timeout(timeout, self.send(message.as_bytes()))
            .await
            .unwrap_or(Err(DeliveryError::Timeout(timeout)));
        if result.is_err() {
            // Start afresh next time: the collector may have restarted.
            self.tcp = None;
            self.udp = None;
            self.unix = None;
        }
        result
    }

    async fn send(&mut self, message: &[u8]) -> Result<(), DeliveryError> {
        match self.transport {
            Transport::Unix => {
                if self.unix.is_none() {
                    self.unix = Some(UnixDatagram::unbound()?);
                }
                let socket = self.unix.as_ref().ok_or(DeliveryError::NotConnected)?;
                socket.send_to(message, &self.address).await?;
            }
            Transport::Udp => {
                if self.udp.is_none() {
                    let peer = tokio::net::lookup_host(&self.address)
                        .await?
                        .next()
                        .ok_or(DeliveryError::NotConnected)?;
                    let local = if peer.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let socket = UdpSocket::bind(local).await?;
                    socket.connect(peer).await?;
                    self.udp = Some(socket);
                }
                let socket = self.udp.as_ref().ok_or(DeliveryError::NotConnected)?;
                socket.send(message).await?;
            }
            Transport::Tcp => {
                if self.tcp.is_none() {
                    self.tcp = Some(TcpStream::connect(&self.address).await?);
                }
                let stream = self.tcp.as_mut().ok_or(DeliveryError::NotConnected)?;
                let mut frame = format!("{} ", message.len()).into_bytes();
                frame.extend_from_slice(message);
                stream.write_all(&frame).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alert(repeat: bool) -> Alert {
        Alert::from_value(&json!({
            "kind": "alert",
            "ts": "2026-11-26T01:02:03.123456789Z",
            "alert_id": "EW-PROC-003-77-1",
            "rule": "EW-PROC-003",
            "title": "Program executed from a temporary or world-writable directory",
            "severity": "medium",
            "attack": ["T1105", "T1204.002"],
            "process": {"pid": 4242, "exe": "/tmp/x\"]\\y", "argv": ["/tmp/x", "a\nb"], "ancestry": []},
            "connections": [],
            "evidence": [],
            "count": 3,
            "repeat": repeat,
            "lineage": 77,
        }))
        .expect("alert")
    }

    #[test]
    fn message_follows_rfc5424() {
        let m = format(&alert(false), Facility::Auth, "gw1", 99);
        assert_eq!(
            m,
            "<36>1 2026-11-26T01:02:03.123456Z gw1 edgewatch 99 EW-PROC-003 \
             [edgewatch@32473 alert_id=\"EW-PROC-003-77-1\" rule=\"EW-PROC-003\" \
             severity=\"medium\" technique=\"T1105,T1204.002\" pid=\"4242\" \
             exe=\"/tmp/x\\\"\\]\\\\y\" count=\"3\"] \
             Program executed from a temporary or world-writable directory: /tmp/x a b"
        );
        let r = format(&alert(true), Facility::Local7, "bad host", 1);
        assert!(
            r.starts_with("<188>1 2026-11-26T01:02:03.123456Z - edgewatch 1 "),
            "{r}"
        );
        assert!(r.contains(" repeat=\"true\"]"), "{r}");
        assert!(r.ends_with(" (repeated, 3 matches)"), "{r}");
    }

    #[test]
    fn timestamps_keep_at_most_microseconds() {
        assert_eq!(
            timestamp("2026-01-01T00:00:00.123456789Z"),
            "2026-01-01T00:00:00.123456Z"
        );
        assert_eq!(
            timestamp("2026-01-01T00:00:00.12Z"),
            "2026-01-01T00:00:00.12Z"
        );
        assert_eq!(timestamp("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
        assert_eq!(
            timestamp("2026-01-01T00:00:00.1234567+02:00"),
            "2026-01-01T00:00:00.123456+02:00"
        );
    }

    #[test]
    fn long_command_lines_are_cut() {
        let mut a = alert(false);
        a.record.process["argv"] = json!(["é".repeat(2000)]);
        let m = format(&a, Facility::Auth, "gw1", 1);
        let msg = m.split_once("] ").expect("msg").1;
        assert!(msg.len() < CMDLINE_MAX + 100, "{}", msg.len());
        assert!(msg.ends_with("..."));
    }
}
