//! The metrics endpoint with a web configuration (exporter-toolkit format):
//! the real monitor serves HTTPS with certificates openssl made for the
//! test and basic auth with a hash htpasswd made; curl and a real
//! Prometheus scrape it, with the right credentials and with wrong ones.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{free_port, is_root, monitor_bin, scratch_dir, spawn_prometheus, wait_for, Monitor};

const QUIET: &str = "[output]\nseed_events = false\n[network]\nseed_events = false\n";
const USER: &str = "prom";
const PASSWORD: &str = "correct horse battery";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and
/// a client certificate it signed, made by openssl in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    let key = |name: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ])
    };
    key("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=edgewatch test CA",
        "-days",
        "1",
        "-out",
        "ca.pem",
    ]);
    for (name, subject, ext) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "/CN=prometheus",
            "subjectAltName=DNS:prometheus\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        key(&format!("{name}.key"));
        openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// The bcrypt hash htpasswd makes of `password`, as the README says to.
fn bcrypt_hash(password: &str) -> String {
    let out = run(Command::new("htpasswd").args(["-nbBC", "10", USER, password]));
    let line = String::from_utf8(out.stdout).expect("utf8");
    let hash = line
        .trim()
        .strip_prefix(&format!("{USER}:"))
        .expect("user:hash");
    assert!(hash.starts_with("$2y$10$"), "{hash}");
    hash.to_owned()
}

/// A scratch dir with certificates and `web.yml` holding `tls_extra` under
/// `tls_server_config` and the test user.
fn web_config(name: &str, tls_extra: &str) -> PathBuf {
    let dir = scratch_dir(name);
    make_certificates(&dir);
    // Relative paths: the monitor takes them from the web config's folder.
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{tls_extra}\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  {USER}: '{}'\n",
            bcrypt_hash(PASSWORD)
        ),
    )
    .expect("write web.yml");
    dir
}

fn start(dir: &Path) -> Monitor {
    Monitor::start_with(&format!(
        "web_config_file = {:?}\n{QUIET}",
        dir.join("web.yml").display().to_string()
    ))
}

/// What curl got: its exit code, the status, the headers and the body.
struct Reply {
    exit: i32,
    status: u16,
    head: String,
    body: String,
}

fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

