//! The web configuration of the metrics endpoint: TLS, basic
//! authentication, extra response headers and a rate limit, read at start
//! from a file in the Prometheus exporter-toolkit format
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>),
//! so an operator configures edgewatch as any Prometheus exporter.
//!
//! Where edgewatch cannot do what a key asks, the file is rejected with a
//! message saying so, never served in a weaker way than it reads.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    crypto::{ring as provider, CryptoProvider},
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use serde::Deserialize;

use crate::source::{line_col, FileError};

/// A string never printed, not even by `Debug`: a private key or a
/// password hash.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A bcrypt hash, checked when the file is read.
#[derive(Clone, PartialEq, Eq, Debug)]
struct BcryptHash(Secret);

impl<'de> Deserialize<'de> for BcryptHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // The message never quotes the value: it may be a password written
        // where its hash belongs.
        match s.parse::<bcrypt::HashParts>() {
            Ok(parts) if (4..=31).contains(&parts.get_cost()) => Ok(Self(Secret(s))),
            _ => Err(serde::de::Error::custom(
                "not a bcrypt hash ($2a$, $2b$ or $2y$, a cost from 4 to 31, then 53 characters); \
                 make one with `htpasswd -nBC 10 USER`",
            )),
        }
    }
}

/// The file as written. Every key exporter-toolkit documents is here;
/// unknown keys are errors.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Spec {
    tls_server_config: Option<TlsSpec>,
    http_server_config: Option<HttpSpec>,
    basic_auth_users: Option<BTreeMap<String, BcryptHash>>,
    rate_limit: Option<RateLimitSpec>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TlsSpec {
    cert: Option<String>,
    key: Option<Secret>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<ClientAuth>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<Curve>>,
}

/// Go's `tls.ClientAuthType` names, as exporter-toolkit takes them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
enum ClientAuth {
    #[serde(alias = "")]
    NoClientCert,
    RequestClientCert,
    #[serde(alias = "RequireClientCert")]
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    #[serde(rename = "TLS10")]
    Tls10,
    #[serde(rename = "TLS11")]
    Tls11,
    #[serde(rename = "TLS12")]
    Tls12,
    #[serde(rename = "TLS13")]
    Tls13,
}

/// Go's `tls.CurveID` names, as exporter-toolkit takes them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
enum Curve {
    CurveP256,
    CurveP384,
    CurveP521,
    X25519,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    /// A Go duration such as `1s` or `500ms`; 0 turns the limit off.
    interval: Option<String>,
    burst: Option<u32>,
}

/// The response headers exporter-toolkit lets a web config set, with the
/// values each accepts (empty: any).
const HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A web configuration, read and checked: what the metrics endpoint needs
/// to serve with it.
pub struct WebConfig {
    spec: Spec,
    /// TLS settings; `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    users: Option<Users>,
    limiter: Option<Limiter>,
}

/// Two configurations are equal when their files say the same; the
/// certificate files they name are not compared.
impl PartialEq for WebConfig {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

/// Names the users, never their hashes.
impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.user_names())
            .field("headers", &self.headers)
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

/// What the endpoint does with a request, from its web configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// 429: over the rate limit.
    RateLimited,
    /// 401: basic authentication is on and the credentials are missing or
    /// wrong.
    Unauthorized,
}

