//! This process's CPU time and resident set, from `/proc`: one reader for the worker's heartbeats
//! (Dask's `cpu`, percent of one core, and its memory model) and the scheduler's dashboard.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`): 100 on every Linux
/// architecture rask runs on (the kernel fixes it for user space whatever its own tick rate).
const USER_HZ: f64 = 100.0;

/// Seconds of CPU (user and system, all threads) this process has used, from `/proc`; `None`
/// where there is no `/proc` or it cannot be read.
pub fn process_cpu_seconds() -> Option<f64> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted after the last
/// `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Turns CPU-time readings into percent of one core since the previous reading.
#[derive(Default)]
pub struct CpuMeter {
    last: Option<(Instant, f64)>,
}

impl CpuMeter {
    /// Percent of one core used between the previous reading and this one (`None` for the first
    /// reading, a missing one, or no time passed).
    pub fn sample(&mut self, now: Instant, cpu_seconds: Option<f64>) -> Option<f64> {
        let Some(cpu) = cpu_seconds else {
            self.last = None;
            return None;
        };
        let percent = self.last.and_then(|(then, before)| {
            let wall = now.checked_duration_since(then)?.as_secs_f64();
            (wall > 0.0).then(|| (cpu - before).max(0.0) / wall * 100.0)
        });
        self.last = Some((now, cpu));
        percent
    }
}

/// The resident set of process `pid` (this process for `None`), from `/proc`; `None` where there
/// is no `/proc` (the memory model then only spills by the store's own accounting).
pub fn process_rss(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    let statm = std::fs::read_to_string(path).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // The kernel's page size is 4 KiB on the machines rask runs on; /proc/self/smaps would say
    // otherwise, but reading it costs far more than a sample should.
    4096
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        let line =
            "4242 (rask (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat(line), Some(3.0));
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn malformed_stat_lines_are_not_read() {
        for bad in [
            "",
            "4242 rask S 1",
            "4242 (rask) S 1 2 3",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 5",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_meter_gives_percent_of_one_core_from_the_second_reading() {
        let mut m = CpuMeter::default();
        let t0 = Instant::now();
        assert_eq!(m.sample(t0, Some(10.0)), None);
        let p = m.sample(t0 + Duration::from_secs(2), Some(13.0)).unwrap();
        assert!((p - 150.0).abs() < 1e-9, "{p}");
        // A reading that fails starts over.
        assert_eq!(m.sample(t0 + Duration::from_secs(3), None), None);
        assert_eq!(m.sample(t0 + Duration::from_secs(4), Some(14.0)), None);
        // No time passed: no figure rather than a division by zero.
        assert_eq!(m.sample(t0 + Duration::from_secs(4), Some(14.5)), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let rss = process_rss(None).expect("/proc on Linux");
        assert!(rss > (1 << 20), "{rss}");
    }
}
