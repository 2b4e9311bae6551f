//! The initramfs the matrix boots: the release monitor, the kernel test
//! binaries, the host's own copies of the tools the tests run (with their
//! shared libraries, found through `ldd`), a static busybox for the rest,
//! and `init.sh` as PID 1.
//!
//! It is two cpio archives, concatenated (the kernel unpacks one after the
//! other): one shared by every kernel, and a small one per kernel with its
//! modules and the run's settings.

use std::{
    collections::HashSet,
    fs,
    io::Write as _,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, ensure, Context as _, Result};

use super::kernel::Kernel;

/// Programs the kernel tests run, looked up on the host's PATH (the
/// `setup.sh` packages). Copied with their libraries at the same paths, so
/// the tests' expectations on `exe` paths hold inside the VM as well.
const PROGRAMS: &[&str] = &[
    "sh",
    "dash",
    "bash",
    "env",
    "echo",
    "true",
    "sleep",
    "cat",
    "head",
    "python3",
    "curl",
    "socat",
    "ncat",
    "ip",
    "ss",
    "setpriv",
    "unshare",
    "mount",
    "umount",
    "ssh",
    "ssh-keygen",
    "sshd",
    "nginx",
    "microsocks",
    "danted",
    "tinyproxy",
    "dnsmasq",
];

/// Python's standard library, minus what no test imports.
const PYTHON_LIB: &str = "/usr/lib/python3.11";
const PYTHON_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "config-3.11-x86_64-linux-gnu",
];

/// Host files the tools read, copied as they are.
const HOST_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/python3.11/sitecustomize.py",
];

/// Where the static busybox and its applets live in the VM: after the
/// host's tools on PATH, so it only fills gaps (insmod, poweroff, ...).
const BUSYBOX_DIR: &str = "opt/busybox";

/// What goes into the VM besides the host's tools.
pub struct Payload {
    pub monitor: PathBuf,
    /// Kernel test binaries by suite name (`process`, `relay`, ...).
    pub suites: Vec<(String, PathBuf)>,
}

/// Settings of one boot, read by `init.sh`.
pub struct Settings {
    pub suites: Vec<String>,
    /// Longest one test may run before it is killed and failed.
    pub test_limit_secs: u64,
    pub timeout_scale: u32,
    /// Arguments for every test binary, such as a test name filter.
    pub filter: Vec<String>,
}

