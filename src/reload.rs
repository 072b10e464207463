//! Config hot reload: while `iris serve` or `iris console` runs, a valid edit of the config
//! file applies without a restart, and an invalid one keeps the configuration in force and
//! says why (`settings.hotReloadConfig`, on by default).
//!
//! [`watch`] watches the directory that holds the file (not the file itself: editors replace
//! a file by renaming a new one over it, which a watch on the old file would miss) and picks
//! the events that name the file. Only a file that has settled is read: no event has named
//! it for [`SETTLE_PERIOD`] (an editor or a script that empties the file and writes it again
//! is not caught half-way; a file rewritten without pause is not applied until it stops).
//! It is then validated by the same loader as at start (every problem with file, line and
//! column). Then:
//!
//! - the same text as the last one applied: nothing happens;
//! - empty (nothing but blanks and comments): never read as "no teams"; the configuration
//!   in force stays, with a warning (`teams: {}` removes every team);
//! - valid: [`Pool::set_config`] applies it and what changed is logged at info (team names
//!   and keys, settings with their values; never team `env` values, and never the whole
//!   config); settings that need a restart are logged as such and keep their old values;
//! - invalid, unreadable or missing: the configuration in force stays; a warning gives the
//!   loader's message, and [`PoolEvent::ConfigRejected`](crate::pool::PoolEvent) tells
//!   subscribers (`iris console --events`).
//!
//! Which file: the one Iris loaded at start. When Iris started on embedded defaults (no
//! file), it watches where `iris init` creates one, `$IRIS_HOME/config.yaml` (and
//! `config.yml`, which the loader also reads), so creating the file applies it. If that file
//! is a symbolic link, the link's target is watched too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{self, Config, ConfigError};
use crate::pool::Pool;

/// Why a file of nothing but blanks and comments is not applied.
const BLANK_FILE: &str =
    "the file is empty; the configuration in force stays (to remove every team, write `teams: {}`)";

/// How long the file must go without an event before it is read: edits apply this long
/// after the last write.
pub const SETTLE_PERIOD: Duration = Duration::from_secs(1);

/// Why the config file cannot be watched. Iris runs on; edits apply only after a restart.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory that holds (or would hold) the config file does not exist.
    #[error("cannot watch {} for config changes: the directory does not exist", .dir.display())]
    NoDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// The system refused the watch (for example: too many inotify watches).
    #[error("cannot watch {} for config changes: {error}", .dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// The watcher's error, already part of the message.
        error: notify::Error,
    },
}

/// The file or files whose edits are applied: the config file Iris loaded, or, when it
/// started without one, the places the loader looks (in its order of preference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTarget {
    /// Candidates, in order: the first that exists is loaded.
    pub files: Vec<PathBuf>,
    /// `$IRIS_HOME`, for the loader.
    pub iris_home: PathBuf,
    /// Whether the file was loaded at start (then a missing file is reported; otherwise it
    /// means "still no file" and is quietly ignored).
    pub loaded: bool,
}

impl WatchTarget {
    /// What to watch for `config`: [`Config::source`], or `$IRIS_HOME/config.yaml` and
    /// `config.yml` when it runs on embedded defaults.
    #[must_use]
    pub fn of(config: &Config) -> Self {
        match &config.source {
            Some(file) => Self {
                files: vec![file.clone()],
                iris_home: config.iris_home.clone(),
                loaded: true,
            },
            None => Self {
                files: vec![
                    config.iris_home.join("config.yaml"),
                    config.iris_home.join("config.yml"),
                ],
                iris_home: config.iris_home.clone(),
                loaded: false,
            },
        }
    }
}

/// A running config watcher. Dropping it stops watching; so does the pool's shutdown.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
    _stop: DropGuard,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher").finish_non_exhaustive()
    }
}

