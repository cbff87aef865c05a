//! Samples a process's CPU time, resident memory and thread count from /proc while a run
//! goes on (Linux; elsewhere the samples are empty and the report says so).

use std::time::{Duration, Instant};

use crate::bench::model::{Sample, ServingThreads};

/// The fields of a `/proc/.../stat` line after the command name (which is in parentheses and
/// may hold spaces): field N of the line is `N - 3` here.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 2..].split_whitespace().collect())
}

/// How process `pid`'s threads that answer requests are scheduled: the most raised of its
/// `offload-rt` threads (offload's runtime), else its main thread (a Node server's event loop).
/// None when the process is gone or the kernel does not say.
pub fn serving_threads(pid: u32) -> Option<ServingThreads> {
    let runtime = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|t| {
            let path = t.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            comm.starts_with("offload-rt")
                .then(|| path.file_name()?.to_str()?.parse::<u32>().ok())
                .flatten()
        })
        .filter_map(crate::pool::priority::of_thread)
        .min_by_key(|u| (u.nice, u.slice));
    let sched = match runtime {
        Some(u) => u,
        None => crate::pool::priority::of_thread(pid)?,
    };
    Some(ServingThreads::of(sched))
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
