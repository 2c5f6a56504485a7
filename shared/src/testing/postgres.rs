//! A real PostgreSQL for a test: Debian's `postgresql` package (`scripts/install --test`),
//! `initdb` into a temporary folder and `postgres` on a free loopback port, stopped and
//! removed when dropped. Nothing else on the machine is touched.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then both run as the `postgres`
//! system user the package creates, in a folder handed over to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::config::PostgresUrl;
use crate::testing::{eventually, free_loopback_port};

/// Where Debian installs each major version's programs (not on PATH).
const INSTALL_ROOT: &str = "/usr/lib/postgresql";
/// How long a fresh server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// The superuser `initdb` creates; trusted on loopback, so no password.
const SUPERUSER: &str = "postgres";

pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    folder: tempfile::TempDir,
}

impl PostgresServer {
    /// Initialises a cluster and starts it; returns once it accepts connections. Should
    /// another process take the free port first, the start is retried on another.
    pub async fn start() -> Self {
        let bin = newest_bin_dir();
        let owner = run_as();
        let folder = tempfile::tempdir().expect("a temporary folder");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(folder.path(), Some(uid), Some(gid))
                .expect("hand the folder to the postgres user");
        }
        let init = command(&bin, "initdb", owner, folder.path())
            .args(["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"])
            .arg(format!("--username={SUPERUSER}"))
            .arg("--pgdata")
            .arg(folder.path().join("data"))
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        );
        let mut server = Self {
            child: None,
            port: 0,
            folder,
        };
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            server.spawn(&bin, owner);
            if server.wait_until_ready().await {
                return server;
            }
        }
        panic!("postgres found no free port in {ATTEMPTS} attempts");
    }

    fn spawn(&mut self, bin: &Path, owner: Option<(u32, u32)>) {
        self.port = free_loopback_port();
        let log = std::fs::File::create(self.log_path()).expect("create the log file");
        let child = command(bin, "postgres", owner, self.folder.path())
            .arg("-D")
            .arg(self.folder.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            // The unix socket in the test's folder, not in /var/run/postgresql.
            .arg("-k")
            .arg(self.folder.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            // Durability is not what a test checks; speed is welcome.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
    }

    /// Whether the server accepts connections; `false` if it exited for want of its port.
    async fn wait_until_ready(&mut self) -> bool {
        let url = self.url();
        let ready = eventually(
            "postgres accepts connections or exits",
            START_LIMIT,
            async || {
                if let Some(status) = self.child.as_mut()?.try_wait().expect("the child's state") {
                    return Some(Err(status));
                }
                let connected = PgConnection::connect(&url).await.ok()?;
                let _ = connected.close().await;
                Some(Ok(()))
            },
        )
        .await;
        match ready {
            Ok(()) => true,
            Err(_) if self.log().contains("could not bind") => false,
            Err(status) => panic!("postgres exited with {status}; its log:\n{}", self.log()),
        }
    }

    /// The superuser's URL of the default database, as a string (for a config file).
    pub fn url(&self) -> String {
        self.url_of(SUPERUSER)
    }

    /// The URL of `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The default database's URL as `[database] url` holds it.
    pub fn config_url(&self) -> PostgresUrl {
        PostgresUrl::new(&self.url()).expect("the server's URL parses")
    }

    /// A new, empty database on this server; returns its name.
    pub async fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let mut conn = PgConnection::connect(&self.url())
            .await
            .expect("connect as the superuser");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a database");
        let _ = conn.close().await;
        name
    }

    /// Stops the server at once (an immediate shutdown), as a crash or an outage would.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill takes two integers and touches no memory of ours. The child has
            // not been waited for, so its pid cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// What the server wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.folder.path().join("postgres.log")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/usr/lib/postgresql/<newest major>/bin`.
fn newest_bin_dir() -> PathBuf {
    let majors = std::fs::read_dir(INSTALL_ROOT).unwrap_or_else(|e| {
        panic!("no PostgreSQL under {INSTALL_ROOT} ({e}); `scripts/install --test` installs it")
    });
    majors
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no postgres binary under {INSTALL_ROOT}/<major>/bin"))
}

/// The `postgres` user's uid and gid when we are root (PostgreSQL will not run as root),
/// else `None`: run as ourselves.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, uid, gid, ..] if *name == SUPERUSER => {
                Some((uid.parse().ok()?, gid.parse().ok()?))
            }
            _ => None,
        }
    });
    Some(ids.unwrap_or_else(|| {
        panic!("running as root, and there is no `{SUPERUSER}` user to run PostgreSQL as")
    }))
}

fn command(bin: &Path, program: &str, owner: Option<(u32, u32)>, folder: &Path) -> Command {
    let mut command = Command::new(bin.join(program));
    // Its own folder as the working directory: root's home is not readable as `postgres`.
    command.current_dir(folder).env("LC_ALL", "C");
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}
