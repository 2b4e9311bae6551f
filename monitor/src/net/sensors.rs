//! The relay and tunnel detectors as the daemon runs them: each batch of
//! socket events goes through both, pairs and flows under watch are judged
//! every `relay.check_ms`, and connections are sampled for relays every
//! `relay.sample_ms`.
//! Found relays and tunnels become events; the detectors' work counts
//! become metrics.

use monitor_common::event::{IoKey, IoStats};

use super::{
    relay::{RelayDetector, RelaySettings, RelayStats},
    tunnel::{TunnelDetector, TunnelRecord, TunnelSettings},
    Context,
};
use crate::{event::Event, metrics::Metrics};

pub struct HopSensors {
    relays: RelayDetector,
    tunnels: TunnelDetector,
    relay_settings: RelaySettings,
    tunnel_settings: TunnelSettings,
    metrics: Metrics,
    /// The relay detector's counts at the last metrics update.
    counted: RelayStats,
}

impl HopSensors {
    pub fn new(relay_settings: RelaySettings, metrics: Metrics) -> Self {
        // Declared proxies and forwarders are declared for tunnels too (a
        // DNS forwarder asks the same server many things).
        let tunnel_settings = TunnelSettings {
            allowed_exes: relay_settings
                .allowed
                .iter()
                .map(|a| a.exe.clone())
                .collect(),
        };
        Self {
            relays: RelayDetector::default(),
            tunnels: TunnelDetector::default(),
            relay_settings,
            tunnel_settings,
            metrics,
            counted: RelayStats::default(),
        }
    }

    /// A batch of events the enrich stage produced: relays and tunnels
    /// they reveal are added to `out`.
    pub fn observe(&mut self, ctx: &Context<'_>, now: u64, out: &mut Vec<Event>) {
        let relays = self.relays.observe(out, ctx, &self.relay_settings, now);
        let tunnels = self.tunnels.observe(out, ctx, &self.tunnel_settings, now);
        self.push(relays, tunnels, out);
    }

    /// Judges the pairs and the flows under watch.
    pub fn check(&mut self, ctx: &Context<'_>, now: u64, out: &mut Vec<Event>) {
        let relays = self.relays.tick(ctx, &self.relay_settings, now);
        let tunnels = self.tunnels.sample(ctx, &self.tunnel_settings, now);
        self.push(relays, tunnels, out);
        let s = self.relays.stats();
        self.metrics
            .relay_pairs_examined
            .inc_by(s.examined - self.counted.examined);
        self.metrics
            .relay_pairs_dropped
            .inc_by(s.dropped - self.counted.dropped);
        self.counted = s.clone();
    }

    /// Samples the connections processes used lately (`io`, the kernel's
    /// per-process socket activity) for relays.
    pub fn sample(
        &mut self,
        ctx: &Context<'_>,
        io: &[(IoKey, IoStats)],
        now: u64,
        out: &mut Vec<Event>,
    ) {
        let relays = self.relays.sample(now, io, ctx, &self.relay_settings);
        self.push(relays, Vec::new(), out);
    }

    fn push(
        &self,
        relays: Vec<super::relay::RelayRecord>,
        tunnels: Vec<TunnelRecord>,
        out: &mut Vec<Event>,
    ) {
        for r in relays {
            self.metrics
                .relays
                .with_label_values(&[r.method.as_str(), if r.allowed { "true" } else { "false" }])
                .inc();
            out.push(Event::Relay(Box::new(r)));
        }
        for t in tunnels {
            self.metrics
                .tunnels
                .with_label_values(&[
                    t.protocol.as_str(),
                    if t.forwarded { "true" } else { "false" },
                ])
                .inc();
            out.push(Event::Tunnel(Box::new(t)));
        }
    }
}
