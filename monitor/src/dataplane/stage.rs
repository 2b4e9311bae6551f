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
use crate::{clock::BootClock, enrich::Enricher, event::Event, net::sides::SideMap};

/// Scans between two interface rescans when no link was announced.
const RESCAN_EVERY: u64 = 10;
/// How long a notice whose process is not known yet waits for its exec
/// record before it is reported without one.
const ATTRIBUTION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct DataplaneStage {
    /// Forwarded flows; `None` when the TC program did not load.
    plane: Option<DataPlane>,
    watcher: Option<Watcher>,
    /// The watched namespace, for joining the nftables group later.
    netns_path: Option<std::path::PathBuf>,
    netns: u32,
    scans: u64,
    overruns_seen: u64,
    /// Notices waiting for their process to be known: each with when it
    /// was read (as an instant, and on the boot clock).
    pending: Vec<(Notice, Instant, u64)>,
    /// The sides of the watched namespace, for rating relays.
    sides: SideMap,
    /// The sides were read again since [`Self::take_sides_changed`].
    sides_changed: bool,
    roles: Vec<iface::IfaceRole>,
    metrics: super::DataplaneMetrics,
}

impl DataplaneStage {
    pub fn start(
        ebpf: &mut Ebpf,
        settings: Settings,
        tc_loaded: bool,
        metrics: super::DataplaneMetrics,
    ) -> Result<Self, DataPlaneError> {
        let netns_path = settings.netns.clone();
        let roles = settings.roles.clone();
        let watcher = match iface::in_netns(netns_path.as_deref(), Watcher::open)? {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot join the link notification group; tunnel links and promiscuous mode set over netlink are not reported");
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
        let mut stage = Self {
            plane,
            watcher,
            netns_path,
            netns,
            scans: 0,
            overruns_seen: 0,
            pending: Vec::new(),
            sides: SideMap::default(),
            sides_changed: false,
            roles,
            metrics,
        };
        stage.read_sides();
        Ok(stage)
    }

    /// The sides of the watched namespace, as of the last rescan.
    pub fn sides(&self) -> &SideMap {
        &self.sides
    }

    /// Whether the sides changed since the last call.
    pub fn take_sides_changed(&mut self) -> bool {
        std::mem::take(&mut self.sides_changed)
    }

    fn read_sides(&mut self) {
        let (netns, roles) = (self.netns, &self.roles);
        match iface::in_netns(self.netns_path.as_deref(), || iface::sides(netns, roles)) {
            Ok(Ok(map)) => {
                self.sides_changed |= map != self.sides;
                self.sides = map;
            }
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(error = %e, "cannot read the interfaces' addresses; relays are not rated by side");
            }
        }
    }

    /// One scan; its events go to `out`.
    pub fn tick(&mut self, ebpf: &mut Ebpf, enricher: &mut Enricher, out: &mut Vec<Event>) {
        self.scans += 1;
        let mut link_appeared = false;
        if let Some(w) = self.watcher.as_mut() {
            if !w.nftables_joined() && self.scans.is_multiple_of(RESCAN_EVERY) {
                if let Ok(Ok(())) =
                    iface::in_netns(self.netns_path.as_deref(), || w.join_nftables())
                {
                    tracing::info!("joined the nftables notification group; nftables commits are reported from now on");
                }
            }
            let now = Instant::now();
            let read_ns = BootClock::boot_now_ns();
            let fresh = w.poll();
            link_appeared |= fresh
                .iter()
                .any(|n| matches!(n, Notice::LinkCreated { .. }));
            let mut waiting = std::mem::take(&mut self.pending);
            waiting.extend(fresh.into_iter().map(|n| (n, now, read_ns)));
            for (notice, since, read_ns) in waiting {
                // A notice comes by netlink, not through the rings: the
                // exec records of the process it names can still be on
                // their way. It waits (a little) until the rings have been
                // applied up to when it was read, so that process is known
                // under its latest exec (`ip netns exec` becoming
                // `iptables`), not an earlier one.
                let settled = enricher.applied_ns >= read_ns;
                let Some(r) = enricher.changes.from_notice(
                    notice.clone(),
                    self.netns,
                    now,
                    &enricher.table,
                    &enricher.clock,
                ) else {
                    continue;
                };
                if (!settled || r.process.is_none()) && now.duration_since(since) < ATTRIBUTION_WAIT
                {
                    self.pending.push((notice, since, read_ns));
                } else {
                    out.push(Event::ConfigChange(Box::new(r)));
                }
            }
            self.metrics
                .netlink_overruns
                .inc_by(w.overruns - self.overruns_seen);
            self.overruns_seen = w.overruns;
        }
        if link_appeared || self.scans.is_multiple_of(RESCAN_EVERY) {
            self.read_sides();
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
