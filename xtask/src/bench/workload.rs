//! The workloads, each bounded in time, each returning a rate.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// fork+exec of a static program that exits at once, as fast as one
/// thread can; execs per second.
pub fn exec_storm(program: &Path, secs: f64) -> Result<f64> {
    let (n, elapsed) = exec_count(program, secs)?;
    Ok(n as f64 / elapsed)
}

/// Runs `program` again and again for `secs`; how many times, and the
/// seconds it took.
pub fn exec_count(program: &Path, secs: f64) -> Result<(u64, f64)> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let status = Command::new(program).status()?;
        if !status.success() {
            bail!("{} failed: {status}", program.display());
        }
        n += 1;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

/// TCP connect, accept, close on loopback; connections per second.
pub fn connect_storm(secs: f64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let acceptor = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.load(Ordering::Relaxed) {
                break;
            }
            drop(conn);
        }
    });
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let mut c = TcpStream::connect(addr)?;
        // Wait for the server's close so each connection completes.
        let mut b = [0u8; 1];
        let _ = c.read(&mut b);
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(addr).and_then(|mut c| c.write_all(b"x"));
    let _ = acceptor.join();
    Ok(rate)
}

/// Three namespaces: a client, a router (where the monitor's TC programs
/// watch), a server. Private addresses only, never routed out.
pub struct Topology {
    pub client: String,
    pub router: String,
    pub server: String,
    iperf: std::process::Child,
}

pub const SERVER: &str = "10.88.2.2";

fn ip(args: &str) -> Result<()> {
    let status = Command::new("ip").args(args.split_whitespace()).status()?;
    if !status.success() {
        bail!("ip {args} failed");
    }
    Ok(())
}

impl Topology {
    pub fn new() -> Result<Self> {
        let tag = std::process::id() % 100_000;
        let (client, router, server) = (
            format!("ewbc{tag}"),
            format!("ewbr{tag}"),
            format!("ewbs{tag}"),
        );
        for ns in [&client, &router, &server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            ip(&format!("netns add {ns}"))?;
            ip(&format!("-n {ns} link set lo up"))?;
        }
        for (dev, peer, r_addr, p_addr) in [
            ("wan0", &client, "10.88.1.1/24", "10.88.1.2/24"),
            ("lan0", &server, "10.88.2.1/24", "10.88.2.2/24"),
        ] {
            ip(&format!(
                "link add {dev} netns {router} type veth peer name eth0 netns {peer}"
            ))?;
            ip(&format!("-n {router} addr add {r_addr} dev {dev}"))?;
            ip(&format!("-n {router} link set {dev} up"))?;
            ip(&format!("-n {peer} addr add {p_addr} dev eth0"))?;
            ip(&format!("-n {peer} link set eth0 up"))?;
            let via = r_addr.split('/').next().unwrap_or_default();
            ip(&format!("-n {peer} route add default via {via}"))?;
        }
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()?;
        if !status.success() {
            bail!("enabling forwarding in {router}");
        }
        let iperf = Command::new("ip")
            .args(["netns", "exec", &server, "iperf3", "-s", "-B", SERVER])
            .stdout(Stdio::null())
            .spawn()
            .context("iperf3 (apt-get install iperf3)")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            client,
            router,
            server,
            iperf,
        })
    }

    /// The monitor's `[dataplane]` section for the router.
    pub fn dataplane_config(&self) -> String {
        format!(
            "[dataplane]\nnetns = \"/run/netns/{}\"\ninterfaces = [{{ name = \"wan0\", role = \"wan\" }}, {{ name = \"lan0\", role = \"lan\" }}]\n",
            self.router
        )
    }

    fn iperf(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.client,
                "iperf3",
                "-c",
                SERVER,
                "--json",
            ])
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("iperf3 {args:?}: {text}");
        }
        Ok(text)
    }

    /// TCP through the router; received bits per second.
    pub fn tcp(&self, secs: f64) -> Result<f64> {
        let json = self.iperf(&["-t", &format!("{secs}")])?;
        json_number(&json, "sum_received", "bits_per_second")
    }

    /// 64-byte UDP datagrams as fast as the client sends them; datagrams
    /// per second that reached the server.
    pub fn udp(&self, secs: f64) -> Result<f64> {
        let json = self.iperf(&["-u", "-b", "0", "-l", "64", "-t", &format!("{secs}")])?;
        let packets = json_number(&json, "\"sum\"", "packets")?;
        let lost = json_number(&json, "\"sum\"", "lost_packets")?;
        let seconds = json_number(&json, "\"sum\"", "seconds")?;
        Ok((packets - lost) / seconds.max(0.001))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.iperf.kill();
        let _ = self.iperf.wait();
        for ns in [&self.client, &self.router, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The first number `key` after the last occurrence of `section` in
/// iperf3's JSON (the end-of-test summary comes last).
fn json_number(json: &str, section: &str, key: &str) -> Result<f64> {
    let at = json
        .rfind(section)
        .with_context(|| format!("iperf3 output lacks {section}"))?;
    let pat = format!("\"{key}\":");
    let rest = &json[at..];
    let v = rest
        .find(&pat)
        .map(|i| &rest[i + pat.len()..])
        .and_then(|r| {
            r.trim_start()
                .split(|c: char| c == ',' || c == '}' || c.is_whitespace())
                .next()
        })
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("iperf3 output lacks {section}.{key}"))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_numbers_come_from_the_final_summary() {
        let json = r#"{"intervals":[{"sum":{"packets":1,"lost_packets":0}}],
            "end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":10},
            "sum_received":{"bits_per_second":9.5e9}}}"#;
        assert_eq!(json_number(json, "\"sum\"", "packets").expect("n"), 1000.0);
        assert_eq!(
            json_number(json, "sum_received", "bits_per_second").expect("n"),
            9.5e9
        );
        assert!(json_number(json, "\"sum\"", "missing").is_err());
    }
}
