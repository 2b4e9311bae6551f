//! Services a scenario names in `services`: real Debian daemons started in
//! a host's namespace, in the foreground, with configuration the lab writes
//! into the scenario's directory. The Debian packages the lab needs are
//! installed here when missing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::{
    scenario::{Service, ServiceKind},
    topology::{self, Host, Topology},
};

/// Debian packages the services and the scenarios' steps use.
pub const PACKAGES: &[&str] = &[
    "nginx",
    "php-fpm",
    "openssh-server",
    "openssh-client",
    "socat",
    "ncat",
    "microsocks",
    "dante-server",
    "tinyproxy",
    "iptables",
    "nftables",
    "curl",
    "python3",
    "iproute2",
    "procps",
    "busybox-static",
    "perl-base",
    "php-cli",
    "dnsmasq-base",
    "rsyslog",
    "tcpdump",
];

/// Installs the packages that are missing (apt-get, as scripts/setup.sh).
pub fn install_missing() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("lab: installing {}", missing.join(" "));
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?
        .success();
    if !ok {
        bail!("apt-get could not install {}", missing.join(" "));
    }
    Ok(())
}

/// Addresses of a host, for services bound to the namespace's addresses.
pub fn addresses(host: Host) -> &'static [&'static str] {
    match host {
        Host::Attacker => &[topology::ATTACKER],
        Host::Target => &[topology::TARGET],
        Host::Gateway => &[topology::GW_WAN, topology::GW_LAN],
        Host::Lan => &[topology::LAN],
    }
}

/// The lab's SSH key pair and host key, made once per run.
pub struct SshKeys {
    pub dir: PathBuf,
}

impl SshKeys {
    pub fn create(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        for key in ["host", "user"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "edgewatch-lab", "-f"])
                .arg(dir.join(key))
                .status()
                .context("running ssh-keygen")?
                .success();
            if !ok {
                bail!("ssh-keygen failed");
            }
        }
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys"))?;
        Ok(Self { dir })
    }

    /// The ssh client command line (without destination) that logs in
    /// with the lab's key.
    pub fn client(&self) -> String {
        format!(
            "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=10",
            self.dir.join("user").display()
        )
    }
}

/// Starts a service and waits until it listens. Its logs are kept as
/// `LOGS.<service>-<host>.<file>`, beside the scenario's own.
pub fn start(
    topo: &Topology,
    service: &Service,
    workdir: &Path,
    logs: &Path,
    assets: &Path,
    keys: &SshKeys,
) -> Result<Vec<Child>> {
    let host = service.host;
    let label = format!("{:?}-{}", service.kind, host.name()).to_lowercase();
    let dir = workdir.join(&label);
    std::fs::create_dir_all(&dir)?;
    let log_path = |file: &str| PathBuf::from(format!("{}.{label}.{file}", logs.display()));
    let spawn = |program: &str, args: &[&str], log: &str| -> Result<Child> {
        let log = std::fs::File::create(log_path(log))?;
        topo.command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} on {}", host.name()))
    };
    let wait = |port| topo.wait_port(host, port, Duration::from_secs(15));
    let d = dir.display();
    let fpm_log = log_path("php-fpm.log");
    let nginx_log = log_path("nginx-error.log");
    match service.kind {
        ServiceKind::Webapp => {
            let www = dir.join("www");
            std::fs::create_dir_all(&www)?;
            for f in ["ping.php", "orders.php", "health", "index.html"] {
                std::fs::copy(assets.join("www").join(f), www.join(f))
                    .with_context(|| format!("copying the lab web page {f}"))?;
            }
            let fpm = php_fpm()?;
            std::fs::write(
                dir.join("php-fpm.conf"),
                format!(
                    "[global]\npid = {d}/php-fpm.pid\nerror_log = {}\ndaemonize = no\n\
                     [lab]\nuser = www-data\ngroup = www-data\nlisten = {d}/php.sock\nlisten.mode = 0666\n\
                     pm = static\npm.max_children = 2\ncatch_workers_output = yes\n",
                    fpm_log.display()
                ),
            )?;
            let listens: String = addresses(host)
                .iter()
                .map(|a| format!("listen {a}:80; "))
                .collect();
            std::fs::write(
                dir.join("nginx.conf"),
                format!(
                    "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {};\n\
                     events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n\
                     fastcgi_temp_path {d};\n server {{ {listens}root {d}/www;\n  location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; \
                     fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass unix:{d}/php.sock; }}\n }}\n}}\n",
                    nginx_log.display()
                ),
            )?;
            let conf = format!("{d}/php-fpm.conf");
            let php = spawn(&fpm, &["-F", "-y", &conf], "php-fpm.out")?;
            // nginx answers 502 until php-fpm's socket is there.
            let socket = dir.join("php.sock");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while !socket.exists() {
                if std::time::Instant::now() > deadline {
                    bail!("php-fpm made no socket at {} in 15 s", socket.display());
                }
                super::check_interrupted()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            let conf = format!("{d}/nginx.conf");
            let nginx = spawn("/usr/sbin/nginx", &["-c", &conf], "nginx.out")?;
            wait(80)?;
            Ok(vec![php, nginx])
        }
        ServiceKind::Sshd => {
            std::fs::create_dir_all("/run/sshd")?;
            let k = keys.dir.display();
            let listens: String = addresses(host)
                .iter()
                .map(|a| format!("ListenAddress {a}\n"))
                .collect();
            // UsePAM: pam_loginuid gives sessions an audit login uid, which
            // tells admin sessions from services.
            std::fs::write(
                dir.join("sshd_config"),
                format!(
                    "Port 22\n{listens}HostKey {k}/host\nAuthorizedKeysFile {k}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM yes\nStrictModes no\nAllowTcpForwarding yes\n\
                     GatewayPorts no\nPidFile {d}/sshd.pid\n"
                ),
            )?;
            let conf = format!("{d}/sshd_config");
            let sshd = spawn("/usr/sbin/sshd", &["-D", "-e", "-f", &conf], "sshd.log")?;
            wait(22)?;
            Ok(vec![sshd])
        }
        ServiceKind::Sink => {
            let script = assets.join("sink.py");
            let script = script.to_str().context("asset path is not UTF-8")?;
            let sink = spawn(
                "/usr/bin/python3",
                &[script, addresses(host)[0], "9000"],
                "sink.log",
            )?;
            wait(9000)?;
            Ok(vec![sink])
        }
    }
}

/// The php-fpm binary of the installed PHP version.
fn php_fpm() -> Result<String> {
    let mut found: Vec<String> = std::fs::read_dir("/usr/sbin")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("php-fpm"))
        .collect();
    found.sort();
    found
        .pop()
        .map(|n| format!("/usr/sbin/{n}"))
        .context("no php-fpm in /usr/sbin: install the php-fpm package")
}