impl WebConfig {
    /// Reads and checks the file at `path`, and the certificate and key
    /// files it names (relative to the file's own folder).
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&name, &text, path.parent().unwrap_or(Path::new(".")))
    }

    /// Parses and checks web configuration text named `name`; relative
    /// paths in it are relative to `dir`.
    pub fn parse(name: &str, text: &str, dir: &Path) -> Result<Self, FileError> {
        let spec: Spec = if text.trim().is_empty() {
            Spec::default()
        } else {
            serde_norway::from_str(text).map_err(|e| yaml_error(name, text, &e))?
        };
        let content = |message: String| FileError::Content {
            path: name.to_owned(),
            message,
        };
        let tls = match &spec.tls_server_config {
            Some(t) => Some(Arc::new(server_config(t, dir).map_err(content)?)),
            None => None,
        };
        let http = spec.http_server_config.as_ref();
        let headers = headers(http.and_then(|h| h.headers.as_ref())).map_err(content)?;
        let limiter = match &spec.rate_limit {
            Some(r) => Limiter::new(r).map_err(content)?,
            None => None,
        };
        let users = spec
            .basic_auth_users
            .as_ref()
            .filter(|u| !u.is_empty())
            .map(|u| Users::new(u.clone()));
        Ok(Self {
            spec,
            tls,
            headers,
            users,
            limiter,
        })
    }

    /// The users of basic authentication; empty when it is off.
    pub fn user_names(&self) -> Vec<&str> {
        self.users.as_ref().map_or_else(Vec::new, |u| {
            u.hashes.keys().map(String::as_str).collect::<Vec<_>>()
        })
    }

    /// Decides on a request from its `Authorization` header. Blocks for as
    /// long as a bcrypt comparison takes (tens of milliseconds at cost 10)
    /// when the credentials were not seen before: call it off the async
    /// workers.
    pub fn admit(&self, authorization: Option<&HeaderValue>) -> Admission {
        if let Some(limiter) = &self.limiter {
            if !limiter.allow(Instant::now()) {
                return Admission::RateLimited;
            }
        }
        match &self.users {
            Some(users) if !users.check(authorization) => Admission::Unauthorized,
            _ => Admission::Allowed,
        }
    }
}

/// A YAML error at its line and column, without the location text the
/// parser appends itself.
fn yaml_error(name: &str, text: &str, e: &serde_norway::Error) -> FileError {
    let mut message = e.to_string();
    let Some(loc) = e.location() else {
        return FileError::Content {
            path: name.to_owned(),
            message,
        };
    };
    let suffix = format!(" at line {} column {}", loc.line(), loc.column());
    if let Some(i) = message.find(&suffix) {
        message.replace_range(i..i + suffix.len(), "");
    }
    let (line, col) = line_col(text, loc.index());
    FileError::Invalid {
        path: name.to_owned(),
        line,
        col,
        message: message.trim().replace('\n', " "),
    }
}

