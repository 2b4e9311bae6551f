//! A small HTTP/1.1 client for the Alertmanager and webhook sinks, on the
//! hyper the metrics endpoint already uses: one connection per delivery
//! (alerts are rare), a deadline on the whole exchange, and the status
//! sorted into retry or give up.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::DeliveryError;

/// Most of a response body that is read (and quoted in an error).
const RESPONSE_BYTES_MAX: usize = 4096;

/// Where a sink posts: an `http://` URL, checked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    uri: Uri,
    host: String,
    port: u16,
}

impl HttpTarget {
    /// Parses an `http://HOST[:PORT][/PATH]` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("alerts.sink: invalid URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "alerts.sink: URL {url:?} must start with http:// (for TLS, put a local proxy in front)"
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("alerts.sink: URL {url:?} has no host"))?;
        // Bracketed IPv6 literals connect without the brackets.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self { uri, host, port })
    }

    /// Appends `suffix` to the URL's path (`/api/v2/alerts` to a base URL).
    pub fn append_path(&mut self, suffix: &str) {
        let path = self.uri.path().trim_end_matches('/');
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = format!("{path}{suffix}").parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            self.uri = uri;
        }
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// POSTs a JSON body; a 2xx status is success.
    pub async fn post_json(
        &self,
        body: Vec<u8>,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        tokio::time::timeout(timeout, self.exchange(body, headers))
            .await
            .map_err(|_| DeliveryError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<(), DeliveryError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(DeliveryError::Http)?;
        let conn = tokio::spawn(conn);
        let authority = self
            .uri
            .authority()
            .map_or_else(|| self.host.clone(), |a| a.as_str().to_owned());
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut req = Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("edgewatch/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| DeliveryError::Request(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(DeliveryError::Http)?;
        let status = resp.status();
        let mut text = Vec::new();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                text.extend_from_slice(data);
                if text.len() >= RESPONSE_BYTES_MAX {
                    text.truncate(RESPONSE_BYTES_MAX);
                    break;
                }
            }
        }
        conn.abort();
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&text).trim().replace('\n', " ");
        Err(DeliveryError::Status {
            status,
            body: text,
            permanent: is_permanent(status),
        })
    }
}

/// A client error other than timeouts and throttling: sending the same
/// alert again would be refused again.
fn is_permanent(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let t = HttpTarget::parse("http://am.example.net").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("am.example.net", 80));
        let mut t = HttpTarget::parse("http://[::1]:9093/prefix/").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9093));
        t.append_path("/api/v2/alerts");
        assert_eq!(
            t.uri().to_string(),
            "http://[::1]:9093/prefix/api/v2/alerts"
        );
        assert!(HttpTarget::parse("https://am.example.net").is_err());
        assert!(HttpTarget::parse("am.example.net:9093").is_err());
        assert!(HttpTarget::parse("http://").is_err());
    }

    #[test]
    fn only_final_client_errors_are_permanent() {
        assert!(is_permanent(StatusCode::BAD_REQUEST));
        assert!(is_permanent(StatusCode::NOT_FOUND));
        assert!(!is_permanent(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_permanent(StatusCode::REQUEST_TIMEOUT));
        assert!(!is_permanent(StatusCode::SERVICE_UNAVAILABLE));
    }
}
