//! The export stage: Prometheus metrics and the HTTP endpoint that serves
//! them. Names follow `edgewatch_<area>_<name>_<unit>_total`; every label
//! value comes from a closed set.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::{
    decode::DecodeError,
    event::{Direction, Kind, Proto},
    load::probes::PROBES,
    web_config::{Admission, WebConfig},
};

/// Namespace prefix of every metric.
pub const NAMESPACE: &str = "edgewatch";

/// Kernel-side counters besides ring-buffer losses: `reason` label values,
/// one per `monitor_common::event::counter::ERRORS` entry, in that order.
pub const KERNEL_ERROR_REASONS: [&str; 9] = [
    "read",
    "scratch",
    "exec_attempt_map_full",
    "sock_owner_map_full",
    "flow_map_full",
    "packet_unparsed",
    "io_map_full",
    "forward_map_full",
    "net_shed",
];

/// Sinks events are written to: `sink` label values.
pub const SINKS: [&str; 2] = ["stdout", "file"];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub kernel_lost: IntCounterVec,
    pub kernel_errors: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub process_table_entries: IntGauge,
    pub process_table_evictions: IntCounter,
    pub probe_attached: IntGaugeVec,
    pub output_errors: IntCounterVec,
    pub output_dropped: IntCounterVec,
    pub net_opened: IntCounterVec,
    pub net_closed: IntCounterVec,
    pub net_sent_bytes: IntCounterVec,
    pub net_received_bytes: IntCounterVec,
    pub net_connect_results: IntCounterVec,
    pub net_flow_table_entries: IntGauge,
    pub net_flow_table_evictions: IntCounter,
    pub net_kernel_flows: IntGauge,
    pub alerts: IntCounterVec,
    pub alerts_deduplicated: IntCounterVec,
    pub alerts_rate_limited: IntCounterVec,
    pub rules_loaded: IntGauge,
    pub rule_reloads: IntCounterVec,
    pub relays: IntCounterVec,
    pub tunnels: IntCounterVec,
    pub relay_pairs_examined: IntCounter,
    pub relay_pairs_dropped: IntCounter,
    pub forwarded_bytes: IntCounterVec,
    pub forwarded_packets: IntCounterVec,
    pub forward_flows: IntGauge,
    pub transit_flows: IntCounterVec,
    pub config_changes: IntCounterVec,
    pub netlink_overruns: IntCounter,
    pub bench_drained: IntCounter,
    pub selfcheck_canary_ok: IntGauge,
    pub selfcheck_canary_failures: IntCounter,
    pub selfcheck_canary_latency: prometheus::Gauge,
    pub selfcheck_canary_last_success: prometheus::Gauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

