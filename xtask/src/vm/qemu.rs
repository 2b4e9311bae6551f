//! Boots one kernel with its initrd under QEMU's TCG emulation and follows
//! the guest's result lines until it powers off or the time runs out.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// One boot.
pub struct Boot<'a> {
    pub image: &'a Path,
    pub initrd: &'a Path,
    /// Extra kernel command line.
    pub append: &'a str,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
    /// The console's log and the result lines are written here.
    pub dir: &'a Path,
}

/// What came out of a boot.
pub struct Outcome {
    /// The `@ew ...` lines from ttyS1, without the prefix.
    pub results: Vec<String>,
    pub console: PathBuf,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Boot<'_> {
    /// Runs the VM; `progress` sees each result line as it arrives.
    pub fn run(&self, mut progress: impl FnMut(&str)) -> Result<Outcome> {
        let console = self.dir.join("console.log");
        let results = self.dir.join("results.log");
        // QEMU appends to a file chardev: start both afresh.
        for log in [&console, &results] {
            let _ = fs::remove_file(log);
        }
        // KVM guests hang on these machines; TCG is slower but works.
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &format!("{}M", self.memory_mib)])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            // No network device: the guest reaches nothing outside.
            .args(["-nic", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", results.display()))
            .arg("-kernel")
            .arg(self.image)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet panic=-1 rdinit=/init {}",
                self.append
            ))
            .stdin(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64 (run ./scripts/setup.sh)")?;
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut read = 0;
        let mut timed_out = false;
        loop {
            let exited = child.try_wait()?.is_some();
            for line in new_lines(&results, &mut read)? {
                if let Some(r) = line.strip_prefix("@ew ") {
                    progress(r);
                    seen.push(r.to_owned());
                }
            }
            if exited {
                break;
            }
            if start.elapsed() > self.timeout {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(Outcome {
            results: seen,
            console,
            timed_out,
            elapsed: start.elapsed(),
        })
    }
}

/// Whole lines appended to `path` since byte `read`.
fn new_lines(path: &Path, read: &mut u64) -> Result<Vec<String>> {
    let Ok(file) = fs::File::open(path) else {
        return Ok(Vec::new());
    };
    let mut reader = BufReader::new(file);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(*read))?;
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        *read += n as u64;
        let text = String::from_utf8_lossy(&buf);
        lines.push(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(lines)
}
