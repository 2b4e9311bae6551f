#!/opt/busybox/busybox sh
# PID 1 of a `cargo xtask vm` guest. Mounts what the monitor and the tests
# need, loads the kernel's modules, starts the monitor once to report its
# probes, runs the kernel test suites and powers off.
#
# Everything goes to the console (ttyS0). Result lines, all starting with
# "@ew ", also go to ttyS1, which the xtask reads:
#   @ew kernel RELEASE | @ew cmdline TEXT | @ew module-failed FILE
#   @ew metric SERIES VALUE | @ew log LINE | @ew monitor-exit CODE
#   @ew case SUITE NAME ... RESULT | @ew suite-end SUITE 0|1 | @ew done
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/opt/busybox/bin
export HOME=/root TMPDIR=/tmp
. /vm/settings.sh
export EDGEWATCH_TEST_TIMEOUT_SCALE
export EDGEWATCH_MONITOR=/usr/local/bin/monitor
# Tests that need kernel modules the host may lack require them here.
export EDGEWATCH_VM=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup

exec 3>/dev/ttyS1
say() {
    echo "@ew $*"
    echo "@ew $*" >&3
}

say kernel "$(uname -r)"
say cmdline "$(cat /proc/cmdline)"
ip link set lo up
for module in $(cat /vm/modules.order); do
    insmod "/vm/modules/$module" || say module-failed "$module"
done

# The monitor once on its own: which probes attach, and what it logs
# about those that do not.
printf '[output]\nstdout = false\n[metrics]\nlisten = "127.0.0.1:9810"\n' >/tmp/probe-report.toml
RUST_LOG=info monitor run --config /tmp/probe-report.toml 2>/tmp/monitor.log &
monitor=$!
ready=no
waited=0
while [ "$waited" -lt 600 ]; do
    if grep -q 'monitor ready' /tmp/monitor.log; then
        ready=yes
        break
    fi
    kill -0 "$monitor" 2>/dev/null || break
    sleep 1
    waited=$((waited + 1))
done
if [ "$ready" = yes ]; then
    curl -s http://127.0.0.1:9810/metrics | grep '^edgewatch_probe_attached' |
        while IFS= read -r line; do say metric "$line"; done
fi
kill -TERM "$monitor" 2>/dev/null
wait "$monitor"
code=$?
while IFS= read -r line; do say log "$line"; done </tmp/monitor.log
say monitor-exit "$code"

# Each test on its own, under a time limit: a test that hangs is one
# failure, and the others still run.
if [ "$ready" = yes ]; then
    cd /root
    for suite in $SUITES; do
        bin="/opt/edgewatch/tests/$suite"
        failed=0
        for name in $("$bin" --list "$@" 2>/dev/null | sed -n 's/: test$//p'); do
            timeout "$TEST_LIMIT_SECS" "$bin" --exact "$name" --test-threads=1 >/tmp/test.out 2>&1
            code=$?
            cat /tmp/test.out
            case "$code" in
            0) result=ok ;;
            124 | 137 | 143) result="FAILED (no end within $TEST_LIMIT_SECS s)" ;;
            *) result=FAILED ;;
            esac
            [ "$code" = 0 ] || failed=1
            say case "$suite" "$name ... $result"
        done
        say suite-end "$suite" "$failed"
    done
fi

say done
sleep 1
poweroff -f
