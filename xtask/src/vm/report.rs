//! The per-kernel report: read from the guest's result lines, printed as a
//! table and written as JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// One probe as the monitor reported it in the guest.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub name: String,
    pub attached: bool,
    /// Why it did not attach, from the monitor's warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is lost without it, from the monitor's warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loses: Option<String>,
}

/// One test binary's run.
#[derive(Debug, Default, Serialize)]
pub struct Suite {
    pub name: String,
    /// 0 when every test passed, 1 when one failed; `None` when the VM
    /// stopped before the suite ended.
    pub exit_code: Option<i32>,
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub ignored: Vec<String>,
}

impl Suite {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && self.failed.is_empty()
    }
}

/// Everything one boot showed.
#[derive(Debug, Default, Serialize)]
pub struct KernelReport {
    /// What was asked for: `6.1`, a package or a path.
    pub kernel: String,
    pub package: Option<String>,
    /// `uname -r` in the guest.
    pub release: Option<String>,
    pub cmdline: Option<String>,
    pub modules_failed: Vec<String>,
    /// The monitor's exit code after the probe report (0: it ran and
    /// stopped cleanly on SIGTERM).
    pub monitor_exit: Option<i32>,
    /// What the monitor wrote to stderr in the probe report run.
    pub monitor_log: Vec<String>,
    pub probes: Vec<Probe>,
    pub suites: Vec<Suite>,
    /// The guest reached its end and powered off.
    pub completed: bool,
    pub timed_out: bool,
    pub seconds: u64,
    /// Set when a run expects the monitor to refuse to start: whether it
    /// did, with one line naming the missing hook, and exit code 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_as_expected: Option<bool>,
}

impl KernelReport {
    /// Reads the result lines (without their `@ew ` prefix).
    pub fn parse(kernel: &str, package: Option<String>, lines: &[String]) -> Self {
        let mut r = KernelReport {
            kernel: kernel.to_owned(),
            package,
            ..Default::default()
        };
        let mut attached = BTreeMap::new();
        let mut suites: BTreeMap<String, Suite> = BTreeMap::new();
        let mut suite_order = Vec::new();
        let mut suite = |name: &str, suites: &mut BTreeMap<String, Suite>| {
            if !suites.contains_key(name) {
                suite_order.push(name.to_owned());
            }
            suites.entry(name.to_owned()).or_insert_with(|| Suite {
                name: name.to_owned(),
                ..Default::default()
            });
        };
        for line in lines {
            let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
            match tag {
                "kernel" => r.release = Some(rest.to_owned()),
                "cmdline" => r.cmdline = Some(rest.to_owned()),
                "module-failed" => r.modules_failed.push(rest.to_owned()),
                "metric" => {
                    if let Some((name, value)) = probe_metric(rest) {
                        attached.insert(name, value);
                    }
                }
                "log" => r.monitor_log.push(rest.to_owned()),
                "monitor-exit" => r.monitor_exit = rest.trim().parse().ok(),
                "case" => {
                    let Some((name, case)) = rest.split_once(' ') else {
                        continue;
                    };
                    suite(name, &mut suites);
                    let Some((test, result)) = case.rsplit_once(" ... ") else {
                        continue;
                    };
                    let s = suites.get_mut(name).expect("suite added above");
                    let list = match result.trim() {
                        "ok" => &mut s.passed,
                        "ignored" => &mut s.ignored,
                        _ => &mut s.failed,
                    };
                    list.push(test.to_owned());
                }
                "suite-end" => {
                    let (name, code) = rest.split_once(' ').unwrap_or((rest, ""));
                    suite(name, &mut suites);
                    if let Some(s) = suites.get_mut(name) {
                        s.exit_code = code.trim().parse().ok();
                    }
                }
                "done" => r.completed = true,
                _ => {}
            }
        }
        let warnings: Vec<(String, String, String)> = r
            .monitor_log
            .iter()
            .filter_map(|l| probe_warning(l))
            .collect();
        r.probes = attached
            .into_iter()
            .map(|(name, on)| {
                let warning = warnings.iter().find(|w| w.0 == name);
                Probe {
                    attached: on,
                    error: warning.map(|w| w.1.clone()),
                    loses: warning.map(|w| w.2.clone()),
                    name,
                }
            })
            .collect();
        r.suites = suite_order
            .into_iter()
            .filter_map(|n| suites.remove(&n))
            .collect();
        r
    }

    /// Whether this kernel passed: every expected suite ran and passed, or
    /// the expected refusal happened.
    pub fn ok(&self, expected_suites: &[String]) -> bool {
        if let Some(refused) = self.refusal_as_expected {
            return refused && self.completed;
        }
        self.completed
            && !self.timed_out
            && self.monitor_exit == Some(0)
            && self.modules_failed.is_empty()
            && expected_suites
                .iter()
                .all(|name| self.suites.iter().any(|s| &s.name == name && s.ok()))
    }

    pub fn fell_back(&self) -> impl Iterator<Item = &Probe> {
        self.probes.iter().filter(|p| !p.attached)
    }
}

