//! `monitor run`: wires the stages together (load, read, decode, enrich,
//! output, export) and runs them until SIGINT or SIGTERM.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{PerCpuArray, RingBuf};
use monitor_common::limits::{MAP_COUNTERS, MAP_PROC_EVENTS};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use crate::{
    config::Config,
    decode::KernelEvent,
    enrich::Enricher,
    event::Kind,
    load,
    metrics::{self, Metrics},
    output::{self, Output},
    process::{procfs, ProcessTable},
    read::{self, KernelCounters},
};

/// Batches in flight between the read and enrich stages. When full, the
/// reader waits and the ring buffer absorbs the burst; past that the kernel
/// counts what it drops.
const CHANNEL_BATCHES: usize = 64;

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
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(config: Config) -> Result<(), RunError> {
    let metrics = Metrics::new();
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

    let mut loaded = load::load(&config)?;
    for status in &loaded.probes {
        metrics
            .probe_attached
            .with_label_values(&[status.spec.name])
            .set(i64::from(status.attached()));
    }
    let ring = take_map(&mut loaded.ebpf, MAP_PROC_EVENTS, RingBuf::try_from)?;
    let counters = take_map(&mut loaded.ebpf, MAP_COUNTERS, |m| {
        PerCpuArray::<_, u64>::try_from(m)
    })?;
    let mut ebpf_logger = aya_log::EbpfLogger::init(&mut loaded.ebpf).ok();

    // Seed after attaching: a process created in between is both seeded
    // and reported, never missed.
    let table = ProcessTable::new(
        *config.process_table.capacity.get_ref(),
        Duration::from_secs(config.process_table.exited_retention_secs),
    );
    let mut enricher = Enricher::new(table);
    let seeded = enricher.seed(procfs::scan(std::path::Path::new("/proc")));
    if config.output.seed_events && config.output.kinds.contains(&Kind::Process) {
        for ev in &seeded {
            output.write(ev);
        }
        output.flush();
    }
    metrics
        .process_table_entries
        .set(enricher.table.stats().entries as i64);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<Vec<KernelEvent>>(CHANNEL_BATCHES);
    let reader = tokio::spawn(read::run(ring, tx, metrics.clone(), shutdown_rx.clone()));
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
        metrics = %metrics_addr,
        "monitor ready"
    );
    let server = listener.map(|l| tokio::spawn(metrics::serve(l, shared_metrics)));

    let mut kernel_counters = KernelCounters::new(counters);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut evictions_seen = 0;
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                handle(&mut enricher, &mut output, &config.output.kinds, batch);
                tokio::task::block_in_place(|| output.flush());
            }
            _ = tick.tick() => {
                enricher.table.expire(Instant::now());
                enricher.clock.refresh();
                let stats = enricher.table.stats();
                metrics.process_table_entries.set(stats.entries as i64);
                metrics.process_table_evictions.inc_by(stats.evictions - evictions_seen);
                evictions_seen = stats.evictions;
                kernel_counters.poll(&metrics);
                if let Some(logger) = ebpf_logger.as_mut() {
                    logger.flush();
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = reader.await;
    while let Ok(batch) = rx.try_recv() {
        handle(&mut enricher, &mut output, &config.output.kinds, batch);
    }
    output.flush();
    if let Some(server) = server {
        server.abort();
    }
    Ok(())
}

/// Enriches a batch and writes the kinds the configuration asks for.
fn handle(enricher: &mut Enricher, output: &mut Output, kinds: &[Kind], batch: Vec<KernelEvent>) {
    let now = Instant::now();
    for ev in batch {
        let ev = enricher.apply(ev, now);
        if kinds.contains(&ev.kind()) {
            output.write(&ev);
        }
    }
}

fn take_map<T>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, RunError> {
    let map = ebpf.take_map(name).ok_or(RunError::MissingMap(name))?;
    convert(map).map_err(|source| RunError::Map { name, source })
}
