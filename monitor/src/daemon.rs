//! `monitor run`: wires the stages together (load, read, decode, enrich,
//! output, export) and runs them until SIGINT or SIGTERM.

use std::{
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use monitor_common::limits::{
    MAP_COUNTERS, MAP_FLOWS, MAP_NET_EVENTS, MAP_PROC_EVENTS, MAP_PROXY_HEADS, MAP_READER,
    MAP_SOCK_IO, MAP_SOCK_OWNERS, MAP_UNIX_LINKS,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    alert,
    clock::BootClock,
    config::Config,
    dataplane::stage::DataplaneStage,
    decode::KernelEvent,
    detect::{
        rule::RuleError,
        stage::{load_rules, Detect},
    },
    enrich::Enricher,
    event::{Event, Kind},
    load,
    metrics::{self, Metrics},
    net::{maps::KernelFlows, sensors::HopSensors, sockdiag, Context as NetContext, NetTracker},
    output::{self, Output},
    process::{procfs, ProcessTable},
    read::{self, KernelCounters},
    selfcheck::SelfCheck,
};

/// Batches in flight between the read and enrich stages. When full, the
/// readers wait and the ring buffers absorb the burst; past that the
/// kernel counts what it drops.
const CHANNEL_BATCHES: usize = 64;

/// How long the alert sinks may go on delivering after a stop request.
const ALERT_SINK_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] load::LoadError),
    #[error(transparent)]
    Output(#[from] output::OpenError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error(transparent)]
    Alerts(#[from] alert::StartError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the stages over an object `load::load` loaded and attached.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    mut loaded: load::Loaded,
) -> Result<(), RunError> {
    // First, so a stop requested during start-up is a clean stop once the
    // probes are up, never the default action's abrupt exit.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let metrics = Metrics::new();
    let rules = load_rules(&config.detect, &[])?;
    let mut detect = Detect::new(rules, Some(metrics.clone()));
    if let Some(path) = &config.detect.state_file {
        detect.keep_state(path.clone());
    }
    detect.set_sinks(alert::Sinks::start(&config.alerts, &metrics)?);
    let listener = if config.metrics.enabled {
        let addr = config.metrics.listen;
        Some(
            metrics::bind(addr)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?,
        )
    } else {
        None
    };
    let mut output = Output::new(
        config.output.stdout,
        config.output.file.as_deref(),
        metrics.clone(),
    )?;

    for status in &loaded.probes {
        metrics
            .probe_attached
            .with_label_values(&[status.spec.name])
            .set(i64::from(status.attached()));
    }
    let ebpf = &mut loaded.ebpf;
    let proc_ring = take_map(ebpf, MAP_PROC_EVENTS, RingBuf::try_from)?;
    let net_ring = take_map(ebpf, MAP_NET_EVENTS, RingBuf::try_from)?;
    let parked = take_map(ebpf, MAP_READER, Array::<_, u32>::try_from)?;
    let counters = take_map(ebpf, MAP_COUNTERS, PerCpuArray::<_, u64>::try_from)?;
    let mut kernel_flows = KernelFlows {
        flows: take_map(ebpf, MAP_FLOWS, HashMap::<MapData, _, _>::try_from)?,
        owners: take_map(ebpf, MAP_SOCK_OWNERS, HashMap::<MapData, _, _>::try_from)?,
        io: take_map(ebpf, MAP_SOCK_IO, HashMap::<MapData, _, _>::try_from)?,
        heads: take_map(ebpf, MAP_PROXY_HEADS, HashMap::<MapData, _, _>::try_from)?,
        unix: take_map(ebpf, MAP_UNIX_LINKS, HashMap::<MapData, _, _>::try_from)?,
    };
    let mut hops = HopSensors::new(config.relay.settings(), metrics.clone());
    let mut dataplane = start_dataplane(&config, ebpf, &loaded.probes, &metrics);
    let mut ebpf_logger = aya_log::EbpfLogger::init(ebpf).ok();
    let mut selfcheck = SelfCheck::new(&loaded.ebpf, metrics.clone());

    // Seed after attaching: a process or socket created in between is
    // both seeded and reported, never missed.
    let table = ProcessTable::new(
        *config.process_table.capacity.get_ref(),
        Duration::from_secs(config.process_table.exited_retention_secs),
    );
    let net = &config.network;
    let tracker = NetTracker::new(net.flow_table_capacity, net.settings(), metrics.clone());
    let mut enricher = Enricher::new(table, tracker);
    let kinds = &config.output.kinds;
    let seeded = enricher.seed(procfs::scan(std::path::Path::new("/proc")));
    let process_kinds: Vec<Kind> = if config.output.seed_events {
        kinds.clone()
    } else {
        Vec::new()
    };
    emit(&mut output, &process_kinds, &mut detect, &seeded);
    let connections = seed_sockets(&mut enricher, &mut kernel_flows);
    let connection_kinds: Vec<Kind> = if net.seed_events {
        kinds.clone()
    } else {
        Vec::new()
    };
    emit(&mut output, &connection_kinds, &mut detect, &connections);
    output.flush();
    metrics
        .process_table_entries
        .set(enricher.table.stats().entries as i64);
    release_startup_memory();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<Vec<KernelEvent>>(CHANNEL_BATCHES);
    let rings = read::Rings {
        process: proc_ring,
        net: net_ring,
        parked,
    };
    let reader = tokio::spawn(read::run(rings, tx, metrics.clone(), shutdown_rx));
    let shared_metrics = Arc::new(metrics.clone());

    let attached = loaded.probes.iter().filter(|p| p.attached()).count();
    let metrics_addr = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "disabled".to_owned(), |a| a.to_string());
    tracing::info!(
        attached,
        probes = loaded.probes.len(),
        processes = enricher.table.stats().entries,
        connections = enricher.net.flows.len(),
        rules = detect.engine.rules().len(),
        metrics = %metrics_addr,
        capabilities = %load::caps::names(load::env::effective_caps()),
        "monitor ready"
    );
    let web = config.metrics.web.clone();
    let server = listener.map(|l| tokio::spawn(metrics::serve(l, shared_metrics, web)));

    let mut kernel_counters = KernelCounters::new(counters);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sweep = tokio::time::interval(Duration::from_secs(*net.sweep_secs.get_ref()));
    let mut relay_tick =
        tokio::time::interval(Duration::from_millis(*config.relay.sample_ms.get_ref()));
    let mut relay_check =
        tokio::time::interval(Duration::from_millis(*config.relay.check_ms.get_ref()));
    let mut dataplane_tick =
        tokio::time::interval(Duration::from_millis(*config.dataplane.scan_ms.get_ref()));
    let canary_secs = config.selfcheck.canary_secs;
    let mut canary_tick = tokio::time::interval(Duration::from_secs(canary_secs.max(1)));
    let mut link_tick = tokio::time::interval(Duration::from_secs(
        *config.selfcheck.link_check_secs.get_ref(),
    ));
    let mut evictions_seen = 0;
    let mut flow_evictions_seen = 0;
    let mut out = Vec::new();
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                handle(&mut enricher, &mut kernel_flows, &metrics, &mut selfcheck, batch, &mut out);
                count_changes(&metrics, &out);
                if config.relay.enabled {
                    let ctx = net_context(&enricher, &kernel_flows, dataplane.as_ref());
                    hops.observe(&ctx, BootClock::boot_now_ns(), &mut out);
                }
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = relay_check.tick(), if config.relay.enabled => {
                let ctx = net_context(&enricher, &kernel_flows, dataplane.as_ref());
                hops.check(&ctx, BootClock::boot_now_ns(), &mut out);
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = canary_tick.tick(), if canary_secs > 0 => {
                selfcheck.canary_tick(&enricher.clock, &mut out);
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = link_tick.tick() => {
                selfcheck.check_links(&enricher.clock, &mut out);
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = dataplane_tick.tick(), if dataplane.is_some() => {
                if let Some(dp) = dataplane.as_mut() {
                    tokio::task::block_in_place(|| dp.tick(&mut loaded.ebpf, &mut enricher, &mut out));
                }
                count_changes(&metrics, &out);
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = sweep.tick() => {
                tokio::task::block_in_place(|| enricher.sweep(&mut kernel_flows, &mut out));
                emit(&mut output, kinds, &mut detect, &out);
                out.clear();
                let evictions = enricher.net.flows.evictions();
                metrics.net_flow_table_evictions.inc_by(evictions - flow_evictions_seen);
                flow_evictions_seen = evictions;
                output.flush();
            }
            _ = relay_tick.tick(), if config.relay.enabled => {
                tokio::task::block_in_place(|| {
                    let io = kernel_flows.io_entries();
                    let ctx = net_context(&enricher, &kernel_flows, dataplane.as_ref());
                    hops.sample(&ctx, &io, BootClock::boot_now_ns(), &mut out);
                });
                write_out(&mut output, kinds, &mut detect, &mut out);
            }
            _ = tick.tick() => {
                enricher.table.expire(Instant::now());
                enricher.clock.refresh();
                let stats = enricher.table.stats();
                metrics.process_table_entries.set(stats.entries as i64);
                metrics.process_table_evictions.inc_by(stats.evictions - evictions_seen);
                evictions_seen = stats.evictions;
                metrics.net_flow_table_entries.set(enricher.net.flows.len() as i64);
                kernel_counters.poll(&metrics);
                if let Some(logger) = ebpf_logger.as_mut() {
                    logger.flush();
                }
            }
            _ = sighup.recv() => reload(config_path.as_deref(), &config, &mut detect, &metrics),
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Keep consuming while the reader finishes: it may be waiting for room
    // in the channel, and would wait forever if nobody drained it.
    let mut reader = reader;
    loop {
        tokio::select! {
            _ = &mut reader => break,
            batch = rx.recv() => match batch {
                Some(batch) => {
                    handle(&mut enricher, &mut kernel_flows, &metrics, &mut selfcheck, batch, &mut out);
                    emit(&mut output, kinds, &mut detect, &out);
                    out.clear();
                }
                None => break,
            },
        }
    }
    while let Ok(batch) = rx.try_recv() {
        handle(
            &mut enricher,
            &mut kernel_flows,
            &metrics,
            &mut selfcheck,
            batch,
            &mut out,
        );
    }
    emit(&mut output, kinds, &mut detect, &out);
    // Close the open dedup windows, so their final counts are not lost.
    let repeats = detect.flush();
    if kinds.contains(&Kind::Alert) {
        for alert in &repeats {
            output.write_value(Kind::Alert, alert);
        }
    }
    output.finish();
    if let Some(sinks) = detect.take_sinks() {
        sinks.close(ALERT_SINK_GRACE).await;
    }
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

/// Loading parses the kernel's BTF and the eBPF object (tens of MiB, freed
/// by now); hands the freed heap back to the system so a long-running
/// daemon does not keep it resident.
fn release_startup_memory() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}

/// What the relay and tunnel detectors read.
fn net_context<'a>(
    enricher: &'a Enricher,
    flows: &'a KernelFlows,
    dataplane: Option<&'a DataplaneStage>,
) -> NetContext<'a> {
    NetContext {
        net: &enricher.net,
        map: flows,
        procs: &enricher.table,
        clock: &enricher.clock,
        sides: dataplane.map(DataplaneStage::sides),
    }
}

/// Counts the configuration changes among `events`, whatever the output
/// kinds.
fn count_changes(metrics: &Metrics, events: &[Event]) {
    for ev in events {
        if let Event::ConfigChange(c) = ev {
            metrics
                .config_changes
                .with_label_values(&[c.change.as_str()])
                .inc();
        }
    }
}

/// The data plane stage, when enabled and its TC program loaded. Failing
/// to start it costs forwarded-flow visibility, not the monitor: logged.
fn start_dataplane(
    config: &Config,
    ebpf: &mut aya::Ebpf,
    probes: &[load::ProbeStatus],
    metrics: &Metrics,
) -> Option<DataplaneStage> {
    let dp = &config.dataplane;
    if !dp.enabled {
        return None;
    }
    let settings = dp.settings();
    let tc_loaded = probes
        .iter()
        .any(|p| p.spec.name == crate::dataplane::TC_PROGRAM && p.attached());
    match DataplaneStage::start(ebpf, settings, tc_loaded, metrics.clone()) {
        Ok(stage) => Some(stage),
        Err(e) => {
            tracing::error!(error = %e, "data plane not watched: forwarded flows, transit alerts and netlink-announced changes are lost");
            None
        }
    }
}

/// Enriches a batch into `out`.
fn handle(
    enricher: &mut Enricher,
    flows: &mut KernelFlows,
    metrics: &Metrics,
    selfcheck: &mut SelfCheck,
    batch: Vec<KernelEvent>,
    out: &mut Vec<Event>,
) {
    let now = Instant::now();
    for ev in batch {
        enricher.applied_ns = enricher.applied_ns.max(ev.ts_boot_ns());
        if let KernelEvent::Bench(_) = ev {
            metrics.bench_drained.inc();
            continue;
        }
        if selfcheck.is_canary(&ev, &enricher.clock, out) {
            continue;
        }
        enricher.apply(ev, now, flows, out);
    }
}

/// Writes out what a stage produced (see [`emit`]), then empties `out`.
fn write_out(output: &mut Output, kinds: &[Kind], detect: &mut Detect, out: &mut Vec<Event>) {
    emit(output, kinds, detect, out);
    out.clear();
    output.flush();
}

/// Runs the detect stage over events and writes those of the kinds the
/// configuration asks for, each followed by the alerts it raised.
fn emit(output: &mut Output, kinds: &[Kind], detect: &mut Detect, events: &[Event]) {
    let alerts_wanted = kinds.contains(&Kind::Alert);
    for ev in events {
        // Only events a rule runs for (or that name services) are turned
        // into JSON values for the rules.
        let alerts = if detect.wants(ev.kind()) {
            match serde_json::to_value(ev) {
                Ok(v) => detect.observe(&v),
                Err(e) => {
                    tracing::error!(error = %e, "event could not be serialised for the rules");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        if kinds.contains(&ev.kind()) {
            output.write_event(ev);
        }
        if alerts_wanted {
            for alert in &alerts {
                output.write_value(Kind::Alert, alert);
            }
        }
    }
}

/// SIGHUP: re-reads the configuration and the rules. Anything invalid
/// keeps the running rules and says why in one line.
fn reload(
    path: Option<&std::path::Path>,
    running: &Config,
    detect: &mut Detect,
    metrics: &Metrics,
) {
    let config = match path {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded()),
    };
    let result = config.map_err(|e| e.to_string()).and_then(|c| {
        load_rules(&c.detect, &[])
            .map(|rules| (c, rules))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok((config, rules)) => {
            let n = rules.len();
            detect.set_rules(rules);
            metrics.rule_reloads.with_label_values(&["ok"]).inc();
            tracing::info!(rules = n, "configuration and rules reloaded");
            if config.output != running.output
                || config.metrics != running.metrics
                || config.kernel != running.kernel
                || config.process_table != running.process_table
                || config.network != running.network
                || config.relay != running.relay
                || config.alerts != running.alerts
            {
                tracing::warn!("changes outside [detect] take effect at the next start");
            }
        }
        Err(e) => {
            metrics.rule_reloads.with_label_values(&["failed"]).inc();
            tracing::error!("reload failed, the running rules stay: {e}");
        }
    }
}

/// Adopts the sockets open at start. Failure here costs the history of
/// those sockets, not the monitor, so it is logged and the run goes on.
fn seed_sockets(enricher: &mut Enricher, kernel: &mut KernelFlows) -> Vec<Event> {
    let sockets = match sockdiag::dump_all() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sock_diag dump failed; connections open at start are not seeded");
            return Vec::new();
        }
    };
    let owners = sockdiag::socket_owners(std::path::Path::new("/proc"));
    let netns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino() as u32);
    let (events, sock_owners) =
        enricher
            .net
            .seed(&sockets, &owners, netns, &enricher.table, &enricher.clock);
    for (cookie, owner) in sock_owners {
        if let Err(e) = kernel.set_owner(cookie, owner) {
            tracing::warn!(error = %e, "socket owner map full while seeding; later events of some sockets name no process");
            break;
        }
    }
    events
}

fn take_map<T>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, RunError> {
    let map = ebpf.take_map(name).ok_or(RunError::MissingMap(name))?;
    convert(map).map_err(|source| RunError::Map { name, source })
}
