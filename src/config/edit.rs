//! `iris init`, `iris add-team`, `iris remove-team`: small edits of the config file made as
//! text, so the user's comments and layout survive. Every edit is validated by loading the
//! result; an edit that would make the file invalid is not written. Writes are atomic (a
//! temporary file in the same directory, then a rename).

use std::path::{Path, PathBuf};

use super::{ConfigError, TeamName, load_from_str};

/// The file `iris init` writes: every setting at its default, commented.
pub const DEFAULT_CONFIG: &str = r"# Iris configuration. Durations are milliseconds, or a number with a unit (500ms, 30s, 5m, 1h).
# ${VAR}, ${VAR:-default} and ${VAR:?message} work in any value.

settings:
  # maxProcesses: 10           # live agent processes at most; the least recently used idle one is stopped
  # idleTimeout: 1h            # stop agents idle this long
  # spawnTimeout: 20s          # a new agent must answer initialize within this
  # responseTimeout: 2m        # a turn that prints nothing this long is timed out
  # poolWaitTimeout: 30s       # how long a message waits for a free process when all are busy
  # maxQueuePerPair: 100       # messages that may wait per caller->team pair
  # httpPort: 1615             # iris serve listens on 127.0.0.1:<httpPort>
  # claudePath: claude         # the claude executable (default: claude on PATH)
  # httpToken: ${IRIS_HTTP_TOKEN}  # bearer token for HTTP clients (needed to serve off loopback)
  # maxHttpSessions: 100       # MCP sessions open at once over HTTP
  # hotReloadConfig: true      # apply valid edits of this file while Iris runs
  # approvalTimeout: 10m       # a tool-permission request nobody answers is denied after this
  # forwardFallback: ask       # forward when no caller can be asked: ask (iris approve) | deny
  # maxCallDepth: 4            # messages a chain of agents calling agents may hold
  # daemonIdleTimeout: 30m     # the daemon `iris serve --stdio` starts stops after this long unused

# database:
#   retentionDays: 30          # finished messages are kept this long

teams:
  # Add teams with `iris add-team NAME PATH`, or by hand:
  # backend:
  #   path: ~/code/backend
  #   description: The API server
  #   grantPermission: ask     # yes | no | ask (iris approve) | forward (the caller decides)
  #   permissions:             # Claude Code rules, checked first: deny, then allow, then ask
  #     allow: [Read, Grep, 'Edit(src/**)', 'Bash(cargo test:*)']
  #   token: ${BACKEND_TOKEN}  # bearer token that identifies this team over HTTP
  #   budget: {usdPerDay: 5, turnsPerHour: 60}  # over it, new messages are refused
";

