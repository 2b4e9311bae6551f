#!/usr/bin/env bash
# Installs what building and testing edgewatch needs, idempotently:
#   - the nightly toolchain's rust-src (the eBPF crate builds core itself),
#   - bpf-linker, built against the nightly toolchain's own LLVM,
#   - Debian packages the tests use,
#   - tracefs and bpffs mounts (the monitor mounts them too when it can).
# Safe to run again: each step checks first and does nothing when done.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
TOOLS="${EDGEWATCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgewatch}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v rustup >/dev/null || die "rustup is not installed; install Rust with rustup first"

# 1. Nightly with rust-src.
if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

# 2. bpf-linker against nightly's LLVM. rustc ships libLLVM in its sysroot;
#    bpf-linker links to it through a prefix of symlinks and finds it at run
#    time through its RUNPATH, so no system LLVM is needed.
nightly_lib="$(rustc +nightly --print sysroot)/lib"
llvm_so=$(find "$nightly_lib" -maxdepth 1 -name "libLLVM.so.${LLVM_MAJOR}*-nightly" | head -n 1)
[ -n "$llvm_so" ] || die "no libLLVM.so.${LLVM_MAJOR} in $nightly_lib; the nightly toolchain's LLVM changed major version"
mkdir -p "$TOOLS/llvm/lib"
ln -sf "$llvm_so" "$TOOLS/llvm/lib/libLLVM.so"
ln -sf "$llvm_so" "$TOOLS/llvm/lib/$(basename "$llvm_so")"
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    say "building bpf-linker $BPF_LINKER_VERSION against $(basename "$llvm_so") (about a minute)"
    LLVM_PREFIX="$TOOLS/llvm" cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
        --locked --force --no-default-features --features "llvm-${LLVM_MAJOR}"
    bpf-linker --version >/dev/null || die "bpf-linker was built but does not run"
fi

# 3. Debian packages the tests use: setpriv (util-linux), ip and ss
#    (iproute2), and the real clients, servers and relays the kernel tests
#    drive (curl, socat, ncat, microsocks, dante, tinyproxy, OpenSSH, nginx,
#    iptables, nftables, iperf3), Prometheus with promtool and Alertmanager
#    for the operations tests, systemd-analyze (systemd) to verify the
#    shipped unit, bpftool (the benchmark reads eBPF run times), openssl
#    and htpasswd (apache2-utils) for the certificates and bcrypt hashes of
#    the metrics endpoint's TLS and basic-auth tests, what the lab adds
#    (php-fpm behind nginx, python3 for its clients, the PHP command line,
#    dnsmasq and rsyslog for its look-alikes), and what `cargo xtask
#    vm` boots kernels with (QEMU, a static busybox and cpio for the
#    initramfs). The tests and the lab start their own instances; nothing
#    here is left running.
need_pkgs=()
for pkg in util-linux procps iproute2 curl socat ncat microsocks dante-server tinyproxy openssh-server openssh-client nginx iptables nftables iperf3 \
    prometheus prometheus-alertmanager systemd bpftool openssl apache2-utils php-fpm php-cli python3 qemu-system-x86 busybox-static cpio \
    dnsmasq-base rsyslog; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$pkg")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "packages ${need_pkgs[*]} are missing and installing them needs root"
    say "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

# 4. Mounts the kernel interface needs.
mount_if_missing() {
    local fstype=$1 target=$2
    if awk -v t="$fstype" '$3 == t { found = 1 } END { exit !found }' /proc/mounts; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        say "warning: $fstype is not mounted and mounting it needs root; the monitor will try at start"
        return
    fi
    say "mounting $fstype at $target"
    mount -t "$fstype" "$fstype" "$target" || die "cannot mount $fstype at $target"
}
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing bpf /sys/fs/bpf

say "ready"
