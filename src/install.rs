//! `iris install` / `iris uninstall`: register Iris's MCP server with Claude Code, or remove
//! it. With `claude` on `PATH`, through `claude mcp add|remove` (user scope); otherwise by
//! editing Claude Code's user config (`$CLAUDE_CONFIG_DIR/.claude.json`, else
//! `~/.claude.json`) atomically, keeping every other key and their order.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The name Iris is registered under (tools appear as `mcp__iris__send_message`, ...).
pub const SERVER_NAME: &str = "iris";

/// What was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// `claude mcp ...` was run.
    Command(String),
    /// The file was edited.
    File(PathBuf),
    /// Nothing to do (uninstall of something not installed).
    Unchanged(PathBuf),
}

/// Why registering failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// `claude mcp ...` failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
    /// The user config is not JSON Iris can edit.
    #[error("{}: {message}; fix or move it, Iris did not change it", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No home directory to find the file in.
    #[error("cannot find Claude Code's user config: neither CLAUDE_CONFIG_DIR nor HOME is set")]
    NoHome,
}

/// Claude Code's user config file.
///
/// # Errors
/// [`InstallError::NoHome`].
pub fn claude_json() -> Result<PathBuf, InstallError> {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir).join(".claude.json"));
    }
    std::env::home_dir()
        .map(|home| home.join(".claude.json"))
        .ok_or(InstallError::NoHome)
}

/// Registers `url` (the MCP endpoint) as the `iris` server. `use_claude` picks
/// `claude mcp add` when `claude` is on `PATH`.
///
/// # Errors
/// [`InstallError`].
pub fn install(url: &str, use_claude: bool) -> Result<Registration, InstallError> {
    if use_claude && let Ok(claude) = which::which("claude") {
        // Replace an older registration, so a changed URL takes effect.
        let _ = run(&claude, &["mcp", "remove", "--scope", "user", SERVER_NAME]);
        return run(
            &claude,
            &[
                "mcp",
                "add",
                "--scope",
                "user",
                "--transport",
                "http",
                SERVER_NAME,
                url,
            ],
        );
    }
    let path = claude_json()?;
    edit(&path, |root| {
        let servers = root
            .entry("mcpServers")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        let Value::Object(servers) = servers else {
            return Err("\"mcpServers\" is not an object".to_owned());
        };
        servers.insert(SERVER_NAME.to_owned(), json!({"type": "http", "url": url}));
        Ok(true)
    })
}

/// Writes the `iris` server into `project`'s `.mcp.json` (project scope, checked in with the
/// project): `program serve --stdio`, with `env` (`IRIS_HOME` and `IRIS_CONFIG_PATH` when this
/// shell sets them). Other servers and keys are kept.
///
/// # Errors
/// [`InstallError::File`] when `.mcp.json` is not JSON Iris can edit.
pub fn install_project(
    project: &Path,
    program: &Path,
    env: &[(String, String)],
) -> Result<Registration, InstallError> {
    let path = project.join(".mcp.json");
    let mut entry = json!({
        "type": "stdio",
        "command": program,
        "args": ["serve", "--stdio"],
    });
    if !env.is_empty() {
        entry["env"] = env
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let written = edit(&path, |root| {
        let servers = root
            .entry("mcpServers")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        let Value::Object(servers) = servers else {
            return Err("\"mcpServers\" is not an object".to_owned());
        };
        if servers.get(SERVER_NAME) == Some(&entry) {
            return Ok(false);
        }
        servers.insert(SERVER_NAME.to_owned(), entry);
        Ok(true)
    })?;
    Ok(match written {
        Registration::Unchanged(path) => Registration::File(path),
        other => other,
    })
}

/// Removes the `iris` server registration.
///
/// # Errors
/// [`InstallError`].
pub fn uninstall(use_claude: bool) -> Result<Registration, InstallError> {
    let path = claude_json()?;
    // Not registered (never, or removed already): nothing to do, and nothing for `claude mcp
    // remove` to fail on.
    if !registered(&path) {
        return Ok(Registration::Unchanged(path));
    }
    if use_claude && let Ok(claude) = which::which("claude") {
        return run(&claude, &["mcp", "remove", "--scope", "user", SERVER_NAME]);
    }
    edit(&path, |root| {
        Ok(match root.get_mut("mcpServers") {
            Some(Value::Object(servers)) => servers.remove(SERVER_NAME).is_some(),
            _ => false,
        })
    })
}

/// Whether Claude Code's user config at `path` has Iris's entry (an unreadable file counts as
/// registered, so the removal reports why it cannot be read).
fn registered(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return path.exists();
    };
    serde_json::from_str::<Value>(&text).map_or(true, |root| {
        root.get("mcpServers")
            .and_then(|servers| servers.get(SERVER_NAME))
            .is_some()
    })
}

