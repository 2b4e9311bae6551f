//! Entry points of the fuzz targets in `fuzz/` at the workspace root: each
//! takes arbitrary bytes, runs them through one input path of the daemon,
//! and panics only when the code panics or breaks a stated invariant.
//!
//! They live in the library (behind the `fuzzing` feature, and in test
//! builds) rather than in the fuzz crate so that `cargo test` replays the
//! kept crash inputs (`fuzz/regressions`) through exactly the code the
//! fuzzer ran, and the property tests share the invariant checks.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use monitor_common::event::{FlowKey, SockOwner};
use serde_json::Value;

use crate::{
    config::{Config, FileError, Source},
    decode::{decode, KernelEvent},
    detect::{rule, stage::Detect},
    enrich::Enricher,
    event::Event,
    net::{
        relay::RelaySettings, sensors::HopSensors, Context as NetContext, MemFlows, NetSettings,
        NetTracker,
    },
    pipeline::Metrics,
    process::ProcessTable,
};

/// Name the fuzzed texts go by in error messages.
pub const SOURCE_NAME: &str = "fuzz.toml";

/// The built-in rules, compiled once per process: compiling them for every
/// input would dominate the run time.
fn builtin_rules() -> &'static [rule::Rule] {
    static RULES: OnceLock<Vec<rule::Rule>> = OnceLock::new();
    RULES.get_or_init(|| rule::load(true, &[]).expect("the built-in rules are valid"))
}

/// One registry for every input: metrics only count, they steer nothing.
fn metrics() -> Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new).clone()
}

/// Splits a byte stream into records the way the ring buffer hands them
/// over: each record is as long as its header's `size` field says. A size
/// that does not fit (too small to hold it, or past the end) makes the rest
/// of the stream one last, malformed record.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let size = data
            .get(4..8)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]) as usize)
            .filter(|&n| n >= 8 && n <= data.len())
            .unwrap_or(data.len());
        let (record, rest) = data.split_at(size);
        data = rest;
        Some(record)
    })
}

/// Counts a socket event's traffic in `flows` as the kernel's flow map
/// would.
fn count(flows: &mut MemFlows, n: &monitor_common::event::NetEvent) {
    let key = FlowKey {
        cookie: n.cookie,
        peer_addr: n.remote_addr,
        peer_port: n.remote_port,
        proto: n.proto,
        _pad: [0; 5],
    };
    let stats = flows.flows.entry(key).or_default();
    stats.local_addr = n.local_addr;
    stats.local_port = n.local_port;
    stats.first_ns = n.first_ns;
    stats.last_ns = n.header.ts_boot_ns;
    stats.bytes_out = n.bytes_out;
    stats.bytes_in = n.bytes_in;
    stats.pkts_out = n.pkts_out;
    stats.pkts_in = n.pkts_in;
    flows.owners.insert(
        n.cookie,
        SockOwner {
            tgid: n.header.pid,
            pid: n.header.tid,
            netns: n.netns,
            _pad: 0,
            comm: n.comm,
        },
    );
}

/// Fuzz target `kernel_records`: a stream of ring-buffer records through
/// decode, enrich (a fresh process table and flow table), the JSON form,
/// and the detect stage with the built-in rules, as the daemon runs them;
/// then a flow sweep, the process table's expiry and the final flush.
pub fn kernel_records(data: &[u8]) {
    let settings = NetSettings {
        update_interval_ns: 1_000_000_000,
        udp_idle_ns: 2_000_000_000,
        tcp_idle_ns: 3_000_000_000,
    };
    // Small tables, so that eviction runs too.
    let mut enricher = Enricher::new(
        ProcessTable::new(64, Duration::from_secs(60)),
        NetTracker::new(64, settings, metrics().net),
    );
    let mut flows = MemFlows::default();
    let mut detect = Detect::new(builtin_rules().to_vec(), None);
    // The relay and tunnel detectors see the same events, as in the daemon.
    let mut hops = HopSensors::new(
        RelaySettings {
            volume_bytes: 1024,
            active_ns: 30_000_000_000,
            interactive_samples: 2,
            allowed: Vec::new(),
        },
        metrics().hops,
    );
    let now = Instant::now();
    let mut out = Vec::new();
    let mut last_ns = 0;
    for record in records(data) {
        let Ok(ev) = decode(record) else { continue };
        last_ns = last_ns.max(ev.ts_boot_ns());
        if let KernelEvent::Net(n) = &ev {
            count(&mut flows, n);
        }
        enricher.apply(ev, now, &mut flows, &mut out);
        // Pairs are judged and flows sampled after each record, as the
        // daemon's batches and ticks do.
        let ctx = NetContext {
            net: &enricher.net,
            map: &flows,
            procs: &enricher.table,
            clock: &enricher.clock,
            sides: None,
        };
        hops.observe(&ctx, last_ns, &mut out);
        hops.check(&ctx, last_ns, &mut out);
        hops.sample(&ctx, &[], last_ns, &mut out);
        emit(&mut detect, &out);
        out.clear();
    }
    enricher.sweep(&mut flows, &mut out);
    emit(&mut detect, &out);
    enricher.table.expire(now + Duration::from_secs(3600));
    written(detect.flush());
}