/// Starts watching the config file of `pool` if `settings.hotReloadConfig` is on, logging
/// what it watches, or why it cannot (Iris then runs on without it). For `iris serve` and
/// `iris console`; keep the result alive as long as edits should apply. Must be called
/// within a tokio runtime.
#[must_use]
pub fn watch_config(pool: &Pool) -> Option<ConfigWatcher> {
    let config = pool.config();
    if !config.settings.hot_reload_config {
        tracing::info!(
            "settings.hotReloadConfig is false: edits of the config file apply after a restart"
        );
        return None;
    }
    let target = WatchTarget::of(&config);
    match watch(pool, target.clone()) {
        Ok(watcher) => {
            let files = target
                .files
                .iter()
                .map(|file| file.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            tracing::info!("watching {files} for config changes (settings.hotReloadConfig)");
            Some(watcher)
        }
        Err(error) => {
            tracing::warn!("{error}; edits of the config file apply after a restart");
            None
        }
    }
}

/// Watches `target` and applies every valid edit to `pool` (see the module docs). The watch
/// is in place when this returns, so an edit made after it is seen. Must be called within a
/// tokio runtime.
///
/// # Errors
/// [`WatchError`] when a directory to watch is missing or the system refuses the watch.
pub fn watch(pool: &Pool, target: WatchTarget) -> Result<ConfigWatcher, WatchError> {
    // The names events may carry: each candidate, and the target of a candidate that is a
    // symbolic link (an editor following the link writes there).
    let mut names = target.files.clone();
    for file in &target.files {
        if let Ok(real) = std::fs::canonicalize(file)
            && real != *file
        {
            names.push(real);
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for name in &names {
        let dir = name.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    let matched = names.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wanted = match &event {
            Ok(event) => relevant(event, &matched),
            Err(error) => {
                // A watcher error may mean missed events: look at the file again.
                tracing::debug!(%error, "config watcher error");
                true
            }
        };
        if wanted {
            let _ = sender.send(());
        }
    })
    .map_err(|error| WatchError::Watch {
        dir: dirs.first().cloned().unwrap_or_default(),
        error,
    })?;
    for dir in &dirs {
        if !dir.is_dir() {
            return Err(WatchError::NoDirectory { dir: dir.clone() });
        }
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|error| WatchError::Watch {
                dir: dir.clone(),
                error,
            })?;
    }
    let stop = pool.stopping().child_token();
    let reloader = Reloader {
        pool: pool.clone(),
        target,
        last_applied: None,
    };
    tokio::spawn(reloader.run(receiver, stop.clone()));
    Ok(ConfigWatcher {
        _watcher: watcher,
        _stop: stop.drop_guard(),
    })
}

/// Whether a file event may have changed one of `files`. Opens and reads (Iris's own
/// included) are not changes; a finished write is.
fn relevant(event: &notify::Event, files: &[PathBuf]) -> bool {
    let changes = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    changes && (event.need_rescan() || event.paths.iter().any(|path| files.contains(path)))
}

/// The task that turns file events into reloads.
struct Reloader {
    pool: Pool,
    target: WatchTarget,
    /// The text of the file as last applied (also when nothing in it changed), to skip a
    /// file saved again unchanged. `None` after a refusal, so saving the same text again
    /// tries again (a team's directory may exist now).
    last_applied: Option<String>,
}

/// What reading the config file gave.
enum Attempt {
    /// No candidate file exists, and none was loaded at start: still on embedded defaults.
    NoFile,
    /// The same text as last applied.
    Unchanged,
    /// Nothing but blanks and comments.
    Blank { file: PathBuf },
    /// Read and validated.
    Loaded {
        file: PathBuf,
        text: Option<String>,
        config: Box<Result<Config, ConfigError>>,
    },
}

impl Reloader {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<()>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => if event.is_none() { return },
            }
            if !debounce(&mut events, &stop).await {
                return;
            }
            if !self.reload().await {
                return;
            }
        }
    }

    /// Reads, validates and applies the file. Returns false when watching should stop
    /// (`hotReloadConfig` was turned off).
    async fn reload(&mut self) -> bool {
        let target = self.target.clone();
        let last = self.last_applied.clone();
        let attempt = tokio::task::spawn_blocking(move || attempt(&target, last.as_deref())).await;
        let Ok(attempt) = attempt else {
            tracing::warn!(
                "reading the config file failed unexpectedly; keeping the configuration in force"
            );
            return true;
        };
        match attempt {
            Attempt::NoFile => {
                tracing::debug!("still no config file; running on embedded defaults");
                true
            }
            Attempt::Unchanged => {
                tracing::debug!("config file saved without changes");
                true
            }
            Attempt::Blank { file } => {
                self.last_applied = None;
                tracing::warn!(file = %file.display(), "config file refused: {BLANK_FILE}");
                self.pool.config_rejected(file, BLANK_FILE.to_owned());
                true
            }
            Attempt::Loaded { file, text, config } => match *config {
                Ok(config) => {
                    self.last_applied = text;
                    self.apply(&file, config)
                }
                Err(error) => {
                    self.last_applied = None;
                    tracing::warn!(
                        "config file {} not applied; the configuration in force stays:\n{error}",
                        file.display()
                    );
                    self.pool.config_rejected(file, error.to_string());
                    true
                }
            },
        }
    }

    fn apply(&self, file: &Path, config: Config) -> bool {
        let before = self.pool.config();
        for warning in &config.warnings {
            let shown = warning.to_string();
            if !before.warnings.iter().any(|old| old.to_string() == shown) {
                tracing::warn!("{}: {shown}", file.display());
            }
        }
        let hot_reload = config.settings.hot_reload_config;
        let changes = self.pool.set_config(config);
        // What applied is logged by the pool.
        if changes.is_empty() {
            tracing::info!(
                "config file {} re-read: nothing that Iris uses changed",
                file.display()
            );
        }
        for setting in &changes.needs_restart {
            tracing::warn!(
                "{} changed from {} to {} in {}, but that takes a restart of Iris; {} stays in force until then",
                setting.key,
                setting.from,
                setting.to,
                file.display(),
                setting.from
            );
        }
        if !hot_reload {
            tracing::info!(
                "settings.hotReloadConfig is now false: no longer watching {} (restart Iris to watch it again)",
                file.display()
            );
            return false;
        }
        true
    }
}