/// Registers a counter family `edgewatch_<name>` with these labels.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Registers a gauge family `edgewatch_<name>` with these labels.
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(opts(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name, help, labels: &[&str]| counter_vec(&registry, name, help, labels);
        let events = counter_vec("events_total", "Events written, by kind.", &["kind"]);
        let kernel_lost = counter_vec(
            "kernel_events_lost_total",
            "Events the kernel could not queue because the ring buffer was full, by kind (summed over CPUs).",
            &["kind"],
        );
        let kernel_errors = counter_vec(
            "kernel_errors_total",
            "Errors inside the eBPF programs, by reason (summed over CPUs).",
            &["reason"],
        );
        let decode_errors = counter_vec(
            "decode_errors_total",
            "Ring-buffer records that could not be decoded, by reason.",
            &["reason"],
        );
        let output_errors = counter_vec(
            "output_errors_total",
            "Events that could not be written to a sink, by sink.",
            &["sink"],
        );
        let output_dropped = counter_vec(
            "output_dropped_total",
            "Events not written because the writer was too far behind (its reader stalled), by kind.",
            &["kind"],
        );
        let net_opened = counter_vec(
            "net_connections_opened_total",
            "TCP connections established and UDP flows started, by protocol and direction.",
            &["proto", "direction"],
        );
        let net_closed = counter_vec(
            "net_connections_closed_total",
            "TCP connections and UDP flows ended, by protocol and direction.",
            &["proto", "direction"],
        );
        let net_sent_bytes = counter_vec(
            "net_sent_bytes_total",
            "Payload bytes sent by local sockets, by protocol (counted at flow updates and ends).",
            &["proto"],
        );
        let net_received_bytes = counter_vec(
            "net_received_bytes_total",
            "Payload bytes received by local sockets, by protocol (counted at flow updates and ends).",
            &["proto"],
        );
        let net_connect_results = counter_vec(
            "net_connect_results_total",
            "Outcomes of outbound TCP connection attempts.",
            &["result"],
        );
        let alerts = counter_vec(
            "alerts_total",
            "Alerts raised, by rule id and severity (repeat lines not counted).",
            &["rule", "severity"],
        );
        let alerts_deduplicated = counter_vec(
            "alerts_deduplicated_total",
            "Rule matches folded into an open alert of the same rule and lineage, by rule id.",
            &["rule"],
        );
        let alerts_rate_limited = counter_vec(
            "alerts_rate_limited_total",
            "Alerts a rule's rate limit held back, by rule id.",
            &["rule"],
        );
        let relays = counter_vec(
            "net_relays_total",
            "Relays detected (pairs of connections whose bytes pass from one to the other), by method (fingerprint, exchange, bulk, interactive, tunnel) and whether the proxy was declared (allowed).",
            &["method", "allowed"],
        );
        let forwarded_bytes = counter_vec(
            "forwarded_bytes_total",
            "IP bytes this machine forwarded (routed, not sent or received itself), by the roles of the interfaces in and out.",
            &["in_role", "out_role"],
        );
        let forwarded_packets = counter_vec(
            "forwarded_packets_total",
            "Packets this machine forwarded, by the roles of the interfaces in and out.",
            &["in_role", "out_role"],
        );
        let transit_flows = counter_vec(
            "transit_flows_total",
            "Forwarded flows that make the gateway a relay, by reason (hairpin, dnat_unpublished).",
            &["reason"],
        );
        let config_changes = counter_vec(
            "config_changes_total",
            "Configuration changes that enable relaying or sniffing, by type.",
            &["type"],
        );
        let rule_reloads = counter_vec(
            "rule_reloads_total",
            "Reloads of configuration and rules on SIGHUP, by result (ok, failed).",
            &["result"],
        );
        let gauge = |name, help| {
            let g = IntGauge::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name, help| {
            let c = IntCounter::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let process_table_entries =
            gauge("process_table_entries", "Processes in the process table.");
        let process_table_evictions = counter(
            "process_table_evictions_total",
            "Processes evicted from the full process table.",
        );
        let net_flow_table_entries = gauge(
            "net_flow_table_entries",
            "Connections and UDP flows in the flow table.",
        );
        let rules_loaded = gauge("rules_loaded", "Detection rules in use.");
        let tunnels = counter_vec(
            "net_tunnels_total",
            "Flows found carrying traffic inside another protocol, by carrier (dns, icmp, http) and whether the gateway forwards them.",
            &["protocol", "forwarded"],
        );
        let relay_pairs_examined = counter(
            "relay_pairs_examined_total",
            "Pairs of connections the relay detector judged.",
        );
        let relay_pairs_dropped = counter(
            "relay_pairs_dropped_total",
            "New pairs of connections not watched because the relay detector's watch list was full.",
        );
        let net_kernel_flows = gauge(
            "net_kernel_flows",
            "Flows in the kernel's counter map at the last sweep.",
        );
        let net_flow_table_evictions = counter(
            "net_flow_table_evictions_total",
            "Flows evicted from the full flow table.",
        );
        let forward_flows = gauge(
            "forward_flows",
            "Forwarded flows in the kernel's counter map at the last scan.",
        );
        let netlink_overruns = counter(
            "netlink_overruns_total",
            "Times the kernel dropped configuration-change notifications because the monitor's socket buffer was full.",
        );
        let selfcheck_canary_ok = gauge(
            "selfcheck_canary_ok",
            "1 when the last canary exec came back through the monitor's own pipeline in time, 0 when it did not.",
        );
        let selfcheck_canary_failures = counter(
            "selfcheck_canary_failures_total",
            "Canary execs the monitor's own pipeline did not see in time.",
        );
        let float_gauge = |name, help| {
            let g = prometheus::Gauge::with_opts(opts(name, help)).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let selfcheck_canary_latency = float_gauge(
            "selfcheck_canary_latency_seconds",
            "Time from starting the last canary to seeing its exec.",
        );
        let selfcheck_canary_last_success = float_gauge(
            "selfcheck_canary_last_success_timestamp_seconds",
            "Unix time of the last canary seen.",
        );
        let bench_drained = counter(
            "bench_events_drained_total",
            "Synthetic records of the benchmark producer drained (always 0 unless cargo xtask bench turned the producer on).",
        );
        let probe_attached = IntGaugeVec::new(
            opts(
                "probe_attached",
                "Whether each probe is attached (1) or not (0).",
            ),
            &["probe"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(probe_attached.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            opts("build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Every series of a closed label set exists from the start, so a
        // rate() over it is defined before the first increment.
        for k in Kind::ALL {
            events.with_label_values(&[k.as_str()]);
            output_dropped.with_label_values(&[k.as_str()]);
        }
        for (_, name) in crate::decode::KERNEL_KINDS {
            kernel_lost.with_label_values(&[name]);
        }
        for proto in Proto::ALL {
            for d in [Direction::Outbound, Direction::Inbound] {
                net_opened.with_label_values(&[proto.as_str(), d.as_str()]);
                net_closed.with_label_values(&[proto.as_str(), d.as_str()]);
            }
            net_sent_bytes.with_label_values(&[proto.as_str()]);
            net_received_bytes.with_label_values(&[proto.as_str()]);
        }
        for r in crate::net::CONNECT_RESULTS {
            net_connect_results.with_label_values(&[r]);
        }
        for r in KERNEL_ERROR_REASONS {
            kernel_errors.with_label_values(&[r]);
        }
        for r in DecodeError::ALL {
            decode_errors.with_label_values(&[r.as_str()]);
        }
        for s in SINKS {
            output_errors.with_label_values(&[s]);
        }
        for m in crate::event::relay::Method::ALL {
            for allowed in ["false", "true"] {
                relays.with_label_values(&[m.as_str(), allowed]);
            }
        }
        for c in crate::event::tunnel::Carrier::ALL {
            for forwarded in ["false", "true"] {
                tunnels.with_label_values(&[c.as_str(), forwarded]);
            }
        }
        for r in ["ok", "failed"] {
            rule_reloads.with_label_values(&[r]);
        }
        let roles = crate::event::forward::Role::ALL.map(|r| r.as_str());
        for i in roles.iter().chain(&["unknown"]) {
            for o in roles.iter().chain(&["unknown"]) {
                forwarded_bytes.with_label_values(&[i, o]);
                forwarded_packets.with_label_values(&[i, o]);
            }
        }
        for r in crate::event::forward::TransitReason::ALL {
            transit_flows.with_label_values(&[r.as_str()]);
        }
        for c in crate::event::config_change::Change::ALL {
            config_changes.with_label_values(&[c.as_str()]);
        }
        for p in PROBES {
            probe_attached.with_label_values(&[p.name]).set(0);
        }
        Self {
            registry,
            events,
            kernel_lost,
            kernel_errors,
            decode_errors,
            process_table_entries,
            process_table_evictions,
            probe_attached,
            output_errors,
            output_dropped,
            net_opened,
            net_closed,
            net_sent_bytes,
            net_received_bytes,
            net_connect_results,
            net_flow_table_entries,
            net_flow_table_evictions,
            net_kernel_flows,
            alerts,
            alerts_deduplicated,
            alerts_rate_limited,
            rules_loaded,
            rule_reloads,
            relays,
            tunnels,
            relay_pairs_examined,
            relay_pairs_dropped,
            forwarded_bytes,
            forwarded_packets,
            forward_flows,
            transit_flows,
            config_changes,
            netlink_overruns,
            bench_drained,
            selfcheck_canary_ok,
            selfcheck_canary_failures,
            selfcheck_canary_latency,
            selfcheck_canary_last_success,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Binds the metrics endpoint; separate from [`serve`] so a bind failure
/// is reported before the monitor says it is ready.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `GET /metrics` until the task is dropped: plain HTTP without a
/// web configuration, else as it says (TLS, basic authentication, headers,
/// rate limit).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, web: Option<Arc<WebConfig>>) {
    if let Some(web) = &web {
        tracing::info!(
            tls = web.tls.is_some(),
            basic_auth_users = web.user_names().len(),
            "metrics endpoint uses its web configuration"
        );
    }
    let tls = web
        .as_ref()
        .and_then(|w| w.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let web = web.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, metrics, web).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, metrics, web).await,
                        // A client's mistake, not the monitor's: not worth more.
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "metrics endpoint: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "metrics endpoint: TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS.
async fn serve_connection<S>(stream: S, metrics: Arc<Metrics>, web: Option<Arc<WebConfig>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let metrics = metrics.clone();
        let web = web.clone();
        async move {
            let Some(web) = web else {
                return Ok::<_, Infallible>(respond(&req, &metrics));
            };
            let authorization = req.headers().get(hyper::header::AUTHORIZATION).cloned();
            let checker = web.clone();
            // bcrypt takes tens of milliseconds: off the async workers.
            let admission =
                tokio::task::spawn_blocking(move || checker.admit(authorization.as_ref()))
                    .await
                    .unwrap_or(Admission::Unauthorized);
            let mut resp = match admission {
                Admission::Allowed => respond(&req, &metrics),
                Admission::RateLimited => status(StatusCode::TOO_MANY_REQUESTS),
                Admission::Unauthorized => {
                    let mut resp = status(StatusCode::UNAUTHORIZED);
                    resp.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        hyper::header::HeaderValue::from_static("Basic realm=\"edgewatch\""),
                    );
                    resp
                }
            };
            for (name, value) in &web.headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
            Ok(resp)
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A response with this status and its reason as the body.
fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let reason = code.canonical_reason().unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *resp.status_mut() = code;
    resp
}

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.method() != hyper::Method::GET {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        *resp.body_mut() = Full::new(Bytes::from_static(b"see /metrics\n"));
        return resp;
    }
    *resp.body_mut() = Full::new(Bytes::from(metrics.render()));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
    pub enabled: bool,
    /// TLS and basic authentication: a web configuration file in the
    /// Prometheus exporter-toolkit format. Unset: plain HTTP, no
    /// authentication.
    pub web_config_file: Option<toml::Spanned<std::path::PathBuf>>,
    /// What `web_config_file` says, read when the configuration is.
    #[serde(skip)]
    pub web: Option<std::sync::Arc<crate::web_config::WebConfig>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9810)),
            enabled: true,
            web_config_file: None,
            web: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_prefixed_and_present() {
        let m = Metrics::new();
        let text = String::from_utf8(m.render()).expect("utf8");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("edgewatch_"), "{line}");
        }
        for name in [
            "edgewatch_events_total{kind=\"exec\"} 0",
            "edgewatch_kernel_events_lost_total{kind=\"exec\"} 0",
            "edgewatch_decode_errors_total{reason=\"short\"} 0",
            "edgewatch_process_table_entries 0",
            "edgewatch_probe_attached{probe=\"process_sched_exec\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