/// What the daemon's `emit` does with events: each one's JSON form through
/// the rules, the event and its alerts written as lines.
fn emit(detect: &mut Detect, events: &[Event]) {
    for ev in events {
        let value = serde_json::to_value(ev).expect("every event has a JSON form");
        written(vec![value]);
        written(detect.observe_event(ev));
    }
}

/// Writes values as the output stage does, to nowhere.
fn written(values: Vec<Value>) {
    for v in values {
        serde_json::to_writer(std::io::sink(), &v).expect("a JSON value serialises");
    }
}

/// Checks that an error about `text` (named [`SOURCE_NAME`]) is one line
/// naming a position inside it: a line that exists and a column at most
/// one past that line's end. An error about another file the text names
/// (a configuration's web configuration file) need only be one line.
pub fn assert_error_inside(text: &str, err: &FileError) {
    let shown = err.to_string();
    assert!(
        !shown.contains('\n'),
        "message of more than one line: {shown:?}"
    );
    let (path, line, col) = match err {
        FileError::Invalid {
            path, line, col, ..
        } => (path, *line, *col),
        FileError::Read { path, .. } | FileError::Content { path, .. } => {
            assert_ne!(path, SOURCE_NAME, "an error without a position: {err}");
            return;
        }
    };
    if path != SOURCE_NAME {
        return;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "line {line} outside the {} lines of the input: {err}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        (1..=width + 1).contains(&col),
        "column {col} outside line {line} ({width} characters): {err}"
    );
    assert!(
        shown.starts_with(&format!("{SOURCE_NAME}:{line}:{col}: ")),
        "{err}"
    );
}

/// Fuzz target `config`: configuration text through `Config::parse` and,
/// when valid, through every setting the daemon derives from it. An error
/// must name a position inside the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Source {
        name: SOURCE_NAME,
        text,
    }) {
        Ok(config) => {
            let _ = config.network.settings();
            let _ = config.relay.settings();
            let _ = config.dataplane.settings();
            config
                .alerts
                .specs()
                .expect("a valid configuration has valid alert sinks");
        }
        Err(e) => assert_error_inside(text, &e),
    }
}

/// Fuzz target `web_config`: web configuration text (the exporter-toolkit
/// YAML of `metrics.web_config_file`) through its parser, with relative
/// certificate paths resolved in a folder that does not exist. An error
/// must be one line and, when it has a position, inside the text; errors
/// about the whole file or a file it names have none.
pub fn web_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::path::Path::new("/nonexistent/edgewatch-fuzz");
    match crate::web_config::WebConfig::parse(SOURCE_NAME, text, dir) {
        Ok(web) => {
            let _ = web.admit(None);
        }
        // By design, about the file as a whole or a file it names (a
        // certificate): one line, without a position.
        Err(FileError::Content { message, .. }) => {
            assert!(
                !message.contains('\n'),
                "message of more than one line: {message:?}"
            );
        }
        Err(e) => assert_error_inside(text, &e),
    }
}

/// Events every rule in the rule target is tried on: one of each common
/// kind, one process lineage under a listening service, in time order.
const SAMPLE_EVENTS: &str = include_str!("fuzz_events.jsonl");

/// Fuzz target `rules`: rule-file text through the rule parser and, when
/// valid, the rules through the engine over [`SAMPLE_EVENTS`] twice (the
/// second pass repeats within the dedup windows), then the final flush. An
/// error must name a position inside the text.
pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let src = Source {
        name: SOURCE_NAME,
        text,
    };
    match rule::parse(&src) {
        Ok(rules) => {
            // The compiled accessors over typed records, and the same rules
            // over the JSON form, must agree on every alert.
            let mut typed = Detect::new(rules.clone(), None);
            let mut json = Detect::new(rules, None);
            for _ in 0..2 {
                for line in SAMPLE_EVENTS.lines() {
                    let ev: Event = serde_json::from_str(line).expect("sample events are typed");
                    let value = serde_json::to_value(&ev).expect("JSON form");
                    let a = typed.observe_event(&ev);
                    let b = json.observe(&value);
                    assert_eq!(a, b, "typed and JSON judgements differ on {line}");
                    written(a);
                }
            }
            let (a, b) = (typed.flush(), json.flush());
            assert_eq!(a, b, "typed and JSON judgements differ at the flush");
            written(a);
        }
        Err(e) => assert_error_inside(text, &e),
    }
}

