//! Zero-downtime upgrade: a new proxy process (the same build or a new one, the same config or
//! an edited one) takes over the listening sockets of the running one, which stops accepting,
//! finishes what it has in flight within `proxy.shutdown_grace_seconds`, and exits.
//!
//! The conversation, over the running proxy's `proxy.upgrade_socket` (a Unix stream socket,
//! owner-only, and only a peer of the same user is answered):
//!
//! 1. the successor (`proxy --upgrade`, its config and secrets already loaded) sends
//!    `{"pid": …}`;
//! 2. the running proxy holds its rollout controller (`Rollout::hold`: no tick, no command,
//!    so it writes neither `config.toml` nor the state file again), then sends a `Handover`
//!    (its pid, its health view, which socket is which) with the sockets themselves attached
//!    (`SCM_RIGHTS`): the public, admin and TLS listeners and this control socket;
//! 3. the successor serves on them (a socket whose address is no longer configured is closed
//!    and the new address bound), starting from the predecessor's health view, and answers
//!    `ready` once its services run;
//! 4. only then the predecessor stops accepting. Both processes hold the same sockets, so
//!    connections waiting in a listen backlog are accepted by the successor, not dropped. If
//!    the successor goes away without `ready`, the predecessor lets its controller go and
//!    keeps serving: a failed upgrade is not an outage.
//!
//! Why not Pingora's own upgrade (`--upgrade` in its `Opt`, `Server::bootstrap`, SIGQUIT,
//! `ShutdownSignal::GracefulUpgrade`, `transfer_fd::Fds`): its table holds the sockets Pingora
//! bound, keyed by the configured address string, while this proxy binds its own (`prebound`;
//! port 0 in tests would never match); the old process sends on a signal and stops accepting
//! after a fixed 5 s whether or not the new one got that far, so a successor that fails after
//! receiving the sockets leaves nobody accepting; and its receiving side panics on an unusable
//! socket path. Passing `std` sockets ourselves, with an answer before the old one lets go, is
//! a few dozen lines over `nix`'s `sendmsg`/`recvmsg`.

use std::io::{IoSlice, IoSliceMut, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::config::StartupSettings;
use crate::routing::Side;
use crate::server::{Listeners, StartupError};
use crate::state::{Generation, ProxyState};

/// How long the running proxy waits for a successor's request, once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the running proxy waits for the successor to serve; its config and secrets are
/// loaded before it connects, so this covers only starting its services.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the successor waits for the sockets (the running proxy may be finishing a
/// rollout tick first).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// More sockets than a `Handover` ever carries (four).
const MAX_SOCKETS: usize = 8;
const READY: &str = "ready";

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("proxy.upgrade_socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "proxy.upgrade_socket {}: a running proxy answers there; start with --upgrade to take over from it",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error(
        "no running proxy answers on proxy.upgrade_socket {} ({source}); start without --upgrade",
        path.display()
    )]
    NoPredecessor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running proxy's hand-over failed: {0}")]
    Handover(std::io::Error),
    #[error("the running proxy's hand-over is not understood: {0}")]
    Message(serde_json::Error),
    #[error("the running proxy named {named} sockets and sent {sent}")]
    SocketCount { named: usize, sent: usize },
}

/// What a socket passed in a hand-over is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Public,
    Admin,
    Tls,
    /// The control socket itself, so the successor can be upgraded in turn.
    Control,
}

#[derive(Serialize, Deserialize)]
struct Request {
    pid: u32,
}

/// The running proxy's answer; `sockets` names the attached descriptors, in order. Fields
/// added later get a default, and unknown ones are ignored, so two builds still understand
/// each other.
#[derive(Debug, Serialize, Deserialize)]
struct Handover {
    pid: u32,
    sockets: Vec<Role>,
    health: HealthView,
    /// Its config generation, which the successor's first one follows.
    #[serde(default)]
    generation: u64,
}

