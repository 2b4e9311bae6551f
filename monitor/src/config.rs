//! Configuration: the embedded default, loading from a file, and errors
//! that point at `file:line:col`. Each stage owns its section's settings
//! type (re-exported here); this module assembles and validates them.

use std::{fmt, sync::Arc};

use serde::Deserialize;

use crate::{event::Kind, load::probes::PROBES, web_config::WebConfig};

/// The embedded default configuration, printed by `monitor config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub kernel: KernelConfig,
    pub process_table: ProcessTableConfig,
    pub network: NetworkConfig,
    pub detect: DetectConfig,
    pub relay: RelayConfig,
    pub dataplane: DataplaneConfig,
    pub alerts: crate::alert::config::AlertsConfig,
    pub selfcheck: SelfCheckConfig,
}

pub use crate::dataplane::DataplaneConfig;
pub use crate::detect::stage::DetectConfig;
pub use crate::load::EbpfLogLevel;
pub use crate::load::KernelConfig;
pub use crate::metrics::MetricsConfig;
pub use crate::net::sensors::RelayConfig;
pub use crate::net::NetworkConfig;
pub use crate::output::OutputConfig;
pub use crate::process::ProcessTableConfig;
pub use crate::selfcheck::SelfCheckConfig;
pub use crate::source::{line_col, FileError, Source};