/// One PEM input that may be given inline (`cert`) or as a file
/// (`cert_file`), never both.
fn pem_input(
    inline: Option<&str>,
    file: Option<&Path>,
    keys: (&str, &str),
    dir: &Path,
) -> Result<Option<(Vec<u8>, String)>, String> {
    let (inline_key, file_key) = keys;
    let inline = inline.filter(|s| !s.is_empty());
    let file = file.filter(|p| !p.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: set {inline_key} or {file_key}, not both"
        )),
        (Some(text), None) => Ok(Some((
            text.as_bytes().to_vec(),
            format!("tls_server_config.{inline_key}"),
        ))),
        (None, Some(path)) => {
            let path = dir.join(path);
            let what = format!("tls_server_config.{file_key} {}", path.display());
            std::fs::read(&path)
                .map(|bytes| Some((bytes, what.clone())))
                .map_err(|e| format!("{what}: cannot read: {e}"))
        }
        (None, None) => Ok(None),
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The rustls settings a `tls_server_config` asks for.
fn server_config(tls: &TlsSpec, dir: &Path) -> Result<ServerConfig, String> {
    let (cert_pem, cert_what) = pem_input(
        tls.cert.as_deref(),
        tls.cert_file.as_deref(),
        ("cert", "cert_file"),
        dir,
    )?
    .ok_or("tls_server_config: cert_file (or cert) is missing")?;
    let key = tls.key.as_ref().map(|k| k.0.as_str());
    let (key_pem, key_what) = pem_input(key, tls.key_file.as_deref(), ("key", "key_file"), dir)?
        .ok_or("tls_server_config: key_file (or key) is missing")?;
    let certs = certificates(&cert_pem, &cert_what)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_what}: no PEM private key (PKCS #8, PKCS #1 or SEC1) in it: {e}")
    })?;

    let min = tls.min_version.unwrap_or(TlsVersion::Tls12);
    let max = tls.max_version.unwrap_or(TlsVersion::Tls13);
    if max < TlsVersion::Tls12 {
        return Err(format!(
            "tls_server_config.max_version: {max:?} is older than TLS12, the oldest version edgewatch speaks"
        ));
    }
    if min > max {
        return Err("tls_server_config: min_version is newer than max_version".to_owned());
    }
    // Below TLS 1.2 there is nothing to offer: a lower minimum means 1.2.
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if min <= TlsVersion::Tls12 {
        versions.push(&TLS12);
    }
    if max == TlsVersion::Tls13 {
        versions.push(&TLS13);
    }

    let mut crypto = provider::default_provider();
    if let Some(names) = tls.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        crypto.cipher_suites = cipher_suites(&crypto, names)?;
    }
    if let Some(curves) = tls.curve_preferences.as_ref().filter(|c| !c.is_empty()) {
        crypto.kx_groups = curves
            .iter()
            .map(|c| {
                match c {
                Curve::CurveP256 => Ok(provider::kx_group::SECP256R1),
                Curve::CurveP384 => Ok(provider::kx_group::SECP384R1),
                Curve::X25519 => Ok(provider::kx_group::X25519),
                Curve::CurveP521 => Err(
                    "tls_server_config.curve_preferences: CurveP521 is not available in edgewatch; \
                     use CurveP256, CurveP384 or X25519"
                        .to_owned(),
                ),
            }
            })
            .collect::<Result<_, _>>()?;
    }
    let crypto = Arc::new(crypto);

    let client_ca = pem_input(
        tls.client_ca.as_deref(),
        tls.client_ca_file.as_deref(),
        ("client_ca", "client_ca_file"),
        dir,
    )?;
    let auth = tls.client_auth_type.unwrap_or(ClientAuth::NoClientCert);
    if tls
        .client_allowed_sans
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(
            "tls_server_config.client_allowed_sans is not supported by edgewatch; \
             issue client certificates from a CA of their own instead"
                .to_owned(),
        );
    }
    let verifier = match (auth, client_ca) {
        (ClientAuth::NoClientCert, None) => None,
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(
                "tls_server_config: a client CA is set but client_auth_type is NoClientCert; \
                 set client_auth_type to RequireAndVerifyClientCert"
                    .to_owned(),
            )
        }
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {auth:?} takes client certificates without \
                 verifying them; edgewatch supports NoClientCert, VerifyClientCertIfGiven and \
                 RequireAndVerifyClientCert"
            ))
        }
        (_, None) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {auth:?} needs client_ca_file (or client_ca)"
            ))
        }
        (_, Some((pem, what))) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(&pem, &what)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
            }
            let builder = WebPkiClientVerifier::builder_with_provider(roots.into(), crypto.clone());
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .map_err(|e| format!("{what}: cannot verify clients with it: {e}"))?,
            )
        }
    };

    let builder = ServerConfig::builder_with_provider(crypto)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!("tls_server_config: the certificate and the key do not go together: {e}")
    })?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    // HTTP/1.1 only: the endpoint serves one small response per scrape.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS 1.2 suites named (Go names, which are the IANA names), in that
/// order, after every TLS 1.3 suite: exporter-toolkit's list, like Go's,
/// does not reach TLS 1.3.
fn cipher_suites(
    crypto: &CryptoProvider,
    names: &[String],
) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    // rustls spells the TLS 1.3 suites TLS13_*, Go and IANA TLS_*.
    let name_of =
        |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1);
    let mut chosen: Vec<_> = crypto
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &TLS13)
        .copied()
        .collect();
    for name in names {
        match crypto.cipher_suites.iter().find(|s| name_of(s) == *name) {
            Some(s) if s.version() == &TLS12 => chosen.push(*s),
            Some(_) => {}
            None => {
                let offered: Vec<String> = crypto
                    .cipher_suites
                    .iter()
                    .filter(|s| s.version() == &TLS12)
                    .map(name_of)
                    .collect();
                return Err(format!(
                    "tls_server_config.cipher_suites: {name} is not available in edgewatch; \
                     the TLS 1.2 suites are {}",
                    offered.join(", ")
                ));
            }
        }
    }
    Ok(chosen)
}

