//! What a process costs, read from `/proc`: threads, resident memory and CPU time.

use std::process::Command;

use anyhow::Context;

/// One reading of a process.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Entries of `/proc/PID/task`.
    pub threads: usize,
    /// `VmRSS` of `/proc/PID/status`, in MiB.
    pub rss_mib: f64,
    /// User plus system CPU time so far (`utime + stime` of `/proc/PID/stat`), in seconds.
    pub cpu_s: f64,
}

/// Reads `pid`'s threads, memory and CPU time now.
pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let rss_mib = crate::server::rss_mib_of(pid)?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = crate::activator::cpu_ticks(&stat).context("no CPU times in /proc/PID/stat")?;
    Ok(Usage { threads, rss_mib, cpu_s: ticks as f64 / clock_ticks() })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told otherwise).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The 1-minute load average of the machine (`/proc/loadavg`).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_read() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.threads >= 1 && u.rss_mib > 0.0 && u.cpu_s >= 0.0, "{u:?}");
    }
}
