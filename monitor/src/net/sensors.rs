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
use crate::{
    event::Event,
    metrics::{counter, counter_vec},
};

/// The relay and tunnel detectors' metrics.
#[derive(Clone)]
pub struct HopMetrics {
    pub relays: prometheus::IntCounterVec,
    pub tunnels: prometheus::IntCounterVec,
    pub relay_pairs_examined: prometheus::IntCounter,
    pub relay_pairs_dropped: prometheus::IntCounter,
}

impl HopMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        let m = Self {
            relays: counter_vec(
                registry,
                "net_relays_total",
                "Relays detected (pairs of connections whose bytes pass from one to the other), by method (fingerprint, exchange, bulk, interactive, tunnel) and whether the proxy was declared (allowed).",
                &["method", "allowed"],
            ),
            tunnels: counter_vec(
                registry,
                "net_tunnels_total",
                "Flows found carrying traffic inside another protocol, by carrier (dns, icmp, http) and whether the gateway forwards them.",
                &["protocol", "forwarded"],
            ),
            relay_pairs_examined: counter(
                registry,
                "relay_pairs_examined_total",
                "Pairs of connections the relay detector judged.",
            ),
            relay_pairs_dropped: counter(
                registry,
                "relay_pairs_dropped_total",
                "New pairs of connections not watched because the relay detector's watch list was full.",
            ),
        };
        for method in crate::event::relay::Method::ALL {
            for allowed in ["false", "true"] {
                m.relays.with_label_values(&[method.as_str(), allowed]);
            }
        }
        for c in crate::event::tunnel::Carrier::ALL {
            for forwarded in ["false", "true"] {
                m.tunnels.with_label_values(&[c.as_str(), forwarded]);
            }
        }
        m
    }
}

pub struct HopSensors {
    relays: RelayDetector,
    tunnels: TunnelDetector,
    relay_settings: RelaySettings,
    tunnel_settings: TunnelSettings,
    metrics: HopMetrics,
    /// The relay detector's counts at the last metrics update.
    counted: RelayStats,
}

impl HopSensors {
    pub fn new(relay_settings: RelaySettings, metrics: HopMetrics) -> Self {
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

#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Bytes each way after which a balanced pair of connections is a relay.
    pub volume_bytes: u64,
    /// How often connection counters are sampled for relays, in ms.
    pub sample_ms: toml::Spanned<u64>,
    /// How often pairs of connections under watch are judged, in ms.
    pub check_ms: toml::Spanned<u64>,
    /// Correlated samples each way that make a low-volume pair a relay.
    pub interactive_samples: u32,
    /// A connection belongs to a process's candidate legs if it used it
    /// this recently, in seconds.
    pub active_secs: u64,
    /// Proxies run on purpose: `{ exe = "/usr/sbin/nginx", ports = [80, 443] }`.
    pub allowed_proxies: Vec<crate::net::relay::AllowedProxy>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            volume_bytes: 16 * 1024,
            sample_ms: toml::Spanned::new(0..0, 1000),
            check_ms: toml::Spanned::new(0..0, 250),
            interactive_samples: 3,
            active_secs: 30,
            allowed_proxies: Vec::new(),
        }
    }
}

impl RelayConfig {
    /// The relay detector's settings.
    pub fn settings(&self) -> crate::net::relay::RelaySettings {
        crate::net::relay::RelaySettings {
            volume_bytes: self.volume_bytes,
            active_ns: crate::clock::secs_to_ns(self.active_secs),
            interactive_samples: self.interactive_samples,
            allowed: self.allowed_proxies.clone(),
        }
    }
}