/// Why an edit was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// `iris init` on an existing file.
    #[error("{} already exists; edit it, or use --force to replace it", .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The team name is not valid.
    #[error("{0}")]
    Name(#[from] super::NameError),
    /// The team's directory is not usable.
    #[error("team directory {}: {message}", .path.display())]
    Directory {
        /// The directory given.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A team of that name exists already.
    #[error("team '{name}' already exists in {}", .path.display())]
    Duplicate {
        /// The team.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// No team of that name.
    #[error("no team '{name}' in {}; teams: {}", .path.display(), if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    Unknown {
        /// The team.
        name: String,
        /// The file.
        path: PathBuf,
        /// The teams there are.
        known: Vec<String>,
    },
    /// The file's layout is one these edits do not handle (the `teams` map written inline).
    #[error("{}: {message}; edit the file by hand", .path.display())]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is in the way.
        message: String,
    },
    /// The file is invalid before, or would be after, the edit.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading or writing failed.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

/// Writes [`DEFAULT_CONFIG`] to `path` (creating its directory) unless it exists and `force`
/// is false.
///
/// # Errors
/// [`EditError::Exists`] or [`EditError::Io`].
pub fn init(path: &Path, force: bool) -> Result<(), EditError> {
    if path.exists() && !force {
        return Err(EditError::Exists {
            path: path.to_owned(),
        });
    }
    write_atomically(path, DEFAULT_CONFIG)
}

/// Adds team `name` at `directory` (canonicalized; must exist) to the file at `path`,
/// creating the file from [`DEFAULT_CONFIG`] if it does not exist. Returns the directory.
///
/// # Errors
/// [`EditError`]: a bad name or directory, a duplicate, an unsupported layout, or a file that
/// is (or would become) invalid.
pub fn add_team(
    path: &Path,
    iris_home: &Path,
    name: &str,
    directory: &Path,
    description: Option<&str>,
) -> Result<PathBuf, EditError> {
    let name = TeamName::new(name)?;
    let directory = std::fs::canonicalize(directory).map_err(|error| EditError::Directory {
        path: directory.to_owned(),
        message: error.to_string(),
    })?;
    if !directory.is_dir() {
        return Err(EditError::Directory {
            path: directory,
            message: "not a directory".to_owned(),
        });
    }
    let text = read_or_default(path)?;
    // Only what the edit itself breaks is refused: a problem elsewhere in the file (a team
    // whose directory is gone, say) must not block adding a team.
    let before = problems(&text, path, iris_home)?;
    if remove_block(&text, name.as_str()).is_some() {
        return Err(EditError::Duplicate {
            name: name.to_string(),
            path: path.to_owned(),
        });
    }
    let description = description.map_or_else(|| format!("Team {name}"), str::to_owned);
    let block = format!(
        "  {name}:\n    path: {}\n    description: {}\n",
        yaml_string(&directory.to_string_lossy()),
        yaml_string(&description)
    );
    let edited = insert_team(&text, &block).ok_or_else(|| EditError::Layout {
        path: path.to_owned(),
        message: "`teams:` is written inline (for example `teams: {}`)".to_owned(),
    })?;
    no_new_problems(&before, &edited, path, iris_home)?;
    write_atomically(path, &edited)?;
    Ok(directory)
}

/// Removes team `name` (its whole block) from the file at `path`.
///
/// # Errors
/// [`EditError::Unknown`], an unsupported layout, or a file that is (or would become) invalid.
pub fn remove_team(path: &Path, iris_home: &Path, name: &str) -> Result<(), EditError> {
    let text = std::fs::read_to_string(path).map_err(|error| EditError::Io {
        path: path.to_owned(),
        error,
    })?;
    // As for adding: problems elsewhere (even in this very team, whose directory may be the
    // reason to remove it) do not block removing it; only new ones do.
    let before = problems(&text, path, iris_home)?;
    let Some(edited) = remove_block(&text, name) else {
        let known = match load_from_str(&text, path, iris_home, &process_env()) {
            Ok(config) => config.team_names(),
            Err(_) => Vec::new(),
        };
        return Err(if known.iter().any(|team| team == name) {
            EditError::Layout {
                path: path.to_owned(),
                message: format!("team '{name}' is not written as a block under `teams:`"),
            }
        } else {
            EditError::Unknown {
                name: name.to_owned(),
                path: path.to_owned(),
                known,
            }
        });
    };
    no_new_problems(&before, &edited, path, iris_home)?;
    write_atomically(path, &edited)
}

fn read_or_default(path: &Path) -> Result<String, EditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(DEFAULT_CONFIG.to_owned()),
        Err(error) => Err(EditError::Io {
            path: path.to_owned(),
            error,
        }),
    }
}

#[cfg(test)]
fn validate(text: &str, path: &Path, iris_home: &Path) -> Result<super::Config, EditError> {
    Ok(load_from_str(text, path, iris_home, &process_env())?)
}