fn run(claude: &Path, args: &[&str]) -> Result<Registration, InstallError> {
    let command = format!("claude {}", args.join(" "));
    let output = std::process::Command::new(claude)
        .args(args)
        .output()
        .map_err(|error| InstallError::Command {
            command: command.clone(),
            message: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(InstallError::Command {
            command,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(Registration::Command(command))
}

/// Reads the file (an absent one is `{}`), applies `change` to its top-level object, and
/// writes it back atomically if `change` says it changed something.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut serde_json::Map<String, Value>) -> Result<bool, String>,
) -> Result<Registration, InstallError> {
    let failed = |message: String| InstallError::File {
        path: path.to_owned(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "{}".to_owned(),
        Err(error) => return Err(failed(error.to_string())),
    };
    let mut root: Value =
        serde_json::from_str(&text).map_err(|error| failed(format!("not valid JSON ({error})")))?;
    let Value::Object(object) = &mut root else {
        return Err(failed("the top level is not an object".to_owned()));
    };
    if !change(object).map_err(failed)? {
        return Ok(Registration::Unchanged(path.to_owned()));
    }
    let mut written =
        serde_json::to_string_pretty(&root).map_err(|error| failed(error.to_string()))?;
    written.push('\n');
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".iris-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| failed(error.to_string()))?;
    }
    std::fs::write(&temporary, written).map_err(|error| failed(error.to_string()))?;
    // Keep the file's permissions (it can hold credentials).
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temporary, meta.permissions());
    }
    std::fs::rename(&temporary, path).map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        failed(error.to_string())
    })?;
    Ok(Registration::File(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_other_keys_and_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".claude.json");
        std::fs::write(
            &path,
            r#"{"zeta":1,"mcpServers":{"other":{"type":"stdio"}},"alpha":{"x":[1,2]}}"#,
        )
        .unwrap();
        let add = |root: &mut serde_json::Map<String, Value>| {
            let Some(Value::Object(servers)) = root.get_mut("mcpServers") else {
                return Err("no servers".to_owned());
            };
            servers.insert(
                SERVER_NAME.to_owned(),
                json!({"type": "http", "url": "http://127.0.0.1:1615/mcp"}),
            );
            Ok(true)
        };
        assert_eq!(edit(&path, add).unwrap(), Registration::File(path.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["zeta", "mcpServers", "alpha"]);
        assert_eq!(value["mcpServers"]["other"]["type"], "stdio");
        assert_eq!(
            value["mcpServers"]["iris"]["url"],
            "http://127.0.0.1:1615/mcp"
        );
        assert_eq!(value["alpha"]["x"], json!([1, 2]));

        std::fs::write(&path, "not json").unwrap();
        let error = edit(&path, |_| Ok(true)).unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json");
    }

    #[test]
    fn a_project_gets_the_stdio_command_and_keeps_its_other_servers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".mcp.json");
        std::fs::write(&path, r#"{"mcpServers":{"db":{"command":"db-mcp"}}}"#).unwrap();
        let env = [("IRIS_HOME".to_owned(), "/srv/iris".to_owned())];
        install_project(dir.path(), Path::new("/usr/local/bin/iris"), &env).unwrap();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["mcpServers"]["db"]["command"], "db-mcp");
        let iris = &value["mcpServers"]["iris"];
        assert_eq!(iris["type"], "stdio");
        assert_eq!(iris["command"], "/usr/local/bin/iris");
        assert_eq!(iris["args"], json!(["serve", "--stdio"]));
        assert_eq!(iris["env"]["IRIS_HOME"], "/srv/iris");
        // Again: the same entry, nothing to change.
        install_project(dir.path(), Path::new("/usr/local/bin/iris"), &env).unwrap();
        let again: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(again, value);
    }
}
