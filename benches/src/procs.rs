//! The servers under test as child processes: started from built binaries (or nginx and
//! haproxy when installed), waited on until they answer, stopped on drop. CPU time and peak
//! memory come from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} did not answer on {addr} within {secs} s; its log ends:\n{log}")]
    NotReady {
        name: String,
        addr: SocketAddr,
        secs: u64,
        log: String,
    },
    #[error("{name} exited early with {status}; its log ends:\n{log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: String,
    },
}

/// A running server process; killed (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times; 100 on Linux for decades.
const TICKS_PER_SECOND: f64 = 100.0;

impl Server {
    pub fn spawn(
        name: &str,
        mut command: Command,
        addr: SocketAddr,
        log_dir: &Path,
    ) -> Result<Self, ProcError> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|source| ProcError::Spawn {
            name: name.into(),
            source,
        })?;
        let err = file.try_clone().map_err(|source| ProcError::Spawn {
            name: name.into(),
            source,
        })?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| ProcError::Spawn {
                name: name.into(),
                source,
            })?;
        Ok(Self {
            name: name.into(),
            addr,
            child,
            log,
        })
    }

    /// The last lines of the server's output, for error messages (its folder is temporary).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls until a TCP connect and a `GET path` succeed (bounded), or the process dies.
    pub async fn wait_ready(&mut self, path: &str) -> Result<(), ProcError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ProcError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log_tail(),
                });
            }
            if crate::load::probe(self.addr, path).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ProcError::NotReady {
                    name: self.name.clone(),
                    addr: self.addr,
                    secs: 30,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// CPU time and context switches of this process and all its descendants still alive
    /// (nginx's workers are children of its master).
    pub fn usage(&self) -> Usage {
        tree(self.pid()).iter().map(|pid| usage_of(*pid)).sum()
    }

    /// Peak resident memory (VmHWM) in KiB, summed over the process tree.
    pub fn peak_rss_kib(&self) -> u64 {
        tree(self.pid()).iter().map(|pid| peak_rss_of(*pid)).sum()
    }
}

/// What a process (tree) has consumed since it started; differences of two readings are what
/// a run cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Voluntary and involuntary, summed over every thread.
    pub context_switches: u64,
}

impl Usage {
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            user_seconds: self.user_seconds - earlier.user_seconds,
            system_seconds: self.system_seconds - earlier.system_seconds,
            context_switches: self
                .context_switches
                .saturating_sub(earlier.context_switches),
        }
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), |a, b| Usage {
            user_seconds: a.user_seconds + b.user_seconds,
            system_seconds: a.system_seconds + b.system_seconds,
            context_switches: a.context_switches + b.context_switches,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first so servers shut down as in production; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; everything after its ')' is space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// User and system time from `/proc/PID/stat` (fields 14 and 15; they include the threads
/// that have exited), context switches summed over `/proc/PID/task/*/status` (the process's
/// own status counts its main thread only).
fn usage_of(pid: u32) -> Usage {
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let ticks = |index: usize| {
        stat_fields(pid)
            .and_then(|f| f.get(index)?.parse::<f64>().ok())
            .map_or(0.0, |ticks| ticks / TICKS_PER_SECOND)
    };
    let context_switches = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
                .map(|status| context_switches(&status))
                .sum()
        })
        .unwrap_or(0);
    Usage {
        user_seconds: ticks(11),
        system_seconds: ticks(12),
        context_switches,
    }
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of one `/proc/…/status` text.
fn context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| {
            l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse::<u32>().ok()?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    all
}

/// The CPUs this process may run on (`Cpus_allowed_list`), lowest first; the pinned
/// scenarios put the server on the first and the generator on the second.
pub fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(cpu_list)
        })
        .unwrap_or_default()
}

/// A kernel CPU list such as `0-3,6,8-9`.
fn cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((first, last)) => Some(first.parse().ok()?..=last.parse().ok()?),
            None => part.parse().ok().map(|cpu| cpu..=cpu),
        })
        .flatten()
        .collect()
}

/// A loopback port free right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Whether `program` is on the PATH or in the system's usual places (nginx, haproxy, wrk and
/// taskset are optional).
pub fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_switches_add_both_kinds() {
        let status =
            "Name:\tproxy\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(context_switches(status), 127);
    }

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(cpu_list("0-1\n"), [0, 1]);
        assert_eq!(cpu_list("0-2,5,7-8"), [0, 1, 2, 5, 7, 8]);
        assert!(cpu_list("").is_empty());
    }

    #[test]
    fn this_process_has_used_some_cpu_and_switched() {
        let usage = usage_of(std::process::id());
        assert!(usage.user_seconds + usage.system_seconds >= 0.0);
        assert!(usage.context_switches > 0, "{usage:?}");
    }
}
