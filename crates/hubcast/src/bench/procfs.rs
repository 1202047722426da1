//! A server process's CPU time and resident memory, from `/proc`.

/// One reading of one or more processes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl Sample {
    /// Resident memory in MiB, to a tenth.
    pub(crate) fn mib(&self) -> f64 {
        super::round(self.rss_kib as f64 / 1024.0, 1)
    }

    /// Resident memory gained since `before`, per one of `n` things (KiB).
    pub(crate) fn kib_per(&self, before: &Sample, n: usize) -> f64 {
        (self.rss_kib as f64 - before.rss_kib as f64) / n as f64
    }
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ; 100 on Linux
/// everywhere hubcast runs).
const TICKS: f64 = 100.0;

/// Reads one process; `None` when it is gone or this is not Linux.
pub(crate) fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        cpu_s: (utime + stime) / TICKS,
        rss_kib,
    })
}

/// The sum over several processes (those that can be read).
pub(crate) fn sum(pids: &[u32]) -> Sample {
    pids.iter()
        .filter_map(|p| sample(*p))
        .fold(Sample::default(), |a, s| Sample {
            cpu_s: a.cpu_s + s.cpu_s,
            rss_kib: a.rss_kib + s.rss_kib,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(s.cpu_s >= 0.0);
        assert!(sample(u32::MAX).is_none());
    }
}