fn headers(
    spec: Option<&BTreeMap<String, String>>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for (name, value) in spec.into_iter().flatten() {
        let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "http_server_config.headers: {name} cannot be set; the headers are {}",
                HEADERS.map(|(n, _)| n).join(", ")
            ));
        };
        // A blank value leaves the header unset, as exporter-toolkit does.
        if value.is_empty() {
            continue;
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers: {name} must be one of {}, not {value:?}",
                allowed.join(", ")
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("http_server_config.headers: {name}: not a valid header value"))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("http_server_config.headers: {name}: not a header name"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// Basic authentication against bcrypt hashes.
struct Users {
    hashes: BTreeMap<String, BcryptHash>,
    /// One bcrypt comparison at a time: each costs tens of milliseconds of
    /// CPU, so a flood of guesses takes at most one core from the monitor.
    bcrypt: Mutex<()>,
    /// SHA-256 of credentials that passed, so Prometheus scraping every few
    /// seconds costs one bcrypt comparison, not one per scrape.
    passed: Mutex<HashSet<[u8; 32]>>,
}

/// Credentials remembered as passed before the memory is cleared.
const PASSED_MAX: usize = 64;

impl Users {
    fn new(hashes: BTreeMap<String, BcryptHash>) -> Self {
        Self {
            hashes,
            bcrypt: Mutex::new(()),
            passed: Mutex::new(HashSet::new()),
        }
    }

    fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        // An unknown user costs a bcrypt comparison too, so timing does
        // not tell which users exist.
        let (known, hash) = match self.hashes.get(&user) {
            Some(h) => (true, h),
            None => match self.hashes.values().next() {
                Some(h) => (false, h),
                None => return false,
            },
        };
        let digest = credential_digest(&user, &password, &hash.0 .0);
        let mut passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
        if known && passed.contains(&digest) {
            return true;
        }
        drop(passed);
        let ok = {
            let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(PoisonError::into_inner);
            bcrypt::verify(&password, &hash.0 .0).unwrap_or(false)
        } && known;
        if ok {
            passed = self.passed.lock().unwrap_or_else(PoisonError::into_inner);
            if passed.len() >= PASSED_MAX {
                passed.clear();
            }
            passed.insert(digest);
        }
        ok
    }
}

