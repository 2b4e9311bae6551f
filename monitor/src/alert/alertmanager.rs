//! The Alertmanager sink: `POST /api/v2/alerts` with one alert per
//! request. An edgewatch alert (one rule on one lineage, for one dedup
//! window) is one Alertmanager alert: the `alert_id` label keeps alerts of
//! one rule on different lineages apart, `startsAt` is the first match and
//! `endsAt` the end of the dedup window, when Alertmanager resolves it. The
//! repeat line at the window's end posts the same alert again with the
//! final count.
//!
//! <https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml>

use serde_json::{json, Map, Value};

use super::Alert;

/// The request body for one alert.
pub fn payload(alert: &Alert, host: &str, generator_url: Option<&str>) -> Value {
    let a = &alert.record;
    let mut labels = Map::new();
    labels.insert("alertname".into(), a.rule.clone().into());
    labels.insert("rule".into(), a.rule.clone().into());
    labels.insert("severity".into(), a.severity.as_str().into());
    if !a.attack.is_empty() {
        labels.insert("technique".into(), a.attack.join(",").into());
    }
    labels.insert("host".into(), host.into());
    labels.insert("alert_id".into(), a.alert_id.clone().into());
    let mut annotations = Map::new();
    annotations.insert("summary".into(), a.title.clone().into());
    if !a.description.is_empty() {
        annotations.insert("description".into(), a.description.clone().into());
    }
    annotations.insert("process".into(), process_text(&a.process).into());
    let connections: Vec<String> = a.connections.iter().map(connection_text).collect();
    if !connections.is_empty() {
        annotations.insert("connections".into(), connections.join("; ").into());
    }
    annotations.insert("count".into(), a.count.to_string().into());
    let mut alert = json!({ "labels": labels, "annotations": annotations });
    if !a.ts.is_empty() {
        alert["startsAt"] = a.ts.clone().into();
    }
    if let Some(end) = &a.window_end {
        alert["endsAt"] = end.clone().into();
    }
    if let Some(url) = generator_url {
        alert["generatorURL"] = url.into();
    }
    Value::Array(vec![alert])
}

/// `pid 4242 /usr/bin/dash: sh -c id (parent 4240 /usr/bin/python3)`.
fn process_text(p: &Value) -> String {
    let pid = p
        .get("pid")
        .map_or_else(|| "?".to_owned(), ToString::to_string);
    let exe = p.get("exe").and_then(Value::as_str).unwrap_or("?");
    let argv: Vec<&str> = p
        .get("argv")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut text = format!("pid {pid} {exe}");
    if !argv.is_empty() {
        text.push_str(": ");
        text.push_str(&argv.join(" "));
    }
    if let Some(parent) = p.get("ancestry").and_then(|a| a.get(0)) {
        let ppid = parent
            .get("pid")
            .map_or_else(|| "?".to_owned(), ToString::to_string);
        let pexe = parent.get("exe").and_then(Value::as_str).unwrap_or("?");
        text.push_str(&format!(" (parent {ppid} {pexe})"));
    }
    text
}

/// `tcp 127.0.0.1:40000 -> 127.0.0.1:4444 outbound`.
fn connection_text(c: &Value) -> String {
    let end = |v: Option<&Value>| {
        v.map_or_else(
            || "?".to_owned(),
            |e| {
                let addr = e.get("addr").and_then(Value::as_str).unwrap_or("?");
                let port = e
                    .get("port")
                    .map_or_else(|| "?".to_owned(), ToString::to_string);
                if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                }
            },
        )
    };
    let proto = c.get("proto").and_then(Value::as_str).unwrap_or("?");
    let mut text = format!(
        "{proto} {} -> {}",
        end(c.get("local")),
        end(c.get("remote"))
    );
    if let Some(d) = c.get("direction").and_then(Value::as_str) {
        text.push(' ');
        text.push_str(d);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_maps_to_labels_annotations_and_times() {
        let alert = Alert::from_value(&json!({
            "kind": "alert",
            "ts": "2026-11-26T01:02:03.123456789Z",
            "alert_id": "EW-SEQ-001-50-9",
            "rule": "EW-SEQ-001",
            "title": "Service spawned a shell that then connected out or listened",
            "description": "A shell below a service connected out.",
            "severity": "critical",
            "attack": ["T1190", "T1059.004"],
            "process": {"pid": 51, "exe": "/usr/bin/dash", "argv": ["sh", "-c", "id"],
                        "ancestry": [{"pid": 50, "exe": "/usr/bin/python3"}]},
            "connections": [{"proto": "tcp", "local": {"addr": "::1", "port": 40000},
                             "remote": {"addr": "::1", "port": 4444}, "direction": "outbound"}],
            "evidence": [],
            "count": 2,
            "lineage": 50,
            "window_end": "2026-11-26T01:03:03.123456789Z",
        }))
        .expect("alert");
        let p = payload(&alert, "gw1", Some("http://gw1.example.net:9810/metrics"));
        assert_eq!(
            p,
            json!([{
                "labels": {
                    "alertname": "EW-SEQ-001", "rule": "EW-SEQ-001", "severity": "critical",
                    "technique": "T1190,T1059.004", "host": "gw1", "alert_id": "EW-SEQ-001-50-9",
                },
                "annotations": {
                    "summary": "Service spawned a shell that then connected out or listened",
                    "description": "A shell below a service connected out.",
                    "process": "pid 51 /usr/bin/dash: sh -c id (parent 50 /usr/bin/python3)",
                    "connections": "tcp [::1]:40000 -> [::1]:4444 outbound",
                    "count": "2",
                },
                "startsAt": "2026-11-26T01:02:03.123456789Z",
                "endsAt": "2026-11-26T01:03:03.123456789Z",
                "generatorURL": "http://gw1.example.net:9810/metrics",
            }])
        );
    }
}