fn process_env() -> std::collections::HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The problems of `text` as a config file, each as `key: message` (positions move with an
/// edit); none when it loads. Errors other than problems in the text (a missing home) are
/// errors.
fn problems(text: &str, path: &Path, iris_home: &Path) -> Result<Vec<String>, EditError> {
    match load_from_str(text, path, iris_home, &process_env()) {
        Ok(_) => Ok(Vec::new()),
        Err(ConfigError::Invalid { problems, .. }) => Ok(problems
            .iter()
            .map(|problem| format!("{}: {}", problem.key, problem.message))
            .collect()),
        Err(error) => Err(error.into()),
    }
}

/// Refuses `edited` if it has a problem that `before` did not have.
fn no_new_problems(
    before: &[String],
    edited: &str,
    path: &Path,
    iris_home: &Path,
) -> Result<(), EditError> {
    let after = problems(edited, path, iris_home)?;
    if after.iter().all(|problem| before.contains(problem)) {
        return Ok(());
    }
    // Report in full, as the loader does.
    match load_from_str(edited, path, iris_home, &process_env()) {
        Ok(_) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Inserts `block` right after the top-level `teams:` line (adding one at the end if there is
/// none). `None` when `teams:` carries an inline value.
fn insert_team(text: &str, block: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + block.len() + 8);
    let mut inserted = false;
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if !inserted && is_top_level_key(line, "teams") {
            let value = line.trim_end()["teams:".len()..].trim();
            if !value.is_empty() && !value.starts_with('#') && value != "~" && value != "null" {
                return None;
            }
            if !value.is_empty() && !value.starts_with('#') {
                // `teams: ~` / `teams: null`: drop the null, keep the key.
                out.truncate(out.len() - line.len());
                out.push_str("teams:\n");
            } else if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(block);
            inserted = true;
        }
    }
    if !inserted {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("teams:\n");
        out.push_str(block);
    }
    Some(out)
}

/// Removes the lines of team `name`'s block under `teams:`. `None` if it is not found there.
fn remove_block(text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let teams = lines
        .iter()
        .position(|line| is_top_level_key(line, "teams"))?;
    let header = format!("{name}:");
    let start = (teams + 1..lines.len()).find(|&index| {
        let line = lines[index];
        let indent = line.len() - line.trim_start().len();
        indent > 0 && {
            let trimmed = line.trim();
            trimmed == header
                || trimmed.starts_with(&format!("{header} "))
                || trimmed.starts_with(&format!("{header}#"))
        }
    })?;
    let indent = lines[start].len() - lines[start].trim_start().len();
    let mut end = start + 1;
    while end < lines.len() {
        let line = lines[end];
        let trimmed = line.trim();
        let line_indent = line.len() - line.trim_start().len();
        if !trimmed.is_empty() && line_indent <= indent {
            break;
        }
        end += 1;
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in lines.iter().enumerate() {
        if index < start || index >= end {
            out.push_str(line);
        }
    }
    Some(out)
}

fn is_top_level_key(line: &str, key: &str) -> bool {
    line.starts_with(key) && line[key.len()..].starts_with(':')
}

/// A YAML scalar that reads back as exactly `text`.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("'{}'", text.replace('\'', "''")))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), EditError> {
    let io = |error| EditError::Io {
        path: path.to_owned(),
        error,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        io(error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads_with_no_teams() {
        let dir = tempfile::tempdir().unwrap();
        let config = validate(DEFAULT_CONFIG, &dir.path().join("config.yaml"), dir.path()).unwrap();
        assert!(config.teams.is_empty());
    }

    #[test]
    fn teams_are_added_and_removed_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        for team in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(team)).unwrap();
        }
        add_team(&file, dir.path(), "a", &dir.path().join("a"), None).unwrap();
        add_team(
            &file,
            dir.path(),
            "b",
            &dir.path().join("b"),
            Some("the \"b\" team: #1"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("# maxProcesses: 10"), "comments kept");
        let config = validate(&text, &file, dir.path()).unwrap();
        assert_eq!(config.team_names(), ["a", "b"]);
        assert_eq!(config.team("b").unwrap().description, "the \"b\" team: #1");

        assert!(matches!(
            add_team(&file, dir.path(), "a", &dir.path().join("a"), None),
            Err(EditError::Duplicate { .. })
        ));
        assert!(matches!(
            add_team(&file, dir.path(), "x/y", &dir.path().join("a"), None),
            Err(EditError::Name(_))
        ));
        assert!(matches!(
            add_team(&file, dir.path(), "c", &dir.path().join("missing"), None),
            Err(EditError::Directory { .. })
        ));

        remove_team(&file, dir.path(), "a").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let config = validate(&text, &file, dir.path()).unwrap();
        assert_eq!(config.team_names(), ["b"]);
        assert!(text.contains("# Add teams with `iris add-team NAME PATH`"));
        let error = remove_team(&file, dir.path(), "a").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("no team 'a' in {}; teams: b", file.display())
        );
    }

    #[test]
    fn init_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("config.yaml");
        init(&file, false).unwrap();
        assert!(matches!(init(&file, false), Err(EditError::Exists { .. })));
        init(&file, true).unwrap();
    }

    #[test]
    fn inline_teams_and_null_teams() {
        assert_eq!(insert_team("teams: {}\n", "  a:\n"), None);
        assert_eq!(
            insert_team("teams: ~\n", "  a:\n    path: x\n").unwrap(),
            "teams:\n  a:\n    path: x\n"
        );
        assert_eq!(
            insert_team("settings: {}\n", "  a:\n").unwrap(),
            "settings: {}\nteams:\n  a:\n"
        );
    }
}