/// Reads the first existing candidate and validates it, unless its text is `last`.
fn attempt(target: &WatchTarget, last: Option<&str>) -> Attempt {
    let existing = target
        .files
        .iter()
        .find(|file| file.try_exists().unwrap_or(true));
    let file = match existing {
        Some(file) => file.clone(),
        None if !target.loaded => return Attempt::NoFile,
        // Report the file that was loaded as unreadable (deleted, or renamed away).
        None => target.files.first().cloned().unwrap_or_default(),
    };
    match std::fs::read_to_string(&file) {
        Ok(text) if last == Some(text.as_str()) => Attempt::Unchanged,
        Ok(text) if is_blank(&text) => Attempt::Blank { file },
        Ok(text) => {
            let config =
                config::load_from_str(&text, &file, &target.iris_home, &config::process_env());
            Attempt::Loaded {
                file,
                text: Some(text),
                config: Box::new(config),
            }
        }
        Err(error) => Attempt::Loaded {
            config: Box::new(Err(ConfigError::Read {
                path: file.clone(),
                error,
            })),
            file,
            text: None,
        },
    }
}

/// Whether a config file has nothing in it but blanks and YAML comments: a file being
/// rewritten, never a configuration.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    })
}

/// Waits until the events have been quiet for [`SETTLE_PERIOD`]. False when watching stops
/// meanwhile.
async fn debounce(events: &mut mpsc::UnboundedReceiver<()>, stop: &CancellationToken) -> bool {
    loop {
        let quiet = tokio::time::Instant::now() + SETTLE_PERIOD;
        tokio::select! {
            () = stop.cancelled() => return false,
            event = events.recv() => if event.is_none() { return false },
            () = tokio::time::sleep_until(quiet) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        event
    }

    #[test]
    fn only_changes_that_name_the_file_count() {
        let files = [PathBuf::from("/etc/iris/config.yaml")];
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(relevant(
            &event(
                rename,
                &["/etc/iris/.config.yaml.tmp", "/etc/iris/config.yaml"]
            ),
            &files
        ));
        assert!(relevant(
            &event(
                EventKind::Create(CreateKind::File),
                &["/etc/iris/config.yaml"]
            ),
            &files
        ));
        assert!(relevant(
            &event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/etc/iris/config.yaml"]
            ),
            &files
        ));
        // Iris's own reads of the file.
        assert!(!relevant(
            &event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/etc/iris/config.yaml"]
            ),
            &files
        ));
        assert!(!relevant(
            &event(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/etc/iris/config.yaml"]
            ),
            &files
        ));
        // Other files in the directory.
        assert!(!relevant(
            &event(
                EventKind::Modify(ModifyKind::Any),
                &["/etc/iris/other.yaml"]
            ),
            &files
        ));
        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(relevant(&rescan, &files));
    }

    #[test]
    fn without_a_file_iris_home_is_watched_for_one() {
        let config = Config::defaults(PathBuf::from("/home/me/.iris"));
        let target = WatchTarget::of(&config);
        assert_eq!(
            target.files,
            [
                PathBuf::from("/home/me/.iris/config.yaml"),
                PathBuf::from("/home/me/.iris/config.yml")
            ]
        );
        assert!(!target.loaded);
        let mut loaded = config;
        loaded.source = Some(PathBuf::from("/etc/iris.yaml"));
        let target = WatchTarget::of(&loaded);
        assert_eq!(target.files, [PathBuf::from("/etc/iris.yaml")]);
        assert!(target.loaded);
    }

    #[test]
    fn attempt_skips_unchanged_text_and_reports_a_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.yaml");
        let target = WatchTarget {
            files: vec![file.clone()],
            iris_home: dir.path().to_path_buf(),
            loaded: true,
        };
        let Attempt::Loaded { config, .. } = attempt(&target, None) else {
            panic!("a missing loaded file is reported");
        };
        let error = config.expect_err("missing").to_string();
        assert!(
            error.starts_with(&format!("cannot read config file {}", file.display())),
            "{error}"
        );
        let unloaded = WatchTarget {
            loaded: false,
            ..target.clone()
        };
        assert!(matches!(attempt(&unloaded, None), Attempt::NoFile));

        std::fs::write(&file, "settings:\n  maxProcesses: 3\n").expect("write");
        let Attempt::Loaded { config, text, .. } = attempt(&target, None) else {
            panic!("loaded");
        };
        assert_eq!(config.expect("valid").settings.max_processes, 3);
        let text = text.expect("text");
        assert!(matches!(attempt(&target, Some(&text)), Attempt::Unchanged));

        std::fs::write(&file, "settings:\n  maxProcesses: [\n").expect("write");
        let Attempt::Loaded { config, .. } = attempt(&target, Some(&text)) else {
            panic!("loaded");
        };
        let error = config.expect_err("invalid YAML").to_string();
        assert!(
            error.starts_with(&format!("{}:", file.display())),
            "{error}"
        );
    }

    // The clock is paused: the sleeps below advance virtual time only, and the elapsed
    // times asserted are exact, whatever the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_events_is_read_once_after_it_is_quiet() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let burst = tokio::spawn(async move {
            for _ in 0..5 {
                sender.send(()).expect("send");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            sender
        });
        assert!(debounce(&mut receiver, &stop).await);
        // The last event came at 120 ms; settled a second after it.
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(120) + SETTLE_PERIOD
        );
        let sender = burst.await.expect("burst");

        // A file rewritten every 900 ms for 10 s (an empty file, then the real one, say)
        // is not read until it stops.
        let rewrites = tokio::spawn(async move {
            for _ in 0..12 {
                sender.send(()).expect("send");
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
            sender
        });
        let started = tokio::time::Instant::now();
        assert!(debounce(&mut receiver, &stop).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(11 * 900) + SETTLE_PERIOD
        );
        let _sender = rewrites.await.expect("rewrites");
        stop.cancel();
        assert!(!debounce(&mut receiver, &stop).await);
    }

    #[test]
    fn blank_files_are_only_blanks_and_comments() {
        for blank in ["", "\n", "  \n\t\n", "# teams removed\n  # later\n"] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["teams: {}\n", "# c\nteams:\n", "settings:\n"] {
            assert!(!is_blank(text), "{text:?}");
        }
    }
}