/// Whether the health checks last found each backend up, and each replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HealthView {
    legacy: bool,
    new: bool,
    /// Each replica's verdict by address (a build without replica pools sends none).
    #[serde(default)]
    replicas: Vec<(SocketAddr, bool)>,
}

impl HealthView {
    fn of(state: &ProxyState) -> Self {
        let generation = state.live.load();
        let replicas = Side::BOTH
            .iter()
            .flat_map(|side| generation.pool(*side).members())
            .map(|member| (member.replica.address, member.replica.is_up()))
            .collect();
        Self {
            legacy: state.health.is_up(Side::Legacy),
            new: state.health.is_up(Side::New),
            replicas,
        }
    }

    /// A replica's verdict: its own if the predecessor knew it, else its side's when that
    /// side was down (no replica of it answered), else none (up until checked).
    fn verdict(&self, side: Side, address: SocketAddr) -> Option<bool> {
        let known = self.replicas.iter().find(|(a, _)| *a == address);
        let side_up = match side {
            Side::Legacy => self.legacy,
            Side::New => self.new,
        };
        known.map(|(_, up)| *up).or((!side_up).then_some(false))
    }
}

/// The running proxy's end of `proxy.upgrade_socket`.
pub struct ControlSocket {
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds `path` (`proxy.upgrade_socket`), owner-only. A socket file nobody answers on is
    /// what a proxy that did not stop cleanly leaves, and is replaced; one a proxy answers on
    /// is refused, as its listeners would be.
    pub fn bind(path: &Path) -> Result<Self, UpgradeError> {
        let failed = |source| UpgradeError::Socket {
            path: path.to_owned(),
            source,
        };
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder).map_err(failed)?;
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(UpgradeError::InUse {
                    path: path.to_owned(),
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(failed)?;
            }
            // Nothing there (or nothing we may reach): binding says what is wrong.
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        Ok(Self { listener })
    }
}

/// The running proxy this one takes over from (`proxy --upgrade`): its sockets, its health
/// view, and the connection on which this one says `ready`.
pub struct Predecessor {
    pub pid: u32,
    health: HealthView,
    generation: u64,
    sockets: Vec<(Role, OwnedFd)>,
    connection: UnixStream,
}

/// Asks the proxy running on `path` (`proxy.upgrade_socket`) for its sockets. Blocking: called
/// by `main` before any runtime starts.
pub fn take_over(path: &Path) -> Result<Predecessor, UpgradeError> {
    let mut connection =
        UnixStream::connect(path).map_err(|source| UpgradeError::NoPredecessor {
            path: path.to_owned(),
            source,
        })?;
    connection
        .set_read_timeout(Some(HANDOVER_TIMEOUT))
        .map_err(UpgradeError::Handover)?;
    let request = serde_json::to_string(&Request {
        pid: std::process::id(),
    })
    .map_err(UpgradeError::Message)?;
    connection
        .write_all(format!("{request}\n").as_bytes())
        .map_err(UpgradeError::Handover)?;
    let (line, fds) = receive_with_fds(&connection).map_err(UpgradeError::Handover)?;
    let handover: Handover = serde_json::from_slice(&line).map_err(UpgradeError::Message)?;
    if handover.sockets.len() != fds.len() {
        return Err(UpgradeError::SocketCount {
            named: handover.sockets.len(),
            sent: fds.len(),
        });
    }
    Ok(Predecessor {
        pid: handover.pid,
        health: handover.health,
        generation: handover.generation,
        sockets: handover.sockets.into_iter().zip(fds).collect(),
        connection,
    })
}

