//! What Linux counts for processes and for the machine (`/proc`): CPU time and peak
//! resident memory. On other systems every reading is `None`.

/// CPU time (user + system) process `pid` has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Peak resident memory (VmHWM) of process `pid`, in KiB.
pub(crate) fn peak_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's CPU time so far, summed over its cores, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MachineCpu {
    /// Ticks spent running anything (user, system, interrupts, stolen by the hypervisor).
    pub busy: u64,
    /// Ticks of every kind, idle and waiting for I/O included.
    pub total: u64,
}

impl MachineCpu {
    /// The machine's counters now.
    pub(crate) fn now() -> Option<MachineCpu> {
        machine_cpu_in(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The share of the time between `earlier` and `self` the cores were busy (0 to 1).
    pub(crate) fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name (field 2) is
/// in parentheses and may hold spaces and parentheses itself, so fields are counted
/// after its last `)`: there the state is field 3, utime field 14, stime field 15.
fn cpu_seconds_in(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(14 - 3)?.parse::<u64>().ok()? + fields.get(15 - 3)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks_per_second()?)
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal
/// guest guest_nice` (guest time is counted in user time already).
fn machine_cpu_in(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some(MachineCpu {
        busy,
        total: busy + idle + iowait,
    })
}

fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf reads a system constant; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let ticks = clock_ticks_per_second().unwrap();
        assert_eq!(cpu_seconds_in(stat), Some(300.0 / ticks));
        assert_eq!(cpu_seconds_in("4242 (cut short) S 1"), None);
    }

    #[test]
    fn the_machine_is_busy_for_all_but_idle_and_io_wait() {
        let before = machine_cpu_in("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(before, MachineCpu { busy: 150, total: 1000 });
        let after = machine_cpu_in("cpu  400 0 100 900 50 10 30 10 0 0\n").unwrap();
        assert_eq!(after.busy_since(&before), 400.0 / 500.0);
        assert_eq!(machine_cpu_in("intr 1 2 3\n"), None);
    }

    #[test]
    fn this_process_and_the_machine_can_be_read() {
        assert!(cpu_seconds(std::process::id()).is_some_and(|seconds| seconds >= 0.0));
        assert!(peak_memory_kib(std::process::id()).is_some_and(|kib| kib > 0));
        assert!(MachineCpu::now().is_some_and(|cpu| cpu.total >= cpu.busy && cpu.total > 0));
    }
}
