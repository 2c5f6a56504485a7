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

    /// CPU seconds (user + system) of this process and all its descendants still alive
    /// (nginx's workers are children of its master).
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).iter().map(|pid| cpu_of(*pid)).sum()
    }

    /// Peak resident memory (VmHWM) in KiB, summed over the process tree.
    pub fn peak_rss_kib(&self) -> u64 {
        tree(self.pid()).iter().map(|pid| peak_rss_of(*pid)).sum()
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

fn cpu_of(pid: u32) -> f64 {
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    stat_fields(pid)
        .and_then(|f| Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?))
        .map_or(0.0, |ticks| ticks / TICKS_PER_SECOND)
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

/// A loopback port free right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Whether `program` is on the PATH (nginx and haproxy are optional).
pub fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