/// `edgewatch_probe_attached{probe="NAME"} 1` as (NAME, attached).
fn probe_metric(series: &str) -> Option<(String, bool)> {
    let rest = series.strip_prefix("edgewatch_probe_attached{probe=\"")?;
    let (name, rest) = rest.split_once("\"}")?;
    Some((name.to_owned(), rest.trim() == "1"))
}

/// The monitor's warning for a probe that did not attach, as (probe,
/// error, loses). Its fields are `probe="..." hook=... error=... lost="..."`.
fn probe_warning(line: &str) -> Option<(String, String, String)> {
    if !line.contains("probe not attached") {
        return None;
    }
    let probe = line.split_once("probe=\"")?.1.split_once('"')?.0;
    let error = line.split_once(" error=")?.1;
    let (error, lost) = error.rsplit_once(" lost=\"")?;
    let lost = lost.strip_suffix('"').unwrap_or(lost);
    Some((probe.to_owned(), error.to_owned(), lost.to_owned()))
}

/// The summary table: one row per kernel.
pub fn table(reports: &[KernelReport], suites: &[String]) -> String {
    let mut header = vec![
        "kernel".to_owned(),
        "release".to_owned(),
        "probes".to_owned(),
        "fell back".to_owned(),
    ];
    header.extend(suites.iter().cloned());
    header.push("result".to_owned());
    let mut rows = vec![header];
    for r in reports {
        let attached = r.probes.iter().filter(|p| p.attached).count();
        let fell_back: Vec<&str> = r.fell_back().map(|p| p.name.as_str()).collect();
        let mut row = vec![
            r.kernel.clone(),
            r.release.clone().unwrap_or_else(|| "?".to_owned()),
            if r.probes.is_empty() {
                "-".to_owned()
            } else {
                format!("{attached}/{}", r.probes.len())
            },
            if fell_back.is_empty() {
                "-".to_owned()
            } else {
                fell_back.join(", ")
            },
        ];
        for name in suites {
            row.push(match r.suites.iter().find(|s| &s.name == name) {
                Some(s) => {
                    let total = s.passed.len() + s.failed.len();
                    match (s.exit_code, s.ok()) {
                        (None, _) => format!("{}/{total} unfinished", s.passed.len()),
                        (Some(_), true) => format!("{}/{total} pass", s.passed.len()),
                        (Some(_), false) => format!("{}/{total} FAIL", s.passed.len()),
                    }
                }
                None => "not run".to_owned(),
            });
        }
        row.push(match (r.refusal_as_expected, r.ok(suites), r.timed_out) {
            (Some(true), _, _) => "refused as expected".to_owned(),
            (Some(false), _, _) => "FAIL: did not refuse as expected".to_owned(),
            (None, true, _) => "pass".to_owned(),
            (None, false, true) => "FAIL (timed out)".to_owned(),
            (None, false, false) => "FAIL".to_owned(),
        });
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn reads_probes_suites_and_fallbacks() {
        let r = KernelReport::parse(
            "6.1",
            None,
            &lines(
                "kernel 6.1.0-56-cloud-amd64\n\
                 metric edgewatch_probe_attached{probe=\"process_sched_exec\"} 1\n\
                 metric edgewatch_probe_attached{probe=\"net_sock_send_length\"} 0\n\
                 log 2026-11-26T02:00:00Z  WARN probe not attached; continuing without it probe=\"net_sock_send_length\" hook=tp_btf/sock_send_length error=no such type: sock_send_length lost=\"which process sends\"\n\
                 monitor-exit 0\n\
                 case process exec_event_is_exact ... ok\n\
                 case process failed_exec_is_its_own_kind ... FAILED\n\
                 suite-end process 1\n\
                 case relay socat ... ok\n\
                 suite-end relay 0\n\
                 done",
            ),
        );
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.probes.len(), 2);
        let fell: Vec<&Probe> = r.fell_back().collect();
        assert_eq!(fell.len(), 1);
        assert_eq!(fell[0].name, "net_sock_send_length");
        assert_eq!(
            fell[0].error.as_deref(),
            Some("no such type: sock_send_length")
        );
        assert_eq!(fell[0].loses.as_deref(), Some("which process sends"));
        assert_eq!(r.suites.len(), 2);
        assert_eq!(r.suites[0].name, "process");
        assert_eq!(r.suites[0].failed, ["failed_exec_is_its_own_kind"]);
        assert!(!r.suites[0].ok());
        assert!(r.suites[1].ok());
        let all = ["process".to_owned(), "relay".to_owned()];
        assert!(!r.ok(&all));
        assert!(r.ok(&all[1..]));
        assert!(table(&[r], &all).contains("1/2 FAIL"));
    }

    #[test]
    fn an_unfinished_boot_fails() {
        let r = KernelReport::parse("6.12", None, &lines("kernel 6.12\nmonitor-exit 0\n"));
        assert!(!r.ok(&[]));
    }
}
