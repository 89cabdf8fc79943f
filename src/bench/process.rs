//! Watching the process under test (the shardgate server) while a benchmark runs: its peak
//! resident memory, sampled every 100 ms, and the user + system CPU time it spent, from
//! `/proc/<pid>/stat` at the start and the end of the run (Linux).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often resident memory is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What the watched process used during the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Peak resident memory, in MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU time over the run, in seconds (`None` when `/proc` could not say).
    pub cpu_seconds: Option<f64>,
}

/// A running watch of one process.
pub struct ProcessWatch {
    task: tokio::task::JoinHandle<f64>,
    stop: CancellationToken,
    pid: u32,
    cpu_at_start: Option<f64>,
}

impl ProcessWatch {
    /// Starts watching `pid`.
    pub fn start(pid: u32) -> ProcessWatch {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !token.is_cancelled() {
                if let Some(kib) = rss_kib(pid) {
                    peak = peak.max(kib as f64 / 1024.0);
                }
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
                }
            }
            peak
        });
        ProcessWatch {
            task,
            stop,
            pid,
            cpu_at_start: cpu_seconds(pid),
        }
    }

    /// Stops watching and says what the process used since the start.
    pub async fn finish(self) -> ProcessUsage {
        let cpu_at_end = cpu_seconds(self.pid);
        self.stop.cancel();
        ProcessUsage {
            peak_rss_mib: self.task.await.unwrap_or(0.0),
            cpu_seconds: self.cpu_at_start.zip(cpu_at_end).map(|(start, end)| end - start),
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds `pid` has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    Some(cpu_ticks(&stat)? as f64 / ticks_per_second as f64)
}

/// utime + stime from a `/proc/<pid>/stat` line: fields 14 and 15, counted after the command
/// name in parentheses (which may itself hold spaces and parentheses).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_whatever_the_command_name() {
        let line =
            "4242 (shard gate) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 567 0 0 20 0 9 0 100 1000 200";
        assert_eq!(cpu_ticks(line), Some(1234 + 567));
        assert_eq!(cpu_ticks("4242 (short) S 1"), None);
    }

    /// CPU seconds the calling thread has used, from the kernel's own clock for it.
    fn thread_cpu_seconds() -> f64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        assert_eq!(status, 0);
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    }

    #[test]
    fn cpu_time_spent_spinning_is_counted() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        // Spin for 300 ms of this thread's own CPU, however long a busy machine takes to give it.
        let (spin_start, deadline) = (
            thread_cpu_seconds(),
            std::time::Instant::now() + Duration::from_secs(30),
        );
        let mut x = 1u64;
        while thread_cpu_seconds() - spin_start < 0.3 && std::time::Instant::now() < deadline {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = cpu_seconds(pid).unwrap() - before;
        assert!(spent >= 0.25, "300 ms of spinning counted as {spent} s");
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