/// A configuration error.
pub type ConfigError = FileError;

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Self {
        Self::parse(Source {
            name: "<embedded default>",
            text: DEFAULT_TOML,
        })
        .unwrap_or_else(|e| unreachable!("embedded default configuration is invalid: {e}"))
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(Source {
            name: &name,
            text: &text,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(src: Source<'_>) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(src.text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            invalid(&src, offset, e.message())
        })?;
        config.validate(&src)?;
        if let Some(path) = &config.metrics.web_config_file {
            let web = WebConfig::load(path.get_ref()).map_err(|e| match e {
                FileError::Read { path: name, source } => invalid(
                    &src,
                    path.span().start,
                    &format!("metrics.web_config_file: cannot read {name}: {source}"),
                ),
                e => e,
            })?;
            config.metrics.web = Some(Arc::new(web));
        }
        Ok(config)
    }

    fn validate(&self, src: &Source<'_>) -> Result<(), ConfigError> {
        let ring = &self.kernel.ring_buffer_bytes;
        let bytes = *ring.get_ref();
        if !bytes.is_power_of_two() || bytes < 4096 {
            return Err(invalid(
                src,
                ring.span().start,
                &format!("kernel.ring_buffer_bytes must be a power of two and at least 4096, not {bytes}"),
            ));
        }
        for name in &self.kernel.disabled_probes {
            let message = match PROBES.iter().find(|p| p.name == name.get_ref().as_str()) {
                None => format!(
                    "kernel.disabled_probes: unknown probe {:?}; probes are: {}",
                    name.get_ref(),
                    PROBES.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                ),
                Some(p) if p.required => format!(
                    "kernel.disabled_probes: {} is required and cannot be disabled",
                    p.name
                ),
                Some(_) => continue,
            };
            return Err(invalid(src, name.span().start, &message));
        }
        let sample = &self.relay.sample_ms;
        if *sample.get_ref() < 100 {
            return Err(invalid(
                src,
                sample.span().start,
                "relay.sample_ms must be at least 100",
            ));
        }
        let check = &self.relay.check_ms;
        if !(50..=1000).contains(check.get_ref()) {
            return Err(invalid(
                src,
                check.span().start,
                "relay.check_ms must be between 50 and 1000",
            ));
        }
        let sweep = &self.network.sweep_secs;
        if *sweep.get_ref() == 0 {
            return Err(invalid(
                src,
                sweep.span().start,
                "network.sweep_secs must be at least 1",
            ));
        }
        let links = &self.selfcheck.link_check_secs;
        if *links.get_ref() == 0 {
            return Err(invalid(
                src,
                links.span().start,
                "selfcheck.link_check_secs must be at least 1",
            ));
        }
        let scan = &self.dataplane.scan_ms;
        if *scan.get_ref() < 100 {
            return Err(invalid(
                src,
                scan.span().start,
                "dataplane.scan_ms must be at least 100",
            ));
        }
        let fwd = &self.dataplane.flow_table_capacity;
        if *fwd.get_ref() == 0 {
            return Err(invalid(
                src,
                fwd.span().start,
                "dataplane.flow_table_capacity must be at least 1",
            ));
        }
        self.alerts
            .specs()
            .map_err(|e| invalid(src, e.offset, &e.message))?;
        let cap = &self.process_table.capacity;
        if *cap.get_ref() < 64 {
            return Err(invalid(
                src,
                cap.span().start,
                &format!(
                    "process_table.capacity must be at least 64, not {}",
                    cap.get_ref()
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(src: &Source<'_>, offset: usize, message: &str) -> ConfigError {
    src.error(offset, message)
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Source {
            name: "test.toml",
            text,
        })
    }

    #[test]
    fn embedded_default_parses_and_matches_code_defaults() {
        let embedded = Config::embedded();
        let code = Config::default();
        assert_eq!(embedded.metrics.listen, code.metrics.listen);
        assert_eq!(embedded.output.kinds, code.output.kinds);
        assert_eq!(embedded.output.stdout, code.output.stdout);
        assert_eq!(embedded.output.seed_events, code.output.seed_events);
        assert_eq!(
            embedded.kernel.ring_buffer_bytes.get_ref(),
            code.kernel.ring_buffer_bytes.get_ref()
        );
        assert_eq!(embedded.kernel.ebpf_log_level, code.kernel.ebpf_log_level);
        assert_eq!(
            embedded.process_table.capacity.get_ref(),
            code.process_table.capacity.get_ref()
        );
        assert_eq!(
            embedded.process_table.exited_retention_secs,
            code.process_table.exited_retention_secs
        );
        let (e, c) = (&embedded.network, &code.network);
        assert_eq!(e.flow_table_capacity, c.flow_table_capacity);
        assert_eq!(e.flow_update_secs, c.flow_update_secs);
        assert_eq!(e.udp_idle_secs, c.udp_idle_secs);
        assert_eq!(e.tcp_idle_secs, c.tcp_idle_secs);
        assert_eq!(e.sweep_secs.get_ref(), c.sweep_secs.get_ref());
        assert_eq!(e.seed_events, c.seed_events);
        assert_eq!(embedded.detect, code.detect);
        let (e, c) = (&embedded.relay, &code.relay);
        assert_eq!(e.enabled, c.enabled);
        assert_eq!(e.volume_bytes, c.volume_bytes);
        assert_eq!(e.sample_ms.get_ref(), c.sample_ms.get_ref());
        assert_eq!(e.interactive_samples, c.interactive_samples);
        assert_eq!(e.active_secs, c.active_secs);
        assert_eq!(e.allowed_proxies, c.allowed_proxies);
        let (e, c) = (&embedded.dataplane, &code.dataplane);
        assert_eq!(e.enabled, c.enabled);
        assert_eq!(e.netns, c.netns);
        assert_eq!(e.interfaces, c.interfaces);
        assert_eq!(e.published, c.published);
        assert_eq!(
            e.flow_table_capacity.get_ref(),
            c.flow_table_capacity.get_ref()
        );
        assert_eq!(e.scan_ms.get_ref(), c.scan_ms.get_ref());
        assert_eq!(e.report_secs, c.report_secs);
        assert_eq!(e.idle_secs, c.idle_secs);
        let (e, c) = (&embedded.selfcheck, &code.selfcheck);
        assert_eq!(e.canary_secs, c.canary_secs);
        assert_eq!(e.link_check_secs.get_ref(), c.link_check_secs.get_ref());
        assert_eq!(embedded.alerts, code.alerts);
    }

    #[test]
    fn dataplane_roles_and_services_parse_and_reject_unknowns() {
        let c = parse(
            "[dataplane]\ninterfaces = [{ name = \"eth0\", role = \"wan\" }]\n\
             published = [{ proto = \"tcp\", port = 443 }]\n",
        )
        .expect("valid");
        assert_eq!(c.dataplane.interfaces[0].name, "eth0");
        let err = parse("[dataplane]\ninterfaces = [{ name = \"eth0\", role = \"dmz\" }]\n")
            .expect_err("unknown role");
        assert!(err.to_string().contains("test.toml:2:"), "{err}");
        let err = parse("[dataplane]\npublished = [{ proto = \"sctp\", port = 1 }]\n")
            .expect_err("unknown proto");
        assert!(err.to_string().contains("test.toml:2:"), "{err}");
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.metrics.listen, Config::default().metrics.listen);
    }

    #[test]
    fn syntax_error_points_at_line_and_column() {
        let err = parse("[output]\nstdout = tru\n").expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:2:10: "), "{msg}");
    }

    #[test]
    fn unknown_key_is_rejected_with_position() {
        let err = parse("[metrics]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:3:1: "), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn semantic_error_points_at_the_value() {
        let err = parse("[kernel]\nring_buffer_bytes = 5000\n").expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:2:21: "), "{msg}");
        assert!(msg.contains("power of two"), "{msg}");
    }

    #[test]
    fn disabled_probes_must_exist_and_be_optional() {
        let ok = parse("[kernel]\ndisabled_probes = [\"process_sched_fork\"]\n").expect("valid");
        assert_eq!(ok.kernel.disabled_probes[0].get_ref(), "process_sched_fork");
        let err = parse("[kernel]\ndisabled_probes = [\"nope\"]\n").expect_err("unknown");
        assert!(err.to_string().starts_with("test.toml:2:20: "), "{err}");
        let err =
            parse("[kernel]\ndisabled_probes = [\"process_sched_exec\"]\n").expect_err("required");
        assert!(err.to_string().contains("required"), "{err}");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let err = parse("[output]\nkinds = [\"exec\", \"nope\"]\n").expect_err("invalid");
        assert!(err.to_string().starts_with("test.toml:2:"), "{err}");
    }

    /// Every `[section] key` of the embedded default.
    fn default_keys() -> Vec<(String, String)> {
        let table: toml::Table = toml::from_str(DEFAULT_TOML).expect("default parses");
        table
            .iter()
            .filter_map(|(section, v)| Some((section, v.as_table()?)))
            .flat_map(|(section, t)| t.keys().map(move |k| (section.clone(), k.clone())))
            .collect()
    }

    /// A TOML value of any type, integers over their whole range.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            (0i64..100_000).prop_map(|v| v.to_string()),
            any::<bool>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            "[ -~&&[^\"\\\\]]{0,12}".prop_map(|v| format!("{v:?}")),
            proptest::collection::vec(any::<i64>(), 0..3).prop_map(|v| format!("{v:?}")),
            Just("{ a = 1 }".to_owned()),
        ]
    }

    proptest! {
        /// Any text either parses into a configuration whose derived
        /// settings can be computed, or fails with an error that names a
        /// line and column inside the text.
        #[test]
        fn any_text_parses_or_points_inside(text in "\\PC{0,200}") {
            crate::fuzz::config(text.as_bytes());
        }

        /// The same for the embedded default with some characters replaced
        /// by TOML-ish ones, which reaches past the syntax into validation.
        #[test]
        fn edited_default_parses_or_points_inside(
            at in any::<prop::sample::Index>(),
            cut in 0usize..16,
            insert in "[a-z_=\\[\\]\"0-9. \n#{},-]{0,12}",
        ) {
            let text = crate::fuzz::tests::splice(DEFAULT_TOML, at, cut, &insert);
            crate::fuzz::config(text.as_bytes());
        }

        /// Any value for any key: accepted with computable settings, or an
        /// error inside the text.
        #[test]
        fn any_value_for_any_key(
            key in proptest::sample::select(default_keys()),
            value in any_value(),
        ) {
            let text = format!("[{}]\n{} = {value}\n", key.0, key.1);
            crate::fuzz::config(text.as_bytes());
        }
    }

    /// Found by the config property tests: the daemon turned these
    /// seconds into nanoseconds with an overflowing multiplication.
    #[test]
    fn huge_durations_saturate() {
        let max = i64::MAX;
        let c = parse(&format!(
            "[network]\nflow_update_secs = {max}\nudp_idle_secs = {max}\ntcp_idle_secs = {max}\n\
             [relay]\nactive_secs = {max}\n[dataplane]\nreport_secs = {max}\nidle_secs = {max}\n"
        ))
        .expect("valid");
        let net = c.network.settings();
        assert_eq!(net.update_interval_ns, u64::MAX);
        assert_eq!(net.udp_idle_ns, u64::MAX);
        assert_eq!(net.tcp_idle_ns, u64::MAX);
        assert_eq!(c.relay.settings().active_ns, u64::MAX);
        let dp = c.dataplane.settings();
        assert_eq!((dp.report_ns, dp.idle_ns), (u64::MAX, u64::MAX));
        assert_eq!(
            Config::default().network.settings().udp_idle_ns,
            60_000_000_000
        );
    }

    #[test]
    fn web_config_file_is_read_with_the_configuration() {
        let dir = std::env::temp_dir().join(format!("edgewatch-config-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let web = dir.join("web.yml");
        let hash = bcrypt::hash("pw", 4).expect("hash");
        std::fs::write(&web, format!("basic_auth_users:\n  prom: '{hash}'\n")).expect("write");
        let c = parse(&format!(
            "[metrics]\nweb_config_file = {:?}\n",
            web.display().to_string()
        ))
        .expect("valid");
        let loaded = c.metrics.web.expect("web config read");
        assert_eq!(loaded.user_names(), ["prom"]);
        std::fs::write(&web, "basic_auth_users:\n  prom: plain\n").expect("write");
        let err = parse(&format!(
            "[metrics]\nweb_config_file = {:?}\n",
            web.display().to_string()
        ))
        .expect_err("not a hash");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:3: ", web.display())),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let err =
            parse("[metrics]\nweb_config_file = \"/nonexistent/web.yml\"\n").expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "test.toml:2:19: metrics.web_config_file: cannot read /nonexistent/web.yml: "
            ),
            "{msg}"
        );
        assert!(Config::embedded().metrics.web.is_none());
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_col("ab\ncé\nx", 4), (2, 2));
    }
}
