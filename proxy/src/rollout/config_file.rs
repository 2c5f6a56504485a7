//! Writing the rollout's weight back into `config.toml`, and writing files atomically.
//!
//! `config.toml` is the operator's file and the one source of truth for the weight: the
//! proxy routes by what it says, a restart reads it, and an operator reads and edits it. So
//! when the rollout controller moves `routing.new_percent`, it changes that one value in
//! that file and nothing else: every comment, blank line and key order stays as the
//! operator wrote it, and the diff of a step is one number.
//!
//! Every write is atomic (a temporary file in the same folder, fsync'd, renamed over the
//! old one, the folder fsync'd): the proxy's own reload watcher, an operator's editor or a
//! crash must only ever see the old file or the new one, never half of one. A half-written
//! config would be refused at the next start, or worse, read as a different weight.
//!
//! The edited text is checked with the proxy's own parser before it is written, so the
//! proxy never writes a file it would itself refuse.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use common::config::ConfigError;
use toml_edit::{DocumentMut, Item, Table, Value};

use crate::config::{Percent, ProxyConfig};

const KEY: &str = "routing.new_percent";

/// Why `routing.new_percent` could not be written. The file is left as it was in every case.
#[derive(Debug, thiserror::Error)]
pub enum ConfigWriteError {
    #[error("cannot set {KEY}: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot set {KEY}: {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    /// The edited file would not be a valid proxy config (or `routing` is not a table);
    /// the error names the file and the key at fault.
    #[error("refusing to set {KEY}: the proxy would not accept the result: {0}")]
    Invalid(#[source] ConfigError),
    #[error("cannot set {KEY}: cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Sets `routing.new_percent` in the TOML file at `path`, keeping every comment, blank line,
/// key order and formatting of the rest of the file byte for byte; the value's own trailing
/// comment (`new_percent = 0   # share of users ...`) is kept too.
///
/// If the edit changes no byte (the file already says exactly this), nothing is written, so
/// the file's modification time stays and no watcher sees an event. An existing value
/// written differently (`5.0` for `5`) is rewritten.
///
/// A hand edit of the file between this function's read and its rename is lost; the caller
/// owns detecting those (by the value it last wrote).
pub fn write_new_percent(path: &Path, percent: Percent) -> Result<(), ConfigWriteError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigWriteError::Read {
        path: path.to_owned(),
        source,
    })?;
    let edited = with_new_percent(&text, path, percent)?;
    if edited == text {
        return Ok(());
    }
    write_atomically(path, edited.as_bytes()).map_err(|source| ConfigWriteError::Write {
        path: path.to_owned(),
        source,
    })
}