/// Reads one line and the descriptors sent with it. The predecessor sends the line with one
/// `sendmsg`, so the descriptors come with its first bytes.
fn receive_with_fds(connection: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut control = nix::cmsg_space!([RawFd; MAX_SOCKETS]);
    while !line.contains(&b'\n') {
        let mut chunk = [0u8; 4096];
        let (read, truncated) = {
            let mut buffers = [IoSliceMut::new(&mut chunk)];
            let message = nix::sys::socket::recvmsg::<UnixAddr>(
                connection.as_raw_fd(),
                &mut buffers,
                Some(&mut control),
                // Like `std`'s own sockets: not inherited by anything this process executes.
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            for received in message.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = received {
                    // SAFETY: the kernel has just installed these descriptors in this process
                    // for this message; nothing else knows them, so each gets one owner.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (message.bytes, message.flags.contains(MsgFlags::MSG_CTRUNC))
        };
        if truncated {
            return Err(std::io::Error::other("more sockets than expected"));
        }
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        line.extend_from_slice(&chunk[..read]);
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    line.truncate(end);
    Ok((line, fds))
}

/// Whether a socket bound at `inherited` serves `configured`: the same address, or any port
/// on the same address for a configured port 0.
pub fn serves(configured: SocketAddr, inherited: SocketAddr) -> bool {
    configured == inherited || (configured.port() == 0 && configured.ip() == inherited.ip())
}

impl Predecessor {
    /// The listeners for `startup`: each inherited socket whose address is still configured,
    /// else a new one bound (the inherited one is closed here, and by the predecessor when it
    /// stops); and the control socket, likewise.
    pub fn listeners(
        &mut self,
        startup: &StartupSettings,
    ) -> Result<(Listeners, ControlSocket), StartupError> {
        let public = self.tcp(Role::Public, startup.listen)?;
        let admin = self.tcp(Role::Admin, startup.admin_listen)?;
        let tls = match startup.tls_listen {
            Some(address) => Some(self.tcp(Role::Tls, address)?),
            None => None,
        };
        let control = match self.take(Role::Control).map(UnixListener::from) {
            Some(inherited) if same_path(&inherited, &startup.upgrade_socket) => ControlSocket {
                listener: inherited,
            },
            _ => ControlSocket::bind(&startup.upgrade_socket)?,
        };
        Ok((Listeners { public, admin, tls }, control))
    }

    fn take(&mut self, role: Role) -> Option<OwnedFd> {
        let at = self.sockets.iter().position(|(r, _)| *r == role)?;
        Some(self.sockets.swap_remove(at).1)
    }

    fn tcp(&mut self, role: Role, configured: SocketAddr) -> Result<TcpListener, StartupError> {
        if let Some(inherited) = self.take(role).map(TcpListener::from)
            && inherited
                .local_addr()
                .is_ok_and(|address| serves(configured, address))
        {
            return Ok(inherited);
        }
        TcpListener::bind(configured).map_err(|source| StartupError::Bind {
            address: configured,
            source,
        })
    }

    /// Carries the predecessor's state over: its health view instead of assuming both
    /// backends up (the health checks go on from there), and its config generation, which
    /// this process's first one follows. Before the services start, so none saw another.
    pub fn carry_over(&self, state: &ProxyState) {
        let first = state.live.load_full();
        for side in Side::BOTH {
            for member in first.pool(side).members() {
                if let Some(up) = self.health.verdict(side, member.replica.address) {
                    member.replica.set_up(up);
                }
            }
        }
        state.health.refresh(&first, &state.metrics);
        let number = self.generation.max(first.number) + 1;
        state
            .metrics
            .config_applied(number, first.settings.new_basis_points());
        let settings = first.settings.clone();
        let generation = Generation::new(number, settings, &state.replicas, &state.metrics);
        state.live.store(Arc::new(generation));
    }
}

fn same_path(listener: &UnixListener, configured: &Path) -> bool {
    let canonical = |path: &Path| std::fs::canonicalize(path).ok();
    let bound = listener.local_addr().ok();
    match bound.as_ref().and_then(|address| address.as_pathname()) {
        Some(bound) => canonical(bound).is_some() && canonical(bound) == canonical(configured),
        None => false,
    }
}

/// The predecessor's connection, until the services run and it is told `ready`.
pub struct AnnounceReady {
    predecessor: Mutex<Option<(u32, UnixStream)>>,
    stop: Arc<Notify>,
}

impl AnnounceReady {
    /// `stop` stops this process if the predecessor no longer listens (it gave up waiting
    /// and serves on: two controllers must not run).
    pub fn new(predecessor: Predecessor, stop: Arc<Notify>) -> Self {
        Self {
            predecessor: Mutex::new(Some((predecessor.pid, predecessor.connection))),
            stop,
        }
    }
}

#[async_trait]
impl BackgroundService for AnnounceReady {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let taken = self
            .predecessor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some((pid, mut connection)) = taken else {
            return;
        };
        let told = tokio::task::spawn_blocking(move || {
            connection.write_all(format!("{READY}\n").as_bytes())
        })
        .await;
        match told {
            Ok(Ok(())) => tracing::info!(predecessor = pid, "took over; the predecessor stops"),
            Ok(Err(error)) => {
                tracing::error!(predecessor = pid, %error, "the predecessor gave up the hand-over and serves on; stopping");
                self.stop.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, "cannot tell the predecessor; stopping");
                self.stop.notify_one();
            }
        }
    }
}

/// The running proxy's side: answers successors on the control socket.
pub struct UpgradeService {
    state: Arc<ProxyState>,
    control: Mutex<Option<UnixListener>>,
    /// Copies of the listening sockets, to send; the services serve on the originals.
    sockets: Mutex<Vec<(Role, OwnedFd)>>,
    handed_over: Arc<Notify>,
}

impl UpgradeService {
    /// `sockets`: copies (`try_clone`) of the listeners `serve` runs on. `handed_over` is
    /// notified once a successor serves, to stop this process.
    pub fn new(
        state: Arc<ProxyState>,
        control: ControlSocket,
        sockets: Vec<(Role, OwnedFd)>,
        handed_over: Arc<Notify>,
    ) -> Self {
        Self {
            state,
            control: Mutex::new(Some(control.listener)),
            sockets: Mutex::new(sockets),
            handed_over,
        }
    }

    /// One successor's conversation; `Ok` once it serves, with the controller still held.
    async fn hand_over(
        &self,
        connection: tokio::net::UnixStream,
    ) -> Result<crate::rollout::runner::RolloutHeld<'_>, std::io::Error> {
        let peer = connection.peer_cred()?;
        if peer.uid() != nix::unistd::Uid::current().as_raw() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("a process of user {} is not this proxy's user", peer.uid()),
            ));
        }
        let (reading, mut writing) = connection.into_split();
        let mut reading = tokio::io::BufReader::new(reading);
        let mut line = String::new();
        tokio::time::timeout(REQUEST_TIMEOUT, reading.read_line(&mut line))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let request: Request = serde_json::from_str(&line)?;
        tracing::info!(
            successor = request.pid,
            "upgrade: handing over the listening sockets"
        );
        let held = self.state.rollout.hold().await;
        let health = HealthView::of(&self.state);
        let control = self.control_copy()?;
        // The descriptors stay open: only this task closes the copies, after the hand-over.
        let (mut message, raw) = {
            let sockets = self.lock_sockets();
            let mut roles: Vec<Role> = sockets.iter().map(|(role, _)| *role).collect();
            let mut raw: Vec<RawFd> = sockets.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            roles.push(Role::Control);
            raw.push(control.as_raw_fd());
            let handover = Handover {
                pid: std::process::id(),
                sockets: roles,
                health,
                generation: self.state.live.load().number,
            };
            (serde_json::to_vec(&handover)?, raw)
        };
        message.push(b'\n');
        let stream = writing.as_ref();
        let written = stream
            .async_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::socket::sendmsg::<UnixAddr>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(&message)],
                    &[ControlMessage::ScmRights(&raw)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
        // The descriptors went with the first bytes; the rest of the line may follow alone.
        writing.write_all(&message[written..]).await?;
        drop(control);
        line.clear();
        tokio::time::timeout(READY_TIMEOUT, reading.read_line(&mut line))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if line.trim_end() != READY {
            return Err(std::io::Error::other(format!(
                "the successor (pid {}) did not start serving",
                request.pid
            )));
        }
        tracing::info!(
            successor = request.pid,
            "upgrade: the successor serves; stopping"
        );
        Ok(held)
    }

    fn lock_sockets(&self) -> std::sync::MutexGuard<'_, Vec<(Role, OwnedFd)>> {
        self.sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the control socket to send, or an error once it is no longer ours.
    fn control_copy(&self) -> std::io::Result<OwnedFd> {
        let control = self
            .control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match control.as_ref() {
            Some(listener) => Ok(OwnedFd::from(listener.try_clone()?)),
            None => Err(std::io::Error::other("the control socket is gone")),
        }
    }
}

