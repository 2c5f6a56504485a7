//! Several proxies behind one load balancer, sharing `config.toml` and the cookie secret: the
//! role this one plays in a rollout (`Role`: exactly one proxy runs the controller, the
//! others follow the file), and the cookie secret, which a proxy of a fleet never generates
//! for itself (a secret of its own would send its users to other sides than the rest do).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::config::ProxyConfig;
use crate::server::COOKIE_SECRET_ENV;

/// When set (`true` or `false`), overrides `rollout.controller`: one file for every proxy,
/// and the controller's host says so in its environment.
pub const CONTROLLER_ENV: &str = "CANARY_ROLLOUT_CONTROLLER";

/// What this proxy does in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Judges each interval and writes `routing.new_percent` into the file.
    Controller,
    /// Only follows the file: no judge, no writes, no state file.
    Follower,
}

impl Role {
    /// The role from `rollout.controller` (`file_says`) and the environment's override.
    pub fn of(file_says: bool, env: Option<&OsStr>) -> Result<Self, FleetError> {
        let controller = match env {
            None => file_says,
            Some(value) => match value.to_str() {
                Some("true") => true,
                Some("false") => false,
                _ => {
                    return Err(FleetError::ControllerEnv {
                        value: value.to_string_lossy().into_owned(),
                    });
                }
            },
        };
        Ok(if controller {
            Role::Controller
        } else {
            Role::Follower
        })
    }

    /// The role of a proxy started on `config` in this process's environment.
    pub fn from_env(config: &ProxyConfig) -> Result<Self, FleetError> {
        Self::of(
            config.rollout.controller,
            std::env::var_os(CONTROLLER_ENV).as_deref(),
        )
    }

    pub fn is_controller(self) -> bool {
        self == Role::Controller
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{CONTROLLER_ENV} must be true or false, not {value:?}")]
    ControllerEnv { value: String },
    #[error(
        "proxy.cookie_secret_file {file} does not exist and {COOKIE_SECRET_ENV} is unset, but \
         this proxy is one of several ({reason}): a secret generated here would differ from the \
         other proxies' and users would change sides from one proxy to the next. Give every \
         proxy the same secret: set {COOKIE_SECRET_ENV} to one value of at least 32 bytes on \
         every proxy host, or create the file once (head -c 32 /dev/urandom > {file}; chmod 600 \
         {file}) and copy it to that path on every proxy host",
        file = .file.display()
    )]
    GeneratedSecret { reason: &'static str, file: PathBuf },
    #[error("cookie secret: {0}")]
    Secret(#[from] common::secret::SecretError),
}

/// Refuses to let a proxy of a fleet (`fleet_reason` is why it is one) make up a secret: it
/// must come from the environment or from a file that already exists.
pub fn refuse_generated_secret(
    fleet_reason: Option<&'static str>,
    env_is_set: bool,
    file: &Path,
    file_exists: bool,
) -> Result<(), FleetError> {
    match fleet_reason {
        Some(reason) if !env_is_set && !file_exists => Err(FleetError::GeneratedSecret {
            reason,
            file: file.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The cookie-signing secret: `CANARY_COOKIE_SECRET`, else `proxy.cookie_secret_file`, which
/// only a proxy on its own creates when absent.
pub fn cookie_secret(config: &ProxyConfig, role: Role) -> Result<Vec<u8>, FleetError> {
    let file = &config.proxy.cookie_secret_file;
    refuse_generated_secret(
        config.fleet_reason(role.is_controller()),
        std::env::var_os(COOKIE_SECRET_ENV).is_some(),
        file,
        file.exists(),
    )?;
    Ok(common::secret::load_or_create(COOKIE_SECRET_ENV, file)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AnalysisSource;

    #[test]
    fn the_environment_overrides_the_files_role_and_refuses_anything_but_true_or_false() {
        let cases = [
            (true, None, Some(Role::Controller)),
            (false, None, Some(Role::Follower)),
            (true, Some("false"), Some(Role::Follower)),
            (false, Some("true"), Some(Role::Controller)),
            (true, Some("yes"), None),
            (true, Some(""), None),
            (false, Some("TRUE"), None),
        ];
        for (file_says, env, expected) in cases {
            let role = Role::of(file_says, env.map(OsStr::new));
            match expected {
                Some(expected) => assert_eq!(role.unwrap(), expected, "{file_says} {env:?}"),
                None => {
                    let error = role.unwrap_err().to_string();
                    assert!(error.contains(CONTROLLER_ENV), "{error}");
                }
            }
        }
    }

    #[test]
    fn a_proxy_is_one_of_several_when_told_so_when_it_follows_or_when_it_judges_the_fleet() {
        let mut config = ProxyConfig::default();
        assert_eq!(config.fleet_reason(true), None);
        assert!(config.fleet_reason(false).unwrap().contains("controller"));
        config.rollout.analysis.source = AnalysisSource::Prometheus;
        assert!(config.fleet_reason(true).unwrap().contains("prometheus"));
        config.proxy.fleet = true;
        assert_eq!(config.fleet_reason(true), Some("proxy.fleet = true"));
    }

    #[test]
    fn a_proxy_of_a_fleet_takes_a_secret_given_to_it_and_never_makes_one_up() {
        let file = Path::new("/srv/canary/cookie.secret");
        let fleet = Some("proxy.fleet = true");
        for (reason, env, exists, allowed) in [
            (None, false, false, true),
            (fleet, true, false, true),
            (fleet, false, true, true),
            (fleet, true, true, true),
            (fleet, false, false, false),
        ] {
            let checked = refuse_generated_secret(reason, env, file, exists);
            assert_eq!(checked.is_ok(), allowed, "{reason:?} {env} {exists}");
            if let Err(error) = checked {
                let message = error.to_string();
                for needed in [
                    "proxy.cookie_secret_file /srv/canary/cookie.secret",
                    "proxy.fleet = true",
                    "set CANARY_COOKIE_SECRET",
                    "head -c 32 /dev/urandom > /srv/canary/cookie.secret",
                    "on every proxy host",
                ] {
                    assert!(message.contains(needed), "{needed}: {message}");
                }
            }
        }
    }
}
