//! Samples a process's CPU time, resident memory and thread count from /proc while a run
//! goes on (Linux; elsewhere the samples are empty and the report says so).

use std::time::{Duration, Instant};

use crate::bench::model::Sample;

/// The fields of a `/proc/.../stat` line after the command name (which is in parentheses and
/// may hold spaces): field N of the line is `N - 3` here.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 2..].split_whitespace().collect())
}

/// Reads `/proc/<pid>` once; None when the process is gone or /proc is missing.
pub fn read(pid: u32, since: Instant) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = stat_fields(&stat)?;
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let threads: u64 = fields.get(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(Sample {
        t: since.elapsed().as_secs_f64(),
        cpu_s: ticks as f64 / clock_ticks(),
        rss_bytes: rss_kb * 1024,
        threads,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Samples `pids` every `every` until `stop` completes; returns the samples of each pid.
pub async fn run(
    pids: Vec<u32>,
    every: Duration,
    since: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Vec<Sample>> {
    let mut out = vec![Vec::new(); pids.len()];
    let mut tick = tokio::time::interval(every);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for (i, pid) in pids.iter().enumerate() {
                    if let Some(s) = read(*pid, since) {
                        out[i].push(s);
                    }
                }
            }
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = read(std::process::id(), Instant::now()).expect("/proc is readable");
        assert!(s.rss_bytes > 0 && s.threads >= 1, "{s:?}");
    }
}
