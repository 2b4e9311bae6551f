//! Map names, map sizes and capture bounds, defined once for both sides.

/// Name of the ring buffer that carries process events.
pub const MAP_PROC_EVENTS: &str = "PROC_EVENTS";
/// Name of the per-CPU counter array of kernel-side losses and errors.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the one-slot map where the reader says it is parked (waiting
/// for a wakeup with no timed poll running); see `RING_WAKEUP_BYTES`.
pub const MAP_READER: &str = "READER";
/// Name of the per-CPU scratch array where variable records are built.
pub const MAP_SCRATCH: &str = "SCRATCH";
/// Name of the map of exec attempts in flight (syscall entry to exit).
pub const MAP_EXEC_ATTEMPTS: &str = "EXEC_ATTEMPTS";
/// Name of the ring buffer that carries socket events.
pub const MAP_NET_EVENTS: &str = "NET_EVENTS";
/// Name of the map of socket owners by cookie.
pub const MAP_SOCK_OWNERS: &str = "SOCK_OWNERS";
/// Name of the map of per-flow counters.
pub const MAP_FLOWS: &str = "FLOWS";
/// Name of the map of per-process socket activity.
pub const MAP_SOCK_IO: &str = "SOCK_IO";
/// Name of the map of first payload bytes of connections that look like
/// proxy requests.
pub const MAP_PROXY_HEADS: &str = "PROXY_HEADS";
/// Name of the map of the socket each process last received data on.
pub const MAP_LAST_RECV: &str = "LAST_RECV";
/// Name of the map of each process's recent unix connections.
pub const MAP_UNIX_LINKS: &str = "UNIX_LINKS";
/// Name of the map of `bind`/`accept` calls in flight.
pub const MAP_SOCK_CALLS: &str = "SOCK_CALLS";
/// Name of the map of forwarded-flow counters.
pub const MAP_FWD_FLOWS: &str = "FWD_FLOWS";
/// Name of the map of interfaces the TC programs watch.
pub const MAP_IFACES: &str = "IFACES";
/// Name of the read-only global holding the monitor's own tgid.
pub const GLOBAL_MONITOR_TGID: &str = "MONITOR_TGID";
/// Name of the read-only global holding kernel structure offsets.
pub const GLOBAL_OFFSETS: &str = "OFFSETS";

/// Default size of the process ring buffer, in bytes (power of two).
pub const PROC_RING_BYTES: u32 = 4 << 20;

/// Default size of the socket-event ring buffer, in bytes (power of two).
pub const NET_RING_BYTES: u32 = 4 << 20;
/// The programs wake the reader when a record takes a ring's unread bytes
/// across this mark, or when the reader is parked (a quiet machine: it
/// waits with no timed poll running, and the first record wakes it);
/// otherwise they add records silently and the reader finds them at its
/// next timed poll (`read::POLL_INTERVAL` in the daemon), which runs only
/// while records keep coming. A wakeup per
/// record costs the producing task an interrupt and, on a preemptible
/// kernel, often a switch to the reader in the middle of the program: a
/// fork or exit record cost 12 to 16 µs that way, against under 1 µs
/// without the wakeup.
pub const RING_WAKEUP_BYTES: u64 = 64 << 10;
/// While the socket-event ring is more than half full, each process may add
/// at most this many events per `NET_SHARE_WINDOW_NS`; the rest are shed
/// (counted as lost, and in `counter::NET_SHED`). A connection flood then
/// fills only its own share, and the events of every other process (a
/// relay's connections, a web shell's listener) still find room.
pub const NET_SHARE_EVENTS: u64 = 128;
/// The window of `NET_SHARE_EVENTS`: 100 ms.
pub const NET_SHARE_WINDOW_NS: u64 = 100_000_000;
/// Processes whose share is tracked at once (LRU).
pub const NET_SHARES_MAX: u32 = 8192;
/// Sockets whose owner the kernel tracks at once.
pub const SOCK_OWNERS_MAX: u32 = 65536;
/// Flows (socket and peer) counted at once.
pub const FLOWS_MAX: u32 = 65536;
/// (process, socket) pairs whose activity is tracked at once. An LRU: a
/// busy machine forgets the pairs idle longest.
pub const SOCK_IO_MAX: u32 = 65536;
/// Connections whose first bytes looked like a proxy request, kept at
/// once (LRU: the daemon reads them when the connection's process dials
/// out, within a second or so).
pub const PROXY_HEADS_MAX: u32 = 4096;
/// Processes whose last-received socket is kept at once (LRU).
pub const LAST_RECV_MAX: u32 = 16384;
/// Processes whose recent unix connections are kept at once (LRU).
pub const UNIX_LINKS_MAX: u32 = 16384;
/// Forwarded flows counted at once.
pub const FWD_FLOWS_MAX: u32 = 65536;
/// Interfaces the TC programs watch at once.
pub const IFACES_MAX: u32 = 256;
/// `bind`/`accept` calls in flight.
pub const SOCK_CALLS_MAX: u32 = 4096;

/// Bytes of the argument block (`argv`, NUL-separated) captured per exec.
/// Longer argument lists are cut at this bound and flagged as truncated.
pub const ARGV_MAX: usize = 16 * 1024;
/// Arguments read for a failed exec (read one by one from the caller's
/// `argv` array, so fewer than for a successful exec).
pub const FAILED_ARGC_MAX: usize = 32;
/// Bytes of one argument read for a failed exec.
pub const FAILED_ARG_MAX: usize = 256;
/// Bytes of a path (executable, cwd, failed filename).
pub const PATH_MAX: usize = 4096;
/// Bytes of one path component, including the terminating NUL.
pub const NAME_MAX: usize = 256;
/// Path components walked before a path is cut and flagged as truncated.
pub const PATH_DEPTH_MAX: usize = 128;

/// Size of one scratch slot. The eBPF side masks every variable offset with
/// `SCRATCH_HALF - 1` and bounds every write by `SCRATCH_HALF`, which is how
/// the verifier is shown that writes stay inside the slot.
pub const SCRATCH_BYTES: usize = 64 * 1024;
/// Half a scratch slot, see [`SCRATCH_BYTES`].
pub const SCRATCH_HALF: usize = SCRATCH_BYTES / 2;

/// Exec attempts tracked between syscall entry and exit (LRU: a thread that
/// never returns from `execve` ages out instead of leaking an entry).
pub const EXEC_ATTEMPTS_MAX: u32 = 16 * 1024;

// The record layout in `event` depends on these relations.
const _: () = assert!(SCRATCH_HALF.is_power_of_two());
const _: () = assert!(ARGV_MAX <= SCRATCH_HALF);
const _: () = assert!(2 * (PATH_MAX + NAME_MAX) + 512 <= SCRATCH_HALF);