#[test]
fn https_with_basic_auth_serves_only_the_right_credentials() {
    if !is_root("https_with_basic_auth_serves_only_the_right_credentials") {
        return;
    }
    let dir = web_config("web-https", "");
    let m = start(&dir);
    let url = format!("https://{}/metrics", m.metrics_addr);
    let ca = dir.join("ca.pem").display().to_string();
    let right = format!("{USER}:{PASSWORD}");

    let ok = curl(&["--cacert", &ca, "-u", &right, &url]);
    assert_eq!((ok.exit, ok.status), (0, 200), "{}", ok.head);
    assert!(ok.body.contains("edgewatch_build_info{"), "{}", ok.body);
    assert!(
        ok.head.contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );
    // Again: the second scrape is served from the memory of passed
    // credentials, and must still be served.
    assert_eq!(curl(&["--cacert", &ca, "-u", &right, &url]).status, 200);

    let wrong = format!("{USER}:not the password");
    for (what, args) in [
        ("wrong password", vec!["--cacert", &ca, "-u", &wrong, &url]),
        ("unknown user", vec!["--cacert", &ca, "-u", "root:x", &url]),
        ("no credentials", vec!["--cacert", &ca, &url]),
    ] {
        let r = curl(&args);
        assert_eq!((r.exit, r.status), (0, 401), "{what}: {}", r.head);
        assert!(
            r.head.contains("www-authenticate: basic"),
            "{what}: {}",
            r.head
        );
        assert!(!r.body.contains("edgewatch_"), "{what}: {}", r.body);
    }

    // The server is the one the test's CA signed: without that CA curl
    // refuses it.
    let untrusted = curl(&["-u", &right, &url]);
    assert_eq!(untrusted.exit, 60, "{}", untrusted.head);

    // Plain HTTP to the TLS port gets no HTTP answer at all.
    let plain = curl(&["-u", &right, &format!("http://{}/metrics", m.metrics_addr)]);
    assert_ne!(plain.exit, 0, "plain HTTP was answered: {}", plain.head);
    assert_eq!(plain.status, 0, "{}", plain.head);
    assert!(!plain.body.contains("edgewatch_"), "{}", plain.body);

    let log = m.stderr().join("\n");
    for secret in [PASSWORD, "not the password", "$2y$"] {
        assert!(!log.contains(secret), "the log shows {secret:?}:\n{log}");
    }
    assert!(
        log.contains("metrics endpoint uses its web configuration"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_certificates_and_tls_versions_are_enforced() {
    if !is_root("client_certificates_and_tls_versions_are_enforced") {
        return;
    }
    let dir = web_config(
        "web-mtls",
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS13\n",
    );
    let m = start(&dir);
    let url = format!("https://{}/metrics", m.metrics_addr);
    let right = format!("{USER}:{PASSWORD}");
    let path = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let with_cert = [
        "--cacert", &ca, "--cert", &cert, "--key", &key, "-u", &right,
    ];

    let ok = curl(&[&with_cert[..], &[url.as_str()]].concat());
    assert_eq!((ok.exit, ok.status), (0, 200), "{}", ok.head);
    let no_cert = curl(&["--cacert", &ca, "-u", &right, &url]);
    assert_eq!(no_cert.status, 0, "served without a client certificate");
    assert_ne!(no_cert.exit, 0);
    let tls12 = curl(&[&with_cert[..], &["--tls-max", "1.2", url.as_str()]].concat());
    assert_eq!(tls12.status, 0, "served over TLS 1.2 below min_version");
    assert_ne!(tls12.exit, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PromQL instant query's result vector, through curl.
fn promql(prometheus: &str, query: &str) -> Vec<Value> {
    let r = curl(&[
        "-G",
        &format!("http://{prometheus}/api/v1/query"),
        "--data-urlencode",
        &format!("query={query}"),
    ]);
    assert_eq!(r.status, 200, "{}{}", r.head, r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    if !is_root("prometheus_scrapes_over_tls_with_basic_auth") {
        return;
    }
    let dir = web_config("web-prometheus", "");
    let m = start(&dir);
    let target = &m.metrics_addr;
    let ca = dir.join("ca.pem").display().to_string();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n\
             \x20   basic_auth:\n      username: {USER}\n      password: '{password}'\n\
             \x20   static_configs:\n      - targets: [\"{target}\"]\n"
        )
    };
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
            job("right", PASSWORD),
            job("wrong", "guess")
        ),
    )
    .expect("write prometheus.yml");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut prometheus = spawn_prometheus(&config, &dir.join("data"), &addr);
    let ready = format!("http://{addr}/-/ready");
    wait_for("prometheus ready", Duration::from_secs(60), || {
        if let Ok(Some(status)) = prometheus.0.try_wait() {
            panic!("prometheus exited before it was ready: {status}");
        }
        (curl(&[&ready]).status == 200).then_some(())
    });

    // The right credentials give samples of the monitor's own metrics.
    wait_for(
        "Prometheus scraped edgewatch over TLS",
        Duration::from_secs(60),
        || {
            let r = promql(&addr, "edgewatch_build_info{job=\"right\"}");
            (!r.is_empty()).then_some(())
        },
    );
    let up = promql(&addr, "up{job=\"right\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // The wrong password: the scrape fails with 401 and gets no samples.
    let error = wait_for(
        "the wrong job's scrape error",
        Duration::from_secs(60),
        || {
            let r = curl(&[&format!("http://{addr}/api/v1/targets")]);
            let v: Value = serde_json::from_str(&r.body).ok()?;
            v["data"]["activeTargets"]
                .as_array()?
                .iter()
                .find(|t| t["labels"]["job"] == "wrong")
                .and_then(|t| t["lastError"].as_str())
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
        },
    );
    assert!(error.contains("401"), "{error}");
    assert_eq!(promql(&addr, "up{job=\"wrong\"}")[0]["value"][1], "0");
    assert!(promql(&addr, "edgewatch_build_info{job=\"wrong\"}").is_empty());
    drop(prometheus);
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_web_config_stops_the_start_with_exit_code_2() {
    if !is_root("a_bad_web_config_stops_the_start_with_exit_code_2") {
        return;
    }
    let dir = scratch_dir("web-bad");
    let web = dir.join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prom: plain-password\n").expect("write");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\nweb_config_file = {:?}\n",
            web.display().to_string()
        ),
    )
    .expect("write");
    let out = Command::new(monitor_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run monitor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("monitor: error: {}:2:3: ", web.display())),
        "{stderr}"
    );
    assert!(lines[0].contains("not a bcrypt hash"), "{stderr}");
    assert!(!stderr.contains("plain-password"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