/// `text` (the file at `path`) with `routing.new_percent` set to `percent`, checked to be a
/// config the proxy accepts and reads back as `percent`.
fn with_new_percent(text: &str, path: &Path, percent: Percent) -> Result<String, ConfigWriteError> {
    let mut document: DocumentMut =
        text.parse()
            .map_err(|error: toml_edit::TomlError| ConfigWriteError::Toml {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
    let not_a_table = || {
        ConfigWriteError::Invalid(ConfigError::invalid(
            path,
            "routing",
            "must be a table to hold new_percent",
        ))
    };
    // Appended after the file's last table, as an operator would add it.
    let routing = document.entry("routing").or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(false);
        Item::Table(table)
    });
    // `[routing.x]` alone makes `routing` implicit, and an implicit table's own keys would
    // print under no header.
    if let Item::Table(table) = routing
        && !table.is_dotted()
    {
        table.set_implicit(false);
    }
    let routing = routing.as_table_like_mut().ok_or_else(not_a_table)?;
    let mut value = percent_value(percent);
    match routing.get_mut("new_percent") {
        Some(Item::Value(old)) => {
            // Spaces and the trailing comment live in the old value's decor.
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        Some(_) => {
            return Err(ConfigWriteError::Invalid(ConfigError::invalid(
                path,
                KEY,
                "must be a number, not a table",
            )));
        }
        None => {
            routing.insert("new_percent", Item::Value(value));
        }
    }
    let edited = document.to_string();
    let config = ProxyConfig::parse(&edited, path).map_err(ConfigWriteError::Invalid)?;
    // The parse is the proof: whatever shape `routing` had, the file now says `percent`.
    if config.routing.new_percent != percent {
        return Err(ConfigWriteError::Invalid(ConfigError::invalid(
            path,
            KEY,
            format!(
                "would read back as {}, not {}",
                config.routing.new_percent.as_percent(),
                percent.as_percent()
            ),
        )));
    }
    Ok(edited)
}

/// `5` for a whole percent, `12.5` or `0.25` otherwise: what an operator would type.
fn percent_value(percent: Percent) -> Value {
    let basis_points = percent.basis_points();
    if basis_points.is_multiple_of(100) {
        Value::from(i64::from(basis_points / 100))
    } else {
        // The double nearest n/100 prints as its shortest round-tripping decimal, which is
        // n/100 itself (at most two decimals), never 0.30000000000000004; a test walks all
        // 10,001 of them.
        Value::from(percent.as_percent())
    }
}

/// Writes `bytes` to `path` so a crash leaves the old or the new file, never a torn one: a
/// temporary file in the same folder, written, fsync'd, renamed over `path`, then the folder
/// fsync'd. Keeps the existing file's permissions (mode); a new file gets the process's
/// default (umask). Not its owner: the proxy writes as itself. If `path` is a symlink, its
/// target is replaced and the link kept.
///
/// Removes the temporary file if anything fails before the rename. An error after the
/// rename (fsync of the folder) means the new content is in place but may not survive a
/// power cut. A crash in between leaves a `.{name}.tmp-*` file behind, never read by anyone.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => fs::canonicalize(path)?,
        _ => path.to_owned(),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    // `Path::new("config.toml").parent()` is `Some("")`.
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let permissions = match fs::metadata(&path) {
        Ok(metadata) => Some(metadata.permissions()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let (temporary, file) = create_temporary(folder, name)?;
    let written = (|| {
        let mut file = file;
        // Before the content, so it is never readable more widely than the old file was.
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &path)
    })();
    if let Err(error) = written {
        // The write's error is the one worth reporting; a failed removal leaves only litter.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    // The rename is only durable once the folder's entry is.
    File::open(folder)?.sync_all()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new file `.{name}.tmp-{pid}-{n}` in `folder`. The counter tells apart two writes of one
/// process; retrying past existing names steps over litter of an earlier crash, which in a
/// container had the same pid.
fn create_temporary(folder: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut file_name = std::ffi::OsString::from(".");
        file_name.push(name);
        file_name.push(format!(".tmp-{}-{n}", std::process::id()));
        let temporary = folder.join(file_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
        {
            Ok(file) => return Ok((temporary, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SHIPPED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml"));

    fn percent(value: f64) -> Percent {
        Percent::from_percent(value).unwrap()
    }

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read_back(path: &Path) -> Percent {
        ProxyConfig::load(path).unwrap().routing.new_percent
    }

    #[test]
    fn the_shipped_config_changes_only_on_its_new_percent_line() {
        let (dir, path) = file_with(SHIPPED);
        let original: Vec<&str> = SHIPPED.split_inclusive('\n').collect();
        let line = original
            .iter()
            .position(|line| line.starts_with("new_percent"))
            .unwrap();
        let comment = &original[line][original[line].find('#').unwrap()..];
        for (value, text) in [(5.0, "5"), (12.5, "12.5"), (0.0, "0")] {
            write_new_percent(&path, percent(value)).unwrap();
            let edited = fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = edited.split_inclusive('\n').collect();
            assert_eq!(lines.len(), original.len());
            for (index, (old, new)) in original.iter().zip(&lines).enumerate() {
                if index != line {
                    assert_eq!(old, new, "line {}", index + 1);
                }
            }
            // Only the number changes: the spaces and comment after it are the old ones.
            let expected = original[line].replacen("= 0 ", &format!("= {text} "), 1);
            assert_eq!(lines[line], expected);
            assert!(lines[line].ends_with(comment), "{}", lines[line]);
            assert_eq!(read_back(&path), percent(value));
            assert_eq!(entries(dir.path()), ["config.toml"]);
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), SHIPPED);
    }

    #[test]
    fn every_percent_is_written_as_typed_and_reads_back_exactly() {
        let path = Path::new("/srv/config.toml");
        for basis_points in 0..=10_000u32 {
            let value = Percent::from_percent(f64::from(basis_points) / 100.0).unwrap();
            assert_eq!(value.basis_points(), basis_points);
            let text = percent_value(value).to_string();
            let (whole, hundredths) = (basis_points / 100, basis_points % 100);
            let expected = match hundredths {
                0 => whole.to_string(),
                h if h % 10 == 0 => format!("{whole}.{}", h / 10),
                h => format!("{whole}.{h:02}"),
            };
            assert_eq!(text.trim(), expected);
            let edited = with_new_percent("", path, value).unwrap();
            let config = ProxyConfig::parse(&edited, path).unwrap();
            assert_eq!(config.routing.new_percent, value, "{edited}");
        }
    }

    #[test]
    fn a_missing_routing_table_or_key_is_added() {
        let (_dir, path) = file_with("# operator's notes\n[proxy]\nthreads = 4\n");
        write_new_percent(&path, percent(25.0)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# operator's notes\n[proxy]\nthreads = 4\n"));
        assert!(text.contains("\n[routing]\nnew_percent = 25\n"), "{text}");
        assert_eq!(read_back(&path), percent(25.0));

        let (_dir, path) = file_with("[routing] # the weight\n\n[proxy]\nthreads = 4\n");
        write_new_percent(&path, percent(0.25)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[routing] # the weight\n"), "{text}");
        assert!(text.ends_with("[proxy]\nthreads = 4\n"), "{text}");
        assert_eq!(read_back(&path), percent(0.25));
    }

    #[test]
    fn inline_and_dotted_routing_tables_are_set_in_place() {
        for (text, expected) in [
            (
                "routing = { new_percent = 1 } # inline\n",
                "routing = { new_percent = 50 } # inline\n",
            ),
            (
                "routing.new_percent = 1 # dotted\n[proxy]\nthreads = 4\n",
                "routing.new_percent = 50 # dotted\n[proxy]\nthreads = 4\n",
            ),
        ] {
            let (_dir, path) = file_with(text);
            write_new_percent(&path, percent(50.0)).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), expected);
            assert_eq!(read_back(&path), percent(50.0));
        }
        let (_dir, path) = file_with("routing = {}\n");
        write_new_percent(&path, percent(7.5)).unwrap();
        assert_eq!(read_back(&path), percent(7.5));
    }

    #[test]
    fn files_the_proxy_would_refuse_are_left_alone() {
        for (text, named) in [
            ("[routing\nnew_percent = 5\n", "not valid TOML"),
            ("[proxy]\nthreads = 0\n", "proxy.threads"),
            ("routing = 5\n", "routing"),
            ("[routing.new_percent]\nx = 1\n", KEY),
            (
                "[routing]\nnew_percent = 1\nold_percent = 2\n",
                "old_percent",
            ),
        ] {
            let (dir, path) = file_with(text);
            let error = write_new_percent(&path, percent(5.0)).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(named), "{text}: {message}");
            assert!(message.contains(KEY), "{text}: {message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
            assert_eq!(entries(dir.path()), ["config.toml"]);
        }
        let error = write_new_percent(Path::new("/nonexistent/config.toml"), percent(5.0));
        assert!(matches!(error, Err(ConfigWriteError::Read { .. })));
    }

    #[test]
    fn permissions_are_kept_and_an_unchanged_value_is_not_rewritten() {
        let (dir, path) = file_with("[routing]\nnew_percent = 1\n");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_new_percent(&path, percent(2.0)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(read_back(&path), percent(2.0));

        let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
        let before = inode(&path);
        write_new_percent(&path, percent(2.0)).unwrap();
        assert_eq!(inode(&path), before, "rewritten although unchanged");
        assert_eq!(entries(dir.path()), ["config.toml"]);
    }

    #[test]
    fn write_atomically_replaces_the_whole_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"{\"a\": \"a much longer first content\"}").unwrap();
        write_atomically(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(entries(dir.path()), ["state.json"]);
    }

    #[test]
    fn write_atomically_steps_over_litter_and_cleans_up_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // The names this process would try next, as an earlier crash under the same pid
        // would have left them (other tests may move the counter on meanwhile; never back).
        let next = COUNTER.load(Ordering::Relaxed);
        let pid = std::process::id();
        let litter: Vec<PathBuf> = (next..next + 5)
            .map(|n| dir.path().join(format!(".state.json.tmp-{pid}-{n}")))
            .collect();
        for file in &litter {
            fs::write(file, b"half").unwrap();
        }
        write_atomically(&path, b"whole").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        for file in &litter {
            assert_eq!(fs::read(file).unwrap(), b"half");
            fs::remove_file(file).unwrap();
        }

        // A folder where the file should be: the rename fails, the temporary goes.
        let occupied = dir.path().join("occupied");
        fs::create_dir(&occupied).unwrap();
        fs::write(occupied.join("inside"), b"x").unwrap();
        assert!(write_atomically(&occupied, b"x").is_err());
        assert_eq!(entries(dir.path()), ["occupied", "state.json"]);
    }

    #[test]
    fn write_atomically_keeps_a_symlink_and_replaces_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.toml");
        let link = dir.path().join("config.toml");
        fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }
}
