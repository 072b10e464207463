//! Call-back identity: every agent Iris starts gets an MCP URL of its own
//! (`<base>/mcp/s/<token>`, passed with `--mcp-config`), so the calls it makes back into Iris
//! are attributed to its team without trusting what it says.
//!
//! A token is random, made once per pair for the life of this Iris, and resolves to the
//! pair's target team (the agent's own team). The URL reaches the agent in a file only its
//! user can read (`$IRIS_HOME/run/agents/<caller>@<target>.json`, mode 0600), never on its
//! command line, which every local user can read. Tokens are not stored: after a restart the
//! new Iris removes the old files and hands its agents new tokens (every agent is a new
//! process then).

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Pair;

/// The path prefix of per-agent MCP URLs.
pub const CALLBACK_PREFIX: &str = "/mcp/s/";

#[derive(Default)]
pub(crate) struct Callbacks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `http://127.0.0.1:PORT`, once Iris listens; no call-back URL before.
    base: Option<String>,
    /// The loopback port remote teams' tunnels lead to: a listener that serves agent URLs
    /// only (`None`: remote agents get no tunnel).
    tunnel_port: Option<u16>,
    by_token: HashMap<String, Pair>,
    by_pair: HashMap<Pair, String>,
}

impl Callbacks {
    pub(crate) fn with_base(base: Option<&str>) -> Self {
        let callbacks = Self::default();
        if let Some(base) = base {
            callbacks.set_base(base);
        }
        callbacks
    }

    pub(crate) fn set_base(&self, base: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.base = Some(base.trim_end_matches('/').to_owned());
        }
    }

    /// The MCP URL for the agent of `pair`, if Iris serves HTTP.
    pub(crate) fn url(&self, pair: &Pair) -> Option<String> {
        let mut state = self.state.lock().ok()?;
        let base = state.base.clone()?;
        let token = match state.by_pair.get(pair) {
            Some(token) => token.clone(),
            None => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                state.by_pair.insert(pair.clone(), token.clone());
                state.by_token.insert(token.clone(), pair.clone());
                token
            }
        };
        Some(format!("{base}{CALLBACK_PREFIX}{token}"))
    }

    /// Where remote teams' tunnels lead on this machine's loopback: a listener that serves
    /// agent URLs only, once there is one (never Iris's main listener).
    pub(crate) fn tunnel_port(&self) -> Option<u16> {
        let state = self.state.lock().ok()?;
        state.base.as_ref()?;
        state.tunnel_port
    }

    pub(crate) fn set_tunnel_port(&self, port: u16) {
        if let Ok(mut state) = self.state.lock() {
            state.tunnel_port = Some(port);
        }
    }

    /// The agent URL of `pair` as seen through a tunnel ending at `port` on a remote
    /// host's loopback: the same token, another address.
    pub(crate) fn url_through(&self, pair: &Pair, port: u16) -> Option<String> {
        let url = self.url(pair)?;
        let path = &url[url.find(CALLBACK_PREFIX)?..];
        Some(format!("http://127.0.0.1:{port}{path}"))
    }

    /// The pair whose agent holds `token` (the agent's team is its target).
    pub(crate) fn pair(&self, token: &str) -> Option<Pair> {
        self.state.lock().ok()?.by_token.get(token).cloned()
    }
}

/// The `--mcp-config` JSON that points an agent's `iris` MCP server at `url`.
pub(crate) fn mcp_config(url: &str) -> String {
    serde_json::json!({"mcpServers": {"iris": {"type": "http", "url": url}}}).to_string()
}

/// Where the agents' MCP config files live under `iris_home`.
#[must_use]
pub fn agent_config_dir(iris_home: &Path) -> PathBuf {
    iris_home.join("run").join("agents")
}

/// Writes the agent of `pair`'s MCP config (pointing at `url`) to its file in `dir`, readable
/// by this user only (directory 0700, file 0600, written whole then renamed into place, so
/// an agent never reads half a file). Not synced: the token dies with this Iris anyway.
///
/// # Errors
/// The directory or file cannot be written.
pub(crate) fn write_agent_config(dir: &Path, pair: &Pair, url: &str) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // `@` cannot occur in a team name, so no two pairs share a file.
    let name = format!("{}@{}.json", pair.caller, pair.target);
    let path = dir.join(&name);
    let temporary = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(mcp_config(url).as_bytes())?;
        std::fs::rename(&temporary, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

/// Removes the agents' MCP config files (their tokens are dead: a new Iris, or none).
pub(crate) fn clear_agent_configs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .extension()
            .is_some_and(|extension| extension == "json")
            || entry.file_name().to_string_lossy().starts_with('.');
        if ours && let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "cannot remove an old agent MCP config");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TeamName;

    fn pair(caller: &str, target: &str) -> Pair {
        Pair::new(
            TeamName::new(caller).expect("name"),
            TeamName::new(target).expect("name"),
        )
    }

    #[test]
    fn no_url_before_iris_listens() {
        let callbacks = Callbacks::default();
        assert_eq!(callbacks.url(&pair("a", "b")), None);
    }

    #[test]
    fn one_token_per_pair_resolving_to_the_agents_team() {
        let callbacks = Callbacks::default();
        callbacks.set_base("http://127.0.0.1:1615/");
        let first = callbacks.url(&pair("a", "b")).expect("url");
        assert_eq!(callbacks.url(&pair("a", "b")), Some(first.clone()));
        let other = callbacks.url(&pair("c", "b")).expect("url");
        assert_ne!(first, other, "each pair has its own token");
        let token = first
            .strip_prefix("http://127.0.0.1:1615/mcp/s/")
            .expect("prefix");
        assert_eq!(token.len(), 32);
        assert_eq!(
            callbacks.pair(token).map(|pair| pair.to_string()),
            Some("a->b".to_owned())
        );
        assert_eq!(callbacks.pair("not-a-token"), None);
    }

    #[test]
    fn agent_configs_are_private_files_and_are_cleared() {
        use std::os::unix::fs::PermissionsExt as _;
        let home = tempfile::tempdir().expect("tempdir");
        let dir = agent_config_dir(home.path());
        let path = write_agent_config(&dir, &pair("a", "b"), "http://127.0.0.1:9/mcp/s/x")
            .expect("written");
        assert_eq!(path, dir.join("a@b.json"));
        // Names with dashes never collide: a--b -> c and a -> b--c are two files.
        let one = write_agent_config(&dir, &pair("a--b", "c"), "u1").expect("one");
        let two = write_agent_config(&dir, &pair("a", "b--c"), "u2").expect("two");
        assert_ne!(one, two);
        std::fs::remove_file(one).expect("rm");
        std::fs::remove_file(two).expect("rm");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(
            config["mcpServers"]["iris"]["url"],
            "http://127.0.0.1:9/mcp/s/x"
        );
        // Written again (a new process of the pair): replaced in place.
        write_agent_config(&dir, &pair("a", "b"), "http://127.0.0.1:9/mcp/s/y").expect("again");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
        clear_agent_configs(&dir);
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    }

    #[test]
    fn the_mcp_config_is_json_naming_the_url() {
        let config: serde_json::Value =
            serde_json::from_str(&mcp_config("http://127.0.0.1:9/mcp/s/x")).expect("json");
        assert_eq!(
            config["mcpServers"]["iris"]["url"],
            "http://127.0.0.1:9/mcp/s/x"
        );
        assert_eq!(config["mcpServers"]["iris"]["type"], "http");
    }
}
