//! A process's CPU time, page faults and memory from `/proc`, by pid or
//! `"self"` (`"thread-self"`: the calling thread): the
//! one place the tests and the bench read them (the server, a peer server,
//! the load generator itself). Each reader gives 0 once the process is gone.

use std::collections::BTreeMap;
use std::fmt::Display;

/// CPU time used so far (user + system), seconds.
pub fn cpu_seconds(pid: impl Display) -> f64 {
    cpu_times(pid).total()
}

/// CPU time used so far, in user space and in the kernel, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    /// User and system time together.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, before: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// [`cpu_seconds`] split into user and system time.
pub fn cpu_times(pid: impl Display) -> CpuTimes {
    cpu_times_in(&stat(pid))
}

/// Minor page faults so far; `"thread-self"` counts the calling thread's.
pub fn minor_faults(pid: impl Display) -> u64 {
    minor_faults_in(&stat(pid))
}

fn stat(pid: impl Display) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
}

/// Resident memory now (`VmRSS`), bytes.
pub fn rss_bytes(pid: impl Display) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// Its proportional set size (`Pss` of `/proc/PID/smaps_rollup`), bytes:
/// the RSS with each page shared by N mappings counted 1/N in each, so a
/// page mapped at many addresses (a Wasm module's data image, mapped into
/// every instance's memory) is counted once, not once per mapping.
/// `None` where it cannot be read (gone, or a kernel without
/// `smaps_rollup`).
pub fn pss_bytes(pid: impl Display) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(kib_field(&rollup, "Pss:")? * 1024)
}

/// Its page tables (`VmPTE`), bytes: kernel memory that RSS leaves out.
pub fn page_table_bytes(pid: impl Display) -> u64 {
    status_kib(pid, "VmPTE:") * 1024
}

/// The most resident memory it has had (`VmHWM`, the high-water mark), bytes.
pub fn peak_rss_bytes(pid: impl Display) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

/// Bytes it has written through system calls so far (`wchar` in
/// `/proc/PID/io`: files and sockets alike, cached or not).
pub fn written_bytes(pid: impl Display) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io_field(&io, "wchar:")
}

fn io_field(io: &str, field: &str) -> u64 {
    io.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().parse::<u64>().ok()))
        .unwrap_or(0)
}

fn status_kib(pid: impl Display, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&status, field).unwrap_or(0)
}

/// The value of a `Field:   123 kB` line, KiB; `None` without one.
fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
    })
}

/// CPU time of each live thread so far, seconds, by thread id, with the
/// thread's name less a trailing `-N` number (`sled-io-3` is `sled-io`),
/// from `/proc/PID/task/*/schedstat` (nanoseconds, so a window of a few
/// hundred milliseconds reads true). Threads that have ended are not in
/// it ([`cpu_times`] still counts them); subtract two readings thread by
/// thread ([`cpu_by_thread_since`]), as a pool's thread may end and
/// another of the same name start in between.
pub fn cpu_by_thread(pid: impl Display) -> BTreeMap<u32, (String, f64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let (Ok(comm), Ok(schedstat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        let ns: f64 = schedstat
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0);
        out.insert(tid, (thread_group(comm.trim()).to_owned(), ns / 1e9));
    }
    out
}

/// The CPU time each thread name group used between two
/// [`cpu_by_thread`] readings, thread by thread: a thread new since
/// `before` counts whole, one that ended counts nothing.
pub fn cpu_by_thread_since(
    before: &BTreeMap<u32, (String, f64)>,
    now: &BTreeMap<u32, (String, f64)>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (tid, (name, seconds)) in now {
        let earlier = before.get(tid).map_or(0.0, |(_, s)| *s);
        *out.entry(name.clone()).or_insert(0.0) += seconds - earlier;
    }
    out
}

/// A thread's name without a trailing `-N` instance number.
fn thread_group(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((group, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => group,
        _ => name,
    }
}

/// Field `n` (1-based, as `proc(5)` numbers them) of a `/proc/PID/stat`
/// line, counted after the parenthesised command name (which may hold
/// spaces); 0 if absent.
fn stat_field(stat: &str, n: usize) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // The first field after the name is the third.
    rest.split_whitespace()
        .nth(n - 3)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0)
}

/// utime and stime: fields 14 and 15, in clock ticks of 1/100 s (USER_HZ
/// on Linux).
fn cpu_times_in(stat: &str) -> CpuTimes {
    CpuTimes {
        user: stat_field(stat, 14) / 100.0,
        system: stat_field(stat, 15) / 100.0,
    }
}

/// minflt: field 10.
fn minor_faults_in(stat: &str) -> u64 {
    stat_field(stat, 10) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_group_by_name_without_their_number() {
        assert_eq!(super::thread_group("sled-io-3"), "sled-io");
        assert_eq!(super::thread_group("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(super::thread_group("store-writer"), "store-writer");
        let mine = super::cpu_by_thread("self");
        assert!(mine.values().map(|(_, s)| s).sum::<f64>() > 0.0, "{mine:?}");
    }

    #[test]
    fn a_window_subtracts_thread_by_thread() {
        let t = |v: &[(u32, &str, f64)]| -> super::BTreeMap<u32, (String, f64)> {
            v.iter().map(|(tid, n, s)| (*tid, (n.to_string(), *s))).collect()
        };
        // Thread 2 ended in the window and thread 3 of the same name began:
        // 3 counts whole, 2's earlier time is not taken off anyone.
        let before = t(&[(1, "w", 1.0), (2, "pool", 5.0)]);
        let now = t(&[(1, "w", 1.5), (3, "pool", 0.25)]);
        let spent = super::cpu_by_thread_since(&before, &now);
        assert_eq!(spent.get("w"), Some(&0.5));
        assert_eq!(spent.get("pool"), Some(&0.25));
    }

    #[test]
    fn cpu_time_is_utime_and_stime_and_minor_faults_minflt() {
        let stat = "4242 (touch line) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let t = super::cpu_times_in(stat);
        assert_eq!((t.user, t.system), (2.5, 0.5));
        assert_eq!(super::cpu_times_in(""), super::CpuTimes::default());
        assert_eq!(super::minor_faults_in(stat), 1000);
        assert_eq!(super::minor_faults_in(""), 0);
    }

    #[test]
    fn written_bytes_are_wchar() {
        let io = "rchar: 100\nwchar: 4242\nsyscr: 3\nsyscw: 2\n";
        assert_eq!(super::io_field(io, "wchar:"), 4242);
        assert_eq!(super::io_field("", "wchar:"), 0);
    }

    #[test]
    fn this_process_has_memory_and_a_peak_at_least_as_high() {
        let (now, peak) = (super::rss_bytes("self"), super::peak_rss_bytes("self"));
        assert!(now > 0 && peak >= now, "rss {now}, peak {peak}");
        assert_eq!(super::rss_bytes(u32::MAX), 0);
    }

    #[test]
    fn pss_is_read_from_smaps_rollup_and_at_most_the_rss() {
        let first = super::kib_field("Rss:  200 kB\nPss:   150 kB\n", "Pss:");
        assert_eq!(first, Some(150));
        // Read from this process: the PSS never exceeds the RSS.
        let (rss, pss) = (
            super::rss_bytes("self"),
            super::pss_bytes("self").expect("smaps_rollup"),
        );
        assert!(pss > 0 && pss <= rss + (1 << 20), "rss {rss}, pss {pss}");
        assert_eq!(super::pss_bytes(u32::MAX), None);
    }
}