#[async_trait]
impl BackgroundService for UpgradeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = {
            let control = self
                .control
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            control.as_ref().map(|listener| {
                listener
                    .try_clone()
                    .and_then(|copy| {
                        copy.set_nonblocking(true)?;
                        Ok(copy)
                    })
                    .and_then(tokio::net::UnixListener::from_std)
            })
        };
        let listener = match listener {
            Some(Ok(listener)) => listener,
            Some(Err(error)) => {
                tracing::error!(%error, "cannot serve proxy.upgrade_socket; upgrades are off");
                return;
            }
            None => return,
        };
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => accepted,
            };
            let connection = match accepted {
                Ok((connection, _)) => connection,
                Err(error) => {
                    tracing::warn!(%error, "proxy.upgrade_socket: accept failed");
                    continue;
                }
            };
            match self.hand_over(connection).await {
                Ok(held) => {
                    // The successor has the sockets: this process's copies go, and it stops.
                    self.lock_sockets().clear();
                    drop(listener);
                    self.control
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .take();
                    self.handed_over.notify_one();
                    // The controller stays held until the process exits.
                    let _held = held;
                    std::future::pending::<()>().await;
                    return;
                }
                Err(error) => tracing::warn!(
                    %error,
                    "upgrade: no hand-over; this proxy keeps serving"
                ),
            }
        }
        // Stopping (SIGTERM): the sockets close with the services, not held open here.
        self.lock_sockets().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_starts_from_the_predecessors_verdict_or_its_sides() {
        let at = |text: &str| text.parse::<SocketAddr>().expect("an address");
        let view = HealthView {
            legacy: true,
            new: false,
            replicas: vec![(at("127.0.0.1:3000"), false), (at("127.0.0.1:3010"), true)],
        };
        assert_eq!(
            view.verdict(Side::Legacy, at("127.0.0.1:3000")),
            Some(false)
        );
        assert_eq!(view.verdict(Side::Legacy, at("127.0.0.1:3010")), Some(true));
        // Newly listed: up until checked, unless its whole side was down.
        assert_eq!(view.verdict(Side::Legacy, at("127.0.0.1:3020")), None);
        assert_eq!(view.verdict(Side::New, at("127.0.0.1:3001")), Some(false));
        // A predecessor without replica pools sends only the sides.
        let old: HealthView =
            serde_json::from_str(r#"{"legacy":false,"new":true}"#).expect("an older view");
        assert_eq!(old.verdict(Side::Legacy, at("127.0.0.1:3000")), Some(false));
        assert_eq!(old.verdict(Side::New, at("127.0.0.1:3001")), None);
    }

    #[test]
    fn an_inherited_socket_serves_its_own_address_or_a_configured_port_0() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:8080", true),
            ("127.0.0.1:0", "127.0.0.1:41234", true),
            ("127.0.0.1:8081", "127.0.0.1:8080", false),
            ("0.0.0.0:8080", "127.0.0.1:8080", false),
            ("0.0.0.0:0", "127.0.0.1:41234", false),
            ("[::1]:0", "[::1]:41234", true),
        ];
        for (configured, inherited, expected) in cases {
            assert_eq!(
                serves(at(configured), at(inherited)),
                expected,
                "{configured} from {inherited}"
            );
        }
    }
}