/// Fuzz target `json_events`: lines of arbitrary JSON through the detect
/// stage with the built-in rules, as `monitor replay` runs them (lines that
/// are not JSON objects are skipped), then the final flush.
pub fn json_events(data: &[u8]) {
    let mut detect = Detect::new(builtin_rules().to_vec(), None);
    for line in data.split(|&b| b == b'\n') {
        if let Some(judged) = crate::replay::judge_line(&mut detect, line) {
            written(judged.alerts);
        }
    }
    written(detect.flush());
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    /// Runs every kept input of a fuzz target (`fuzz/regressions/<target>`)
    /// through it again; returns how many there were.
    fn replay(target: &str, run: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions")
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("regression input readable");
            eprintln!("replaying {}", path.display());
            run(&data);
            n += 1;
        }
        n
    }

    /// The seed records the fuzzer starts from are well formed, so its
    /// first inputs reach enrich and detect, not only decode's checks.
    #[test]
    fn kernel_record_seeds_decode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/kernel_records");
        let mut kinds = std::collections::HashSet::new();
        for entry in std::fs::read_dir(dir).expect("seed directory") {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("seed readable");
            for record in records(&data) {
                let ev = decode(record).unwrap_or_else(|e| {
                    panic!("{}: a record does not decode: {e}", path.display())
                });
                kinds.insert(std::mem::discriminant(&ev));
            }
            kernel_records(&data);
        }
        assert_eq!(kinds.len(), 7, "a seed of every record type");
    }

    #[test]
    fn kept_fuzz_inputs_pass() {
        let n = replay("kernel_records", kernel_records)
            + replay("config", config)
            + replay("rules", rules)
            + replay("json_events", json_events)
            + replay("web_config", web_config);
        eprintln!("{n} kept fuzz inputs replayed");
    }

    /// `text` with `cut` characters from `at` replaced by `insert`: a
    /// valid file turned into a nearly valid one, for property tests.
    pub(crate) fn splice(text: &str, at: prop::sample::Index, cut: usize, insert: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let at = at.index(chars.len());
        let end = (at + cut).min(chars.len());
        chars[..at]
            .iter()
            .copied()
            .chain(insert.chars())
            .chain(chars[end..].iter().copied())
            .collect()
    }

    proptest! {
        /// Streams of well-formed records of every kind, about a handful
        /// of processes so that forks, execs and exits meet in the tables,
        /// go through the whole pipeline.
        #[test]
        fn kernel_record_streams_never_panic(
            stream in proptest::collection::vec(
                (crate::decode::tests::any_record(), 1u32..6, 0u32..6),
                0..24,
            )
        ) {
            let header = std::mem::offset_of!(monitor_common::event::EventHeader, pid);
            let ppid = std::mem::size_of::<monitor_common::event::EventHeader>()
                + std::mem::offset_of!(monitor_common::event::TaskInfo, ppid);
            let mut data = Vec::new();
            for (mut rec, pid, parent) in stream {
                rec[header..header + 4].copy_from_slice(&pid.to_ne_bytes());
                rec[ppid..ppid + 4].copy_from_slice(&parent.to_ne_bytes());
                data.extend_from_slice(&rec);
            }
            kernel_records(&data);
        }
    }

    #[test]
    fn records_split_like_the_ring_buffer() {
        let mut a = vec![0u8; 24];
        a[4..8].copy_from_slice(&24u32.to_ne_bytes());
        let mut b = vec![1u8; 10];
        b[4..8].copy_from_slice(&1000u32.to_ne_bytes());
        let stream = [a.clone(), b.clone()].concat();
        assert_eq!(records(&stream).collect::<Vec<_>>(), vec![&a[..], &b[..]]);
        assert_eq!(records(&[7, 7]).collect::<Vec<_>>(), vec![&[7u8, 7][..]]);
        assert_eq!(records(&[]).count(), 0);
    }

    #[test]
    fn sample_events_raise_alerts_with_the_builtin_rules() {
        rules(super::rule::BUILTIN.as_bytes());
        let mut detect = Detect::new(builtin_rules().to_vec(), None);
        let alerts: usize = SAMPLE_EVENTS
            .lines()
            .map(|l| {
                detect
                    .observe(&serde_json::from_str(l).expect("json"))
                    .len()
            })
            .sum();
        assert!(alerts > 0, "the sample events exercise no rule");
    }
}
