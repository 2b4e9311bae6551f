//! `monitor run`: builds the stages (load, read, decode, enrich, the
//! sensors, detect, output, export), hands them to the [`Pipeline`] and
//! runs it until SIGINT or SIGTERM.

use std::{path::PathBuf, time::Duration};

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
    config::Config,
    dataplane::stage::DataplaneStage,
    decode::KernelEvent,
    detect::{
        rule::RuleError,
        stage::{load_rules, Detect},
    },
    enrich::Enricher,
    event::Event,
    load, metrics,
    net::{maps::KernelFlows, netns, sensors::HopSensors, sockdiag, NetTracker},
    output::{self, Output},
    pipeline::{
        sensors::{Check, Hops, Housekeeping, Links, Plane},
        Metrics, Pipeline, Signals, World,
    },
    process::{cgroup::CgroupPaths, procfs, ProcessTable},
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
    sockets: netns::Found,
) -> Result<(), RunError> {
    // First, so a stop requested during start-up is a clean stop once the
    // probes are up, never the default action's abrupt exit.
    let mut signals = Signals {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
    };
    let metrics = Metrics::new();
    let rules = load_rules(&config.detect, &[])?;
    let mut detect = Detect::new(rules, Some(metrics.detect.clone()));
    if let Some(path) = &config.detect.state_file {
        detect.keep_state(path.clone());
    }
    detect.set_sinks(alert::Sinks::start(&config.alerts, &metrics.registry)?);
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
    let output = Output::new(
        config.output.stdout,
        config.output.file.as_deref(),
        metrics.output.clone(),
    )?;

    for status in &loaded.probes {
        metrics
            .probes
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
    let dataplane = start_dataplane(&config, ebpf, &loaded.probes, &metrics);
    let flush_log = aya_log::EbpfLogger::init(ebpf)
        .ok()
        .map(|mut logger| Box::new(move || logger.flush()) as Box<dyn FnMut() + Send>);
    let selfcheck = SelfCheck::new(&loaded.ebpf, metrics.selfcheck.clone());

    // Seed after attaching: a process or socket created in between is
    // both seeded and reported, never missed.
    let table = ProcessTable::new(
        *config.process_table.capacity.get_ref(),
        Duration::from_secs(config.process_table.exited_retention_secs),
    );
    let net = &config.network;
    let tracker = NetTracker::new(net.flow_table_capacity, net.settings(), metrics.net.clone());
    let mut enricher = Enricher::new(table, tracker);
    enricher.cgroups = CgroupPaths::discover();
    let kinds = &config.output.kinds;
    let seeded = enricher.seed(procfs::scan(std::path::Path::new("/proc")));
    let connections = seed_sockets(sockets, &mut enricher, &mut kernel_flows);
    let world = World {
        enricher,
        flows: kernel_flows,
        ebpf: loaded.ebpf,
        sides: dataplane.as_ref().map(|d| d.sides().clone()),
    };
    let mut pipeline = Pipeline::new(world, detect, output, kinds.clone(), metrics.clone());
    let none = Vec::new();
    pipeline.emit_seeded(
        &seeded,
        if config.output.seed_events {
            kinds
        } else {
            &none
        },
    );
    pipeline.emit_seeded(&connections, if net.seed_events { kinds } else { &none });
    metrics
        .process
        .process_table_entries
        .set(pipeline.world.enricher.table.stats().entries as i64);
    release_startup_memory();

    pipeline.add_sensor(Box::new(Housekeeping {
        counters: KernelCounters::new(counters),
        flush_log,
        metrics: metrics.clone(),
        sweep: Duration::from_secs(*net.sweep_secs.get_ref()),
        evictions_seen: 0,
        flow_evictions_seen: 0,
    }));
    if config.relay.enabled {
        pipeline.add_sensor(Box::new(Hops {
            sensors: HopSensors::new(config.relay.settings(), metrics.hops.clone()),
            check: Duration::from_millis(*config.relay.check_ms.get_ref()),
            sample: Duration::from_millis(*config.relay.sample_ms.get_ref()),
        }));
    }
    pipeline.add_sensor(Box::new(Links::default()));
    if let Some(stage) = dataplane {
        pipeline.add_sensor(Box::new(Plane {
            stage,
            every: Duration::from_millis(*config.dataplane.scan_ms.get_ref()),
        }));
    }
    pipeline.add_sensor(Box::new(Check {
        selfcheck,
        canary: Duration::from_secs(config.selfcheck.canary_secs),
        links: Duration::from_secs(*config.selfcheck.link_check_secs.get_ref()),
    }));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<Vec<KernelEvent>>(CHANNEL_BATCHES);
    let rings = read::Rings {
        process: proc_ring,
        net: net_ring,
        parked,
    };
    let reader = tokio::spawn(read::run(rings, tx, metrics.read.clone(), shutdown_rx));

    let attached = loaded.probes.iter().filter(|p| p.attached()).count();
    let metrics_addr = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "disabled".to_owned(), |a| a.to_string());
    let world = &pipeline.world;
    tracing::info!(
        attached,
        probes = loaded.probes.len(),
        processes = world.enricher.table.stats().entries,
        connections = world.enricher.net.flows.len(),
        rules = pipeline.detect.engine.rules().len(),
        metrics = %metrics_addr,
        capabilities = %load::caps::names(load::env::effective_caps()),
        jobs = %pipeline.job_names().join(","),
        "monitor ready"
    );
    let web = config.metrics.web.clone();
    let server = listener.map(|l| tokio::spawn(metrics::serve(l, metrics.registry.clone(), web)));

    pipeline
        .run(&mut rx, &mut signals, |detect| {
            reload(config_path.as_deref(), &config, detect, &metrics);
        })
        .await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    pipeline.finish(reader, &mut rx).await;
    if let Some(sinks) = pipeline.detect.take_sinks() {
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
    match DataplaneStage::start(ebpf, settings, tc_loaded, metrics.dataplane.clone()) {
        Ok(stage) => Some(stage),
        Err(e) => {
            tracing::error!(error = %e, "data plane not watched: forwarded flows, transit alerts and netlink-announced changes are lost");
            None
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
            metrics.detect.rule_reloads.with_label_values(&["ok"]).inc();
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
            metrics
                .detect
                .rule_reloads
                .with_label_values(&["failed"])
                .inc();
            tracing::error!("reload failed, the running rules stay: {e}");
        }
    }
}

/// Adopts the sockets open at start in every network namespace (read by
/// [`netns::sockets_everywhere`] before the capability drop). Failure here
/// costs the history of those sockets, not the monitor, so it is logged
/// and the run goes on.
fn seed_sockets(
    found: netns::Found,
    enricher: &mut Enricher,
    kernel: &mut KernelFlows,
) -> Vec<Event> {
    let owners = sockdiag::socket_owners(std::path::Path::new("/proc"));
    let mut events = Vec::new();
    let mut full = false;
    let (mut sock_diag, mut proc_net) = (0, 0);
    for ns in &found.namespaces {
        match ns.source {
            netns::Source::SockDiag => sock_diag += 1,
            netns::Source::ProcNet => proc_net += 1,
        }
        let (seeded, sock_owners) = enricher.net.seed(
            &ns.sockets,
            &owners,
            ns.netns,
            &enricher.table,
            &enricher.clock,
        );
        events.extend(seeded);
        for (cookie, owner) in sock_owners {
            if full {
                break;
            }
            if let Err(e) = kernel.set_owner(cookie, owner) {
                tracing::warn!(error = %e, "socket owner map full while seeding; later events of some sockets name no process");
                full = true;
            }
        }
    }
    tracing::info!(
        sock_diag,
        proc_net,
        unreadable = found.skipped.namespaces,
        empty_unreadable = found.skipped.empty,
        proc_entries_skipped = found.skipped.proc_entries,
        "sockets open at start read from every network namespace"
    );
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
