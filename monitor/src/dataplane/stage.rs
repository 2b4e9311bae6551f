//! The data plane stage as the daemon runs it: at every scan, forwarded
//! flows from the kernel and configuration changes the kernel announced
//! over netlink; interfaces are rescanned every few scans and whenever a
//! link appears.

use std::time::Instant;

use aya::Ebpf;

use super::{
    iface,
    netlink::{Notice, Watcher},
    DataPlane, DataPlaneError, Settings,
};
use crate::{clock::BootClock, enrich::Enricher, event::Event, metrics::Metrics};

/// Scans between two interface rescans when no link was announced.
const RESCAN_EVERY: u64 = 10;

pub struct DataplaneStage {
    /// Forwarded flows; `None` when the TC program did not load.
    plane: Option<DataPlane>,
    watcher: Option<Watcher>,
    netns: u32,
    scans: u64,
    overruns_seen: u64,
    metrics: Metrics,
}

impl DataplaneStage {
    pub fn start(
        ebpf: &mut Ebpf,
        settings: Settings,
        tc_loaded: bool,
        metrics: Metrics,
    ) -> Result<Self, DataPlaneError> {
        let netns_path = settings.netns.clone();
        let watcher = match iface::in_netns(netns_path.as_deref(), Watcher::open)? {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot join netlink notification groups; nftables changes and tunnel links made over netlink are not reported");
                None
            }
        };
        let mut plane = if tc_loaded {
            Some(DataPlane::new(ebpf, settings, metrics.clone())?)
        } else {
            None
        };
        if let Some(p) = plane.as_mut() {
            p.rescan(ebpf)?;
        }
        let netns = match &plane {
            Some(p) => p.netns(),
            None => iface::in_netns(netns_path.as_deref(), super::netns_inode)??,
        };
        Ok(Self {
            plane,
            watcher,
            netns,
            scans: 0,
            overruns_seen: 0,
            metrics,
        })
    }

    /// One scan; its events go to `out`.
    pub fn tick(&mut self, ebpf: &mut Ebpf, enricher: &mut Enricher, out: &mut Vec<Event>) {
        self.scans += 1;
        let mut link_appeared = false;
        if let Some(w) = self.watcher.as_mut() {
            let now = Instant::now();
            for notice in w.poll() {
                link_appeared |= matches!(notice, Notice::LinkCreated { .. });
                if let Some(r) = enricher.changes.from_notice(
                    notice,
                    self.netns,
                    now,
                    &enricher.table,
                    &enricher.clock,
                ) {
                    out.push(Event::ConfigChange(Box::new(r)));
                }
            }
            self.metrics
                .netlink_overruns
                .inc_by(w.overruns - self.overruns_seen);
            self.overruns_seen = w.overruns;
        }
        let Some(plane) = self.plane.as_mut() else {
            return;
        };
        if link_appeared || self.scans.is_multiple_of(RESCAN_EVERY) {
            if let Err(e) = plane.rescan(ebpf) {
                tracing::warn!(error = %e, "interface rescan failed");
            }
        }
        out.extend(plane.scan(BootClock::boot_now_ns(), &enricher.clock));
    }
}
