//! The export stage: the Prometheus registry every stage registers its own
//! metrics on, and the HTTP endpoint that serves them. Names follow
//! `edgewatch_<area>_<name>_<unit>_total`; every label value comes from a
//! closed set, and every series of it exists from the start.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder as _, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

use crate::web_config::{Admission, WebConfig};

/// Namespace prefix of every metric.
pub const NAMESPACE: &str = "edgewatch";

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// Registers a counter family `edgewatch_<name>` with these labels.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(opts(name, help), labels).expect("valid metric"),
    )
}

/// Registers a gauge family `edgewatch_<name>` with these labels.
pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(opts(name, help), labels).expect("valid metric"),
    )
}

/// Registers a counter `edgewatch_<name>`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::with_opts(opts(name, help)).expect("valid metric"),
    )
}

/// Registers a gauge `edgewatch_<name>`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::with_opts(opts(name, help)).expect("valid metric"),
    )
}

/// Registers a gauge `edgewatch_<name>` of fractional values.
pub fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(
        registry,
        Gauge::with_opts(opts(name, help)).expect("valid metric"),
    )
}

/// A registry with the monitor's own build information; each stage
/// registers its metrics on it.
pub fn registry() -> Registry {
    let registry = Registry::new();
    gauge_vec(
        &registry,
        "build_info",
        "Build information; always 1.",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    registry
}

/// The text exposition of every metric of `registry`.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    buf
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
pub async fn serve(listener: TcpListener, metrics: Registry, web: Option<Arc<WebConfig>>) {
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
async fn serve_connection<S>(stream: S, metrics: Registry, web: Option<Arc<WebConfig>>)
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

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Registry) -> Response<Full<Bytes>> {
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
    *resp.body_mut() = Full::new(Bytes::from(render(metrics)));
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
    fn the_registry_says_which_build_it_is() {
        let text = String::from_utf8(render(&registry())).expect("utf8");
        assert!(
            text.contains(&format!(
                "edgewatch_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
