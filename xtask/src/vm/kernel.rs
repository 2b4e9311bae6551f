//! Kernels to boot: Debian kernel packages fetched with apt and cached, or a
//! kernel image given by path.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context as _, Result};

/// Flavour of the Debian kernel packages the matrix boots: the cloud build
/// has virtio and the serial console built in and keeps kprobes, fentry
/// and BTF, like the generic build, at half the size.
const FLAVOUR: &str = "cloud-amd64-unsigned";

/// Modules the kernel tests need that the Debian kernels build as modules:
/// veth for the test namespaces, sch_ingress and cls_bpf for the clsact
/// qdisc and BPF classifier the forwarding counter needs before tcx (6.6)
/// (a full system's modprobe loads both on demand), sock_diag for `ss` and the monitor's
/// seeding of open sockets, and the GRE, IPIP and WireGuard link kinds the
/// `tunnels` suite creates. A kernel given by path brings none and must
/// have them built in.
const MODULES: [&str; 9] = [
    "veth",
    "sch_ingress",
    "cls_bpf",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "ip_gre",
    "ipip",
    "wireguard",
];

/// A kernel ready to boot.
pub struct Kernel {
    /// The Debian package it came from, if any.
    pub package: Option<String>,
    pub image: PathBuf,
    /// Module files to load at boot, dependencies first, uncompressed.
    pub modules: Vec<PathBuf>,
}

/// Where downloaded kernels are kept between runs.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("edgewatch/kernels"))
}

/// Resolves `spec`: an existing file is a kernel image; `linux-image-...`
/// is a package name; anything else is a version such as `6.1` or `6.12`,
/// which picks the newest matching cloud kernel package apt knows.
pub fn prepare(spec: &str) -> Result<Kernel> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(Kernel {
            package: None,
            image: path.canonicalize()?,
            modules: Vec::new(),
        });
    }
    let package = if spec.starts_with("linux-image-") {
        spec.to_owned()
    } else {
        newest_package(spec)?
    };
    let root = fetch(&package)?;
    let image = only_entry(&root.join("boot"), "vmlinuz-")?;
    let release = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel image name")?
        .to_owned();
    let modules = modules(&root.join("lib/modules").join(&release), &MODULES)?;
    Ok(Kernel {
        package: Some(package),
        image,
        modules,
    })
}

/// The newest `linux-image-<version>.*-cloud-amd64-unsigned` package.
fn newest_package(version: &str) -> Result<String> {
    ensure!(
        !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "--kernel {version:?} is neither a file, a linux-image-* package nor a version such as 6.1"
    );
    let prefix = format!("linux-image-{version}.");
    let out = Command::new("apt-cache")
        .args(["pkgnames", &prefix])
        .output()
        .context("running apt-cache (is this Debian?)")?;
    let names = String::from_utf8_lossy(&out.stdout);
    let newest = names
        .lines()
        .filter(|n| n.ends_with(&format!("-{FLAVOUR}")))
        .max_by_key(|n| version_key(&n[prefix.len()..]));
    match newest {
        Some(name) => Ok(name.to_owned()),
        None => bail!(
            "apt knows no {prefix}*-{FLAVOUR} package; run `apt-get update`, or list what there is with `apt-cache search linux-image-6`"
        ),
    }
}

/// The numbers in a package name's version part, for ordering:
/// `0-56-cloud` is [0, 56], `117+deb12-cloud` is [117, 12].
fn version_key(rest: &str) -> Vec<u64> {
    rest.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Downloads and unpacks `package` once; returns the unpacked tree.
fn fetch(package: &str) -> Result<PathBuf> {
    let dir = cache_dir()?.join(package);
    let root = dir.join("root");
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("xtask vm: downloading {package}");
    let status = Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(&dir)
        .status()
        .context("running apt-get")?;
    ensure!(
        status.success(),
        "apt-get download {package} failed ({status})"
    );
    let deb = only_entry(&dir, "linux-image-")?;
    let unpacking = dir.join("root.partial");
    let _ = fs::remove_dir_all(&unpacking);
    crate::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacking))?;
    fs::rename(&unpacking, &root)?;
    fs::remove_file(&deb)?;
    Ok(root)
}

/// The one entry of `dir` whose name starts with `prefix`.
fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        });
    match (found.next(), found.next()) {
        (Some(p), None) => Ok(p),
        (None, _) => bail!("no {prefix}* in {}", dir.display()),
        (Some(_), Some(_)) => bail!("more than one {prefix}* in {}", dir.display()),
    }
}

/// The module files for `names` and everything they depend on, in load
/// order, found in a kernel's module tree. The package has no modules.dep
/// (depmod writes it at install time), so dependencies come from each
/// module's own `depends=` field. Compressed modules are unpacked into the
/// cache next to them.
fn modules(tree: &Path, names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut index = std::collections::HashMap::new();
    index_modules(tree, &mut index)?;
    let mut order = Vec::new();
    for name in names {
        visit(name, &index, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

fn index_modules(dir: &Path, index: &mut std::collections::HashMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
            continue;
        }
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = [".ko", ".ko.xz", ".ko.zst"]
            .iter()
            .find_map(|ext| file.strip_suffix(ext))
        else {
            continue;
        };
        // Module names use `_` where file names may use `-`.
        index.insert(stem.replace('-', "_"), path);
    }
    Ok(())
}

fn visit(
    name: &str,
    index: &std::collections::HashMap<String, PathBuf>,
    order: &mut Vec<PathBuf>,
    stack: &mut Vec<String>,
) -> Result<()> {
    let name = name.replace('-', "_");
    let source = index
        .get(&name)
        .with_context(|| format!("module {name} is not in the kernel package"))?;
    let file = uncompressed(source)?;
    if order.contains(&file) {
        return Ok(());
    }
    ensure!(
        !stack.contains(&name),
        "module dependency cycle through {name}"
    );
    stack.push(name);
    let bytes = fs::read(&file)?;
    for dep in depends(&bytes) {
        visit(&dep, index, order, stack)?;
    }
    stack.pop();
    order.push(file);
    Ok(())
}

/// A module file as the kernel's `init_module` takes it.
fn uncompressed(path: &Path) -> Result<PathBuf> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return Ok(path.to_path_buf());
    };
    let plain = path.with_extension("");
    if !plain.exists() {
        let out = Command::new(tool)
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("running {tool}"))?;
        ensure!(out.status.success(), "{tool} -dc {name} failed");
        fs::write(&plain, out.stdout)?;
    }
    Ok(plain)
}

/// The `depends=` list of a module's `.modinfo`.
fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_package_versions_numerically() {
        assert!(version_key("0-56-cloud-amd64-unsigned") > version_key("0-9-cloud-amd64-unsigned"));
        assert!(
            version_key("117+deb12-cloud-amd64-unsigned")
                > version_key("107+deb12-cloud-amd64-unsigned")
        );
    }

    #[test]
    fn reads_module_dependencies() {
        let info = b"\x7fELF...\0license=GPL\0depends=inet_diag,nf_conntrack\0name=tcp_diag\0";
        assert_eq!(depends(info), ["inet_diag", "nf_conntrack"]);
        assert!(depends(b"\0depends=\0name=veth\0").is_empty());
        assert!(depends(b"no modinfo").is_empty());
    }
}
