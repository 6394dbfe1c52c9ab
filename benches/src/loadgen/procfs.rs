//! Server-side figures from `/proc`: resident memory (`VmRSS` of `/proc/PID/status`)
//! and CPU time (`utime + stime` of `/proc/PID/stat`), summed over the sampled
//! processes. Reading `/proc` works for any server, whatever it is written in.

use serde::Serialize;

/// One process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// User + system CPU seconds since the process started (all threads).
    pub cpu_s: f64,
}

/// All sampled processes at one moment; `missing` counts those that could not be
/// read (exited, or not ours to read).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub rss_kib: u64,
    pub cpu_s: f64,
    pub per_pid: Vec<(u32, Option<ProcSample>)>,
    pub missing: usize,
}

/// Samples every process in `pids`.
pub fn sample(pids: &[u32]) -> Sample {
    let mut out = Sample::default();
    for &pid in pids {
        let s = read(&pid.to_string());
        match s {
            Some(s) => {
                out.rss_kib += s.rss_kib;
                out.cpu_s += s.cpu_s;
            }
            None => out.missing += 1,
        }
        out.per_pid.push((pid, s));
    }
    out
}

/// This process (the load generator's own CPU, to see when it is the bottleneck).
pub fn own() -> Option<ProcSample> {
    read("self")
}

fn read(pid: &str) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss_kib: parse_rss_kib(&status)?,
        cpu_s: parse_cpu_ticks(&stat)? as f64 / ticks_per_second(),
    })
}

fn ticks_per_second() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

/// `VmRSS:    1234 kB`.
fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Fields 14 and 15 of `/proc/PID/stat`; the command name (field 2) may hold spaces
/// and parentheses, so counting starts after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first here
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\taviary\nVmPeak:\t 9 kB\nVmRSS:\t   20480 kB\nThreads: 3\n";
        assert_eq!(parse_rss_kib(status), Some(20480));
    }

    #[test]
    fn reads_itself() {
        let me = own();
        assert!(me.is_some_and(|s| s.rss_kib > 0));
    }
}