fn credential_digest(user: &str, password: &[u8], hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Lengths first, so no two different triples hash the same bytes.
    for part in [user.as_bytes(), password, hash.as_bytes()] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The user and password of a `Basic` authorization header (RFC 7617).
fn basic_credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// A token bucket: `burst` requests at once, then one per `every`.
struct Limiter {
    every: Duration,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(spec: &RateLimitSpec) -> Result<Option<Self>, String> {
        let every = match spec.interval.as_deref().map(str::trim) {
            None | Some("" | "0") => return Ok(None),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                format!("rate_limit.interval: {text:?} is not a duration such as 1s or 500ms: {e}")
            })?,
        };
        if every.is_zero() {
            return Ok(None);
        }
        let burst = spec.burst.unwrap_or(0);
        if burst == 0 {
            return Err("rate_limit.burst must be at least 1 when rate_limit.interval is set (0 would refuse every request)".to_owned());
        }
        let burst = f64::from(burst);
        Ok(Some(Self {
            every,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }))
    }

    fn allow(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let earned = now.saturating_duration_since(*last).as_secs_f64() / self.every.as_secs_f64();
        *tokens = (*tokens + earned).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "edgewatch-web-config-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).expect("write");
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A folder holding a self-signed `cert.pem` and its `key.pem`.
    fn with_cert() -> Dir {
        let dir = Dir::new();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        dir.write("cert.pem", &ck.cert.pem());
        dir.write("key.pem", &ck.signing_key.serialize_pem());
        dir
    }

    fn parse_in(dir: &Dir, text: &str) -> Result<WebConfig, FileError> {
        WebConfig::parse("web.yml", text, &dir.0)
    }

    fn parse_err(dir: &Dir, text: &str) -> String {
        parse_in(dir, text).expect_err("invalid").to_string()
    }

    const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    }

    #[test]
    fn empty_file_serves_plain_http_without_authentication() {
        let dir = Dir::new();
        let web = parse_in(&dir, "").expect("valid");
        assert!(web.tls.is_none());
        assert!(web.headers.is_empty());
        assert_eq!(web.admit(None), Admission::Allowed);
        let web = parse_in(&dir, "basic_auth_users: {}\n").expect("valid");
        assert_eq!(web.admit(None), Admission::Allowed);
    }

    #[test]
    fn tls_with_files_relative_to_the_web_config() {
        let dir = with_cert();
        let web = parse_in(&dir, TLS).expect("valid");
        let tls = web.tls.as_ref().expect("tls on");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(tls.ignore_client_order);
    }

    #[test]
    fn inline_cert_and_key_work_and_cannot_be_doubled() {
        let dir = with_cert();
        let indent = |name: &str| {
            std::fs::read_to_string(dir.0.join(name))
                .expect("read")
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        };
        let text = format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}",
            indent("cert.pem"),
            indent("key.pem")
        );
        assert!(parse_in(&dir, &text).expect("valid").tls.is_some());
        let err = parse_err(&dir, &format!("{text}  cert_file: cert.pem\n"));
        assert_eq!(
            err,
            "web.yml: tls_server_config: set cert or cert_file, not both"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_at_their_line_and_column() {
        let dir = with_cert();
        let err = parse_err(&dir, &format!("{TLS}  bogus: 1\n"));
        assert!(
            err.starts_with("web.yml:4:3: tls_server_config: unknown field `bogus`"),
            "{err}"
        );
        let err = parse_err(&dir, "basic_auth_user:\n  a: b\n");
        assert!(
            err.starts_with("web.yml:1:1: unknown field `basic_auth_user`"),
            "{err}"
        );
        assert!(!err.contains("at line"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_at_their_line_and_column() {
        let dir = with_cert();
        let err = parse_err(&dir, &format!("{TLS}  min_version: TLS14\n"));
        assert!(
            err.starts_with("web.yml:4:16: tls_server_config.min_version: unknown variant `TLS14`"),
            "{err}"
        );
        let err = parse_err(&dir, &format!("{TLS}  client_auth_type: Sometimes\n"));
        assert!(err.starts_with("web.yml:4:21: "), "{err}");
        let err = parse_err(&dir, "tls_server_config: [1]\n");
        assert!(err.starts_with("web.yml:1:20: "), "{err}");
        let err = parse_err(&dir, "basic_auth_users:\n  alice: [\n");
        assert!(
            err.starts_with("web.yml:2:10: basic_auth_users.alice: invalid type"),
            "{err}"
        );
        let err = parse_err(&dir, "basic_auth_users:\n  alice: 'open\n");
        assert!(err.starts_with("web.yml:3:1: "), "{err}");
    }

    #[test]
    fn a_password_where_its_hash_belongs_is_rejected_without_echoing_it() {
        let dir = Dir::new();
        let err = parse_err(&dir, "basic_auth_users:\n  alice: hunter2-secret\n");
        assert!(
            err.starts_with("web.yml:2:3: basic_auth_users: not a bcrypt hash"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        // A cost bcrypt does not allow.
        let hash = bcrypt::hash("pw", 4)
            .expect("hash")
            .replacen("$04$", "$03$", 1);
        let err = parse_err(&dir, &format!("basic_auth_users:\n  alice: \"{hash}\"\n"));
        assert!(err.contains("not a bcrypt hash"), "{err}");
    }

    #[test]
    fn missing_and_unreadable_files_are_named() {
        let dir = with_cert();
        let err = parse_err(&dir, "tls_server_config:\n  key_file: key.pem\n");
        assert_eq!(
            err,
            "web.yml: tls_server_config: cert_file (or cert) is missing"
        );
        let err = parse_err(&dir, "tls_server_config:\n  cert_file: cert.pem\n");
        assert_eq!(
            err,
            "web.yml: tls_server_config: key_file (or key) is missing"
        );
        let err = parse_err(
            &dir,
            "tls_server_config:\n  cert_file: nope.pem\n  key_file: key.pem\n",
        );
        assert!(
            err.starts_with("web.yml: tls_server_config.cert_file "),
            "{err}"
        );
        assert!(err.contains("nope.pem: cannot read: "), "{err}");
        let err = parse_err(
            &dir,
            "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n",
        );
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let err = parse_err(
            &dir,
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: cert.pem\n",
        );
        assert!(err.contains("no PEM private key"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificate_s_is_rejected() {
        let dir = with_cert();
        let other = rcgen::KeyPair::generate().expect("key");
        dir.write("other.pem", &other.serialize_pem());
        let err = parse_err(
            &dir,
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: other.pem\n",
        );
        assert!(err.contains("do not go together"), "{err}");
    }

    #[test]
    fn versions_suites_and_curves() {
        let dir = with_cert();
        let ok = |extra: &str| {
            parse_in(&dir, &format!("{TLS}{extra}")).unwrap_or_else(|e| panic!("{extra}: {e}"))
        };
        ok("  min_version: TLS13\n");
        ok("  min_version: TLS10\n  max_version: TLS12\n");
        ok("  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n");
        ok("  curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n");
        let err = parse_err(&dir, &format!("{TLS}  max_version: TLS11\n"));
        assert!(err.contains("older than TLS12"), "{err}");
        let err = parse_err(
            &dir,
            &format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
        );
        assert!(
            err.contains("min_version is newer than max_version"),
            "{err}"
        );
        let err = parse_err(
            &dir,
            &format!("{TLS}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
        );
        assert!(
            err.contains("TLS_RSA_WITH_RC4_128_SHA is not available"),
            "{err}"
        );
        assert!(
            err.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "{err}"
        );
        let err = parse_err(&dir, &format!("{TLS}  curve_preferences: [CurveP521]\n"));
        assert!(err.contains("CurveP521 is not available"), "{err}");
    }

    #[test]
    fn client_certificates_are_verified_or_refused() {
        let dir = with_cert();
        let ok = parse_in(
            &dir,
            &format!(
                "{TLS}  client_ca_file: cert.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
            ),
        );
        ok.expect("valid");
        let ok = parse_in(
            &dir,
            &format!(
                "{TLS}  client_ca_file: cert.pem\n  client_auth_type: VerifyClientCertIfGiven\n"
            ),
        );
        ok.expect("valid");
        let err = parse_err(&dir, &format!("{TLS}  client_ca_file: cert.pem\n"));
        assert!(err.contains("client_auth_type is NoClientCert"), "{err}");
        let err = parse_err(
            &dir,
            &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
        );
        assert!(err.contains("needs client_ca_file"), "{err}");
        for unverified in [
            "RequestClientCert",
            "RequireAnyClientCert",
            "RequireClientCert",
        ] {
            let err = parse_err(
                &dir,
                &format!("{TLS}  client_ca_file: cert.pem\n  client_auth_type: {unverified}\n"),
            );
            assert!(err.contains("without verifying them"), "{err}");
        }
        let err = parse_err(
            &dir,
            &format!("{TLS}  client_ca_file: cert.pem\n  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [a]\n"),
        );
        assert!(
            err.contains("client_allowed_sans is not supported"),
            "{err}"
        );
    }

    #[test]
    fn headers_are_checked_as_exporter_toolkit_does() {
        let dir = Dir::new();
        let web = parse_in(
            &dir,
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'none'\"\n    X-XSS-Protection: \"\"\n",
        )
        .expect("valid");
        let names: Vec<&str> = web.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-security-policy", "x-frame-options"]);
        let err = parse_err(
            &dir,
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        );
        assert!(
            err.contains("X-Frame-Options must be one of deny, sameorigin"),
            "{err}"
        );
        let err = parse_err(&dir, "http_server_config:\n  headers:\n    Server: x\n");
        assert!(err.contains("Server cannot be set"), "{err}");
    }

    #[test]
    fn basic_auth_takes_only_the_right_password_of_a_known_user() {
        let dir = Dir::new();
        let hash = bcrypt::hash("right horse", 4).expect("hash");
        let web = parse_in(
            &dir,
            &format!("basic_auth_users:\n  alice: '{hash}'\n  bob: '{hash}'\n"),
        )
        .expect("valid");
        assert_eq!(web.user_names(), ["alice", "bob"]);
        assert_eq!(
            web.admit(Some(&basic("alice", "right horse"))),
            Admission::Allowed
        );
        // Again, from the memory of passed credentials.
        assert_eq!(
            web.admit(Some(&basic("alice", "right horse"))),
            Admission::Allowed
        );
        assert_eq!(
            web.admit(Some(&basic("alice", "wrong horse"))),
            Admission::Unauthorized
        );
        assert_eq!(
            web.admit(Some(&basic("alice", ""))),
            Admission::Unauthorized
        );
        assert_eq!(
            web.admit(Some(&basic("carol", "right horse"))),
            Admission::Unauthorized
        );
        assert_eq!(web.admit(None), Admission::Unauthorized);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(web.admit(Some(&bearer)), Admission::Unauthorized);
        let garbage = HeaderValue::from_static("Basic !!!");
        assert_eq!(web.admit(Some(&garbage)), Admission::Unauthorized);
        let no_colon = HeaderValue::from_static("Basic YWxpY2U=");
        assert_eq!(web.admit(Some(&no_colon)), Admission::Unauthorized);
        // The scheme is case-insensitive (RFC 7617).
        let lower = HeaderValue::from_str(
            &basic("bob", "right horse")
                .to_str()
                .expect("ascii")
                .replacen("Basic", "basic", 1),
        )
        .expect("header");
        assert_eq!(web.admit(Some(&lower)), Admission::Allowed);
    }

    #[test]
    fn debug_output_never_shows_a_hash_or_key() {
        let dir = with_cert();
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let key = std::fs::read_to_string(dir.0.join("key.pem")).expect("key");
        let key_body: String = key.lines().nth(1).expect("key line").to_owned();
        let text = format!("{TLS}basic_auth_users:\n  alice: '{hash}'\n");
        let web = parse_in(&dir, &text).expect("valid");
        let shown = format!("{web:?} {:?}", web.spec);
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains(&hash), "{shown}");
        assert!(!shown.contains(&key_body), "{shown}");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_one_per_interval() {
        let dir = Dir::new();
        let web = parse_in(&dir, "rate_limit:\n  interval: 1h\n  burst: 2\n").expect("valid");
        assert_eq!(web.admit(None), Admission::Allowed);
        assert_eq!(web.admit(None), Admission::Allowed);
        assert_eq!(web.admit(None), Admission::RateLimited);
        let limiter = Limiter::new(&RateLimitSpec {
            interval: Some("10s".to_owned()),
            burst: Some(1),
        })
        .expect("valid")
        .expect("on");
        let t0 = Instant::now();
        assert!(limiter.allow(t0));
        assert!(!limiter.allow(t0 + Duration::from_secs(5)));
        assert!(limiter.allow(t0 + Duration::from_secs(11)));
        let off = parse_in(&dir, "rate_limit:\n  interval: 0\n  burst: 0\n").expect("valid");
        assert!(off.limiter.is_none());
        let err = parse_err(&dir, "rate_limit:\n  interval: 1s\n");
        assert!(err.contains("burst must be at least 1"), "{err}");
        let err = parse_err(&dir, "rate_limit:\n  interval: soon\n  burst: 1\n");
        assert!(err.contains("rate_limit.interval: \"soon\""), "{err}");
    }
}