/// Builds the archive shared by every kernel into `dir`; returns its path.
pub fn build_base(dir: &Path, payload: &Payload) -> Result<PathBuf> {
    let stage = dir.join("base");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;
    let mut tree = Tree {
        root: stage.clone(),
        done: HashSet::new(),
    };
    // Debian's merged /usr: /bin, /lib, ... are links into /usr.
    for top in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(top);
        if let Ok(target) = fs::read_link(&host) {
            symlink(target, stage.join(top))?;
        }
    }
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "var/log/nginx",
        "var/lib/nginx",
        "var/empty",
        "usr/bin",
        "usr/sbin",
        "opt/edgewatch/tests",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::set_permissions(stage.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    for program in PROGRAMS {
        tree.copy(&which(program)?)?;
    }
    tree.copy_dir(Path::new(PYTHON_LIB), PYTHON_SKIP)?;
    for file in HOST_FILES {
        tree.copy(Path::new(file))?;
    }
    fs::write(
        stage.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;
    fs::write(
        stage.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\n",
    )?;
    tree.install(&payload.monitor, "usr/local/bin/monitor")?;
    for (suite, binary) in &payload.suites {
        tree.install(binary, &format!("opt/edgewatch/tests/{suite}"))?;
    }
    install_busybox(&stage)?;
    let init = stage.join("init");
    fs::write(&init, include_str!("init.sh"))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let archive = dir.join("base.cpio");
    cpio(&stage, &archive)?;
    Ok(archive)
}

/// Builds the initrd for one kernel: the base archive, then the kernel's
/// modules and the settings. Returns its path.
pub fn for_kernel(
    dir: &Path,
    base: &Path,
    kernel: &Kernel,
    settings: &Settings,
) -> Result<PathBuf> {
    let stage = dir.join("kernel");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let modules = stage.join("vm/modules");
    fs::create_dir_all(&modules)?;
    let mut order = String::new();
    for module in &kernel.modules {
        let name = module.file_name().context("module file name")?;
        fs::copy(module, modules.join(name))?;
        order.push_str(&format!("{}\n", name.to_string_lossy()));
    }
    fs::write(stage.join("vm/modules.order"), order)?;
    let quote = |words: &[String]| {
        words
            .iter()
            .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    fs::write(
        stage.join("vm/settings.sh"),
        format!(
            "SUITES={}\nTEST_LIMIT_SECS={}\nEDGEWATCH_TEST_TIMEOUT_SCALE={}\nset -- {}\n",
            quote(&[settings.suites.join(" ")]),
            settings.test_limit_secs,
            settings.timeout_scale,
            quote(&settings.filter),
        ),
    )?;
    let extra = dir.join("kernel.cpio");
    cpio(&stage, &extra)?;
    let initrd = dir.join("initrd.cpio");
    let mut out = fs::File::create(&initrd)?;
    for part in [base, extra.as_path()] {
        std::io::copy(&mut fs::File::open(part)?, &mut out)?;
    }
    Ok(initrd)
}

/// A staging tree that mirrors host paths.
struct Tree {
    root: PathBuf,
    /// Host paths already copied.
    done: HashSet<PathBuf>,
}

impl Tree {
    /// Copies a host file to the same path in the tree: a symbolic link as
    /// a link (and what it points to), an ELF file with its libraries.
    fn copy(&mut self, host: &Path) -> Result<()> {
        // Resolve the directories (merged /usr) but not the file itself.
        let parent = host
            .parent()
            .context("a file path")?
            .canonicalize()
            .with_context(|| format!("{} is missing on this machine", host.display()))?;
        let host = parent.join(host.file_name().context("a file path")?);
        if !self.done.insert(host.clone()) {
            return Ok(());
        }
        let dest = self.dest(&host)?;
        let meta = fs::symlink_metadata(&host)
            .with_context(|| format!("{} is missing on this machine", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?;
            symlink(&target, &dest)?;
            return self.copy(&parent.join(target));
        }
        fs::copy(&host, &dest).with_context(|| format!("copying {}", host.display()))?;
        if is_elf(&host)? {
            for lib in shared_libraries(&host)? {
                self.copy(&lib)?;
            }
        }
        Ok(())
    }

    /// Copies a host directory tree, skipping top-level entries in `skip`.
    fn copy_dir(&mut self, host: &Path, skip: &[&str]) -> Result<()> {
        for entry in fs::read_dir(host).with_context(|| format!("reading {}", host.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if skip.contains(&name) {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                fs::create_dir_all(self.dest(&path)?)?;
                self.copy_dir(&path, &[])?;
            } else {
                self.copy(&path)?;
            }
        }
        Ok(())
    }

    /// Puts a file of this workspace at `at` in the tree, with its libraries.
    fn install(&mut self, file: &Path, at: &str) -> Result<()> {
        let dest = self.root.join(at);
        fs::create_dir_all(dest.parent().context("install path")?)?;
        fs::copy(file, &dest).with_context(|| format!("copying {}", file.display()))?;
        for lib in shared_libraries(file)? {
            self.copy(&lib)?;
        }
        Ok(())
    }

    /// Where a host path goes in the tree; creates its parent directory.
    fn dest(&self, host: &Path) -> Result<PathBuf> {
        let dest = self
            .root
            .join(host.strip_prefix("/").context("absolute path")?);
        fs::create_dir_all(dest.parent().context("a file path")?)?;
        Ok(dest)
    }
}

/// A program's path on the host, in Debian's system directories (not the
/// caller's PATH, which may lead to a user's own copies).
fn which(program: &str) -> Result<PathBuf> {
    for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"] {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{program} is not installed; run ./scripts/setup.sh")
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path)?;
    Ok(std::io::Read::read_exact(&mut f, &mut magic).is_ok() && magic == *b"\x7fELF")
}

/// The shared libraries an ELF file loads, as `ldd` resolves them.
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(elf)
        .output()
        .context("running ldd")?;
    // A static executable: ldd says so and exits 1.
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let libs = text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    Ok(libs)
}

/// The static busybox, with a link for each applet, in [`BUSYBOX_DIR`].
fn install_busybox(stage: &Path) -> Result<()> {
    let busybox = which("busybox")?;
    let out = Command::new(&busybox).arg("--list").output()?;
    ensure!(out.status.success(), "busybox --list failed");
    let dir = stage.join(BUSYBOX_DIR);
    fs::create_dir_all(dir.join("bin"))?;
    fs::copy(&busybox, dir.join("busybox"))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        symlink("../busybox", dir.join("bin").join(applet))?;
    }
    Ok(())
}

/// Writes the tree under `stage` as a newc cpio archive owned by root.
fn cpio(stage: &Path, archive: &Path) -> Result<()> {
    let find = Command::new("find")
        .arg(".")
        .current_dir(stage)
        .output()
        .context("running find")?;
    ensure!(find.status.success(), "find in {} failed", stage.display());
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(archive)?)
        .spawn()
        .context("running cpio (run ./scripts/setup.sh)")?;
    child
        .stdin
        .take()
        .context("cpio stdin")?
        .write_all(&find.stdout)?;
    let status = child.wait()?;
    ensure!(status.success(), "cpio failed ({status})");
    Ok(())
}
