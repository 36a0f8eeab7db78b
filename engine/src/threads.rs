//! How many CPU threads to compute with when the user did not say: every core when this
//! machine is otherwise idle, one fewer for each core that other programs keep busy.
//!
//! Why not simply every core: llama.cpp's CPU threads (OpenMP) meet at a barrier after every
//! operation of the graph, hundreds of times a token. When another program holds one of the
//! cores, the thread that arrived first waits for one that is not running, and every token pays
//! the scheduler's time slices. Measured on the 2-core development machine (`gemmactl run
//! --stats`, 48 greedy tokens, two rounds each): idle, 2 threads decode 31 tok/s and 1 thread
//! 14-16; beside `stress-ng --cpu 1`, 2 threads decode 1.6 tok/s and 1 thread 13-18.
//!
//! What others use is measured while the model loads: the CPU time of the whole machine from
//! `/proc/stat` minus this process's own from `/proc/self/stat`, over the same interval. A load
//! quicker than [`MIN_WINDOW`] waits for the rest of it, and that wait is part of `load_ms`.
//! gemmactl's other engines count as other programs: two engines computing at once on two cores
//! collapse the same way. The choice is made once, when the context is made: llama-cpp-2 0.1.160
//! offers no way to change a context's threads later, so an engine keeps its count when the
//! machine's load changes.

use std::time::{Duration, Instant};

/// The shortest interval measured; the kernel counts CPU time in 10 ms ticks.
const MIN_WINDOW: Duration = Duration::from_millis(200);

/// Cores others must keep busy, on average, before a thread is given up for them.
const BUSY_CORE: f64 = 0.5;

/// CPU time counters at one moment, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    at: Instant,
    /// Every CPU's busy time (user, nice, system, irq, softirq, and steal: time the hypervisor
    /// gave this machine's CPU to someone else is contention too).
    busy: u64,
    /// Every CPU's time, busy or idle.
    total: u64,
    /// This process's user and system time.
    own: u64,
    /// CPUs `/proc/stat` counts (the `cpuN` lines).
    cpus: u32,
}

/// The counters now; `None` where `/proc` cannot tell (not Linux, or hidden).
pub(crate) fn sample() -> Option<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse(&stat, &own, at)
}

/// The counters taken `at`, from the text of `/proc/stat` and `/proc/self/stat` (see proc(5)).
fn parse(stat: &str, own: &str, at: Instant) -> Option<Sample> {
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let total = busy + field(3) + field(4);
    // The command name in parentheses may hold spaces: count fields after its closing one.
    let rest = &own[own.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    let own = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    Some(Sample {
        at,
        busy,
        total,
        own,
        cpus,
    })
}

/// Cores that programs other than this one kept busy between two samples, where this process
/// may use every CPU the counters count. In a container with a CPU quota, or under `taskset`,
/// `/proc/stat` counts CPUs this process cannot use, and others' work there says nothing about
/// ours: no figure then.
fn others_busy(before: &Sample, after: &Sample, cores: u32) -> Option<f64> {
    if after.cpus != cores {
        return None;
    }
    let total = after.total.checked_sub(before.total)?;
    if total == 0 {
        return None;
    }
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let own = after.own.saturating_sub(before.own) as f64;
    // `total` sums every CPU, so one core's worth of ticks is total / cores.
    let per_core = total as f64 / f64::from(cores.max(1));
    Some(((busy - own) / per_core).max(0.0))
}

/// Threads for `cores` cores when others keep `others` cores busy: at least one.
fn choose(cores: u32, others: f64) -> u32 {
    // A core counts as taken once others use at least BUSY_CORE of it.
    let taken = (others + (1.0 - BUSY_CORE)).floor() as u32;
    cores.saturating_sub(taken).max(1)
}

/// What was decided, and why when the engine decided it (the `ready` event carries both).
pub(crate) struct Decision {
    pub threads: u32,
    pub reason: Option<String>,
}

/// The threads to use: `requested` when the user named a number, else measured since `before`
/// (waiting until [`MIN_WINDOW`] has passed, if the load was quicker).
pub(crate) fn decide(requested: Option<u32>, before: Option<Sample>) -> Decision {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    if let Some(threads) = requested {
        return Decision {
            threads,
            reason: None,
        };
    }
    // Where the counters cover CPUs we may not use, they cannot tell: no need to wait for them.
    let measured = before.filter(|b| b.cpus == cores).and_then(|before| {
        let waited = before.at.elapsed();
        if waited < MIN_WINDOW {
            std::thread::sleep(MIN_WINDOW - waited);
        }
        let after = sample()?;
        others_busy(&before, &after, cores)
    });
    match measured {
        Some(others) => Decision {
            threads: choose(cores, others),
            reason: Some(format!(
                "{cores} cores, other programs kept {others:.1} of them busy while the model loaded"
            )),
        },
        None => Decision {
            threads: cores,
            reason: Some(format!(
                "{cores} cores; what other programs use of them could not be measured here (a CPU quota or affinity, or no /proc)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counters_proc_gives() {
        let stat = "cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 50 2 25 500 10 1 1 5 0 0\nintr 1\n";
        let own = "4242 (gemma engine (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 30 12 0 0 20 0 3 0 100 1000 50";
        let s = parse(stat, own, Instant::now()).unwrap();
        assert_eq!(s.busy, 100 + 5 + 50 + 3 + 2 + 10);
        assert_eq!(s.total, s.busy + 1000 + 20);
        assert_eq!(s.own, 30 + 12);
        assert_eq!(s.cpus, 1);
        assert!(parse("intr 1\n", own, Instant::now()).is_none());
        assert!(parse(stat, "4242 gemma", Instant::now()).is_none());
    }

    #[test]
    fn others_are_the_busy_time_that_is_not_ours() {
        let at = Instant::now();
        let before = Sample {
            at,
            busy: 0,
            total: 0,
            own: 0,
            cpus: 2,
        };
        // 2 cores over 100 ticks each: 200 ticks; 150 busy, 50 of them ours → others 1.0 core.
        let after = Sample {
            at,
            busy: 150,
            total: 200,
            own: 50,
            cpus: 2,
        };
        assert_eq!(others_busy(&before, &after, 2), Some(1.0));
        // Nothing elapsed: no figure rather than a division by zero.
        assert_eq!(others_busy(&before, &before, 2), None);
        // Limited to 2 of the 8 CPUs counted (quota, affinity): others' work says nothing.
        let wide = Sample { cpus: 8, ..after };
        assert_eq!(others_busy(&before, &wide, 2), None);
    }

    #[test]
    fn a_core_others_keep_busy_is_left_to_them() {
        assert_eq!(choose(2, 0.0), 2);
        assert_eq!(choose(2, 0.3), 2);
        assert_eq!(choose(2, 0.6), 1);
        assert_eq!(choose(2, 1.4), 1);
        assert_eq!(choose(2, 3.0), 1);
        assert_eq!(choose(16, 2.2), 14);
    }
}
