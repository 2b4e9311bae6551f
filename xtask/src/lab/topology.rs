//! The lab's network: an "internet" of documentation ranges, the gateway
//! and a LAN host, each in a network namespace the lab creates and removes.
//!
//! ```text
//!  attacker 203.0.113.10 ─┐
//!                         ├─ isp (router) ── 192.0.2.65/26 ── wan 192.0.2.66  gateway  lan 10.77.0.1 ── 10.77.0.10 lan
//!  target 198.51.100.20 ──┘
//! ```
//!
//! The isp namespace routes between the documentation ranges and knows no
//! route to the LAN: the gateway masquerades the LAN's traffic out of wan,
//! as a home or branch router does. Nothing leaves the namespaces.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// A host of the lab that steps and services run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    Attacker,
    Target,
    Gateway,
    Lan,
}

impl Host {
    pub const ALL: [Host; 4] = [Host::Attacker, Host::Target, Host::Gateway, Host::Lan];

    pub fn name(self) -> &'static str {
        match self {
            Host::Attacker => "attacker",
            Host::Target => "target",
            Host::Gateway => "gateway",
            Host::Lan => "lan",
        }
    }
}

pub const ATTACKER: &str = "203.0.113.10";
pub const TARGET: &str = "198.51.100.20";
pub const GW_WAN: &str = "192.0.2.66";
pub const GW_LAN: &str = "10.77.0.1";
pub const LAN: &str = "10.77.0.10";
/// Interface names inside the gateway namespace.
pub const WAN_IF: &str = "wan";
pub const LAN_IF: &str = "lan";

const PREFIX: &str = "ewlab";

/// The namespaces of one lab run, removed on drop with every process in
/// them.
pub struct Topology {
    tag: String,
    /// Inode numbers of the namespaces, as the monitor reports `netns`.
    pub inodes: Vec<u64>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Topology {
    fn ns(&self, role: &str) -> String {
        format!("{PREFIX}{}-{role}", self.tag)
    }

    /// The namespace name of a host.
    pub fn netns(&self, host: Host) -> String {
        self.ns(match host {
            Host::Gateway => "gw",
            h => h.name(),
        })
    }

    /// A command run inside a host's namespace.
    pub fn command(&self, host: Host, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns(host), program]);
        c
    }

    /// Builds the network. A failure part way removes what was built.
    pub fn create() -> Result<Self> {
        remove_stale();
        let mut topo = Topology {
            tag: std::process::id().to_string(),
            inodes: Vec::new(),
        };
        let isp = topo.ns("isp");
        let names: Vec<String> = std::iter::once(isp.clone())
            .chain(Host::ALL.iter().map(|h| topo.netns(*h)))
            .collect();
        for n in &names {
            ip(&["netns", "add", n])?;
            topo.inodes.push(
                std::fs::metadata(Path::new("/run/netns").join(n))
                    .with_context(|| format!("netns {n}"))?
                    .ino(),
            );
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        let (att, tgt, gw, lan) = (
            topo.netns(Host::Attacker),
            topo.netns(Host::Target),
            topo.netns(Host::Gateway),
            topo.netns(Host::Lan),
        );
        // (namespace, interface, address) at each end of each wire.
        let wires = [
            (
                (&isp, "attacker", "203.0.113.1/24"),
                (&att, "eth0", "203.0.113.10/24"),
            ),
            (
                (&isp, "target", "198.51.100.1/24"),
                (&tgt, "eth0", "198.51.100.20/24"),
            ),
            (
                (&isp, "gateway", "192.0.2.65/26"),
                (&gw, WAN_IF, "192.0.2.66/26"),
            ),
            (
                (&gw, LAN_IF, "10.77.0.1/24"),
                (&lan, "eth0", "10.77.0.10/24"),
            ),
        ];
        for ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)) in wires {
            ip(&[
                "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns",
                ns_b,
            ])?;
            for (ns, dev, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
            }
        }
        for (ns, via) in [
            (&att, "203.0.113.1"),
            (&tgt, "198.51.100.1"),
            (&gw, "192.0.2.65"),
            (&lan, GW_LAN),
        ] {
            ip(&["-n", ns, "route", "add", "default", "via", via])?;
        }
        topo.sysctl(&isp, "net.ipv4.ip_forward", "1")?;
        topo.reset_gateway()?;
        Ok(topo)
    }

    /// Puts the gateway back as it was built: forwarding on, promiscuous
    /// mode off, and a ruleset of one rule, the LAN leaving through wan
    /// behind the gateway's address. Run between scenarios, when no monitor
    /// watches, so what one scenario changed does not leak into the next.
    pub fn reset_gateway(&self) -> Result<()> {
        let gw = self.netns(Host::Gateway);
        self.sysctl(&gw, "net.ipv4.ip_forward", "1")?;
        ip(&["-n", &gw, "link", "set", WAN_IF, "promisc", "off"])?;
        let script = format!(
            "nft flush ruleset && iptables -t nat -A POSTROUTING -s 10.77.0.0/24 -o {WAN_IF} -j MASQUERADE"
        );
        let ok = Command::new("ip")
            .args(["netns", "exec", &gw, "sh", "-c", &script])
            .status()
            .context("running nft and iptables")?
            .success();
        if !ok {
            bail!("could not reset the gateway's ruleset: {script}");
        }
        Ok(())
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                &format!("echo {value} > {path}"),
            ])
            .status()
            .context("running sh")?
            .success();
        if !ok {
            bail!("cannot set {key} in {ns}");
        }
        Ok(())
    }

    /// Waits until a TCP socket listens on `port` in the host's namespace,
    /// or a UDP socket is bound to it.
    pub fn wait_port(&self, host: Host, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .command(host, "ss")
                .args(["-Hltun", &format!("sport = :{port}")])
                .output()
                .context("running ss")?;
            if !out.stdout.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nothing listens on port {port} on {} after {timeout:?}",
                    host.name()
                );
            }
            super::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills every process in the namespaces (only the lab's own run there).
    pub fn kill_processes(&self) {
        for n in self.all_names() {
            kill_netns_processes(&n);
        }
    }

    fn all_names(&self) -> Vec<String> {
        std::iter::once(self.ns("isp"))
            .chain(Host::ALL.iter().map(|h| self.netns(*h)))
            .collect()
    }
}

fn kill_netns_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: plain kill(2) of a process in a namespace this lab made.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn remove_netns(ns: &str) {
    kill_netns_processes(ns);
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Removes namespaces left by a lab run that was killed (SIGKILL leaves no
/// chance to clean up): those whose owning process is gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("lab: removing namespace {name} left by an earlier run");
            remove_netns(&name);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.all_names() {
            remove_netns(&n);
        }
    }
}
