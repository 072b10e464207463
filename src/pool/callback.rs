//! Call-back identity: every agent Iris starts gets an MCP URL of its own
//! (`<base>/mcp/s/<token>`, passed with `--mcp-config`), so the calls it makes back into Iris
//! are attributed to its team without trusting what it says.
//!
//! A token is random, made once per pair for the life of this Iris, and resolves to the
//! pair's target team (the agent's own team). Tokens are never stored: after a restart the
//! new Iris hands its agents new ones (every agent is a new process then).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Pair;
use crate::config::TeamName;

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
    by_token: HashMap<String, TeamName>,
    by_pair: HashMap<Pair, String>,
}

impl Callbacks {
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
                state.by_token.insert(token.clone(), pair.target.clone());
                token
            }
        };
        Some(format!("{base}{CALLBACK_PREFIX}{token}"))
    }

    /// The team whose agent holds `token`.
    pub(crate) fn team(&self, token: &str) -> Option<TeamName> {
        self.state.lock().ok()?.by_token.get(token).cloned()
    }
}

/// The `--mcp-config` value that points an agent's `iris` MCP server at `url`.
#[must_use]
pub fn mcp_config(url: &str) -> String {
    serde_json::json!({"mcpServers": {"iris": {"type": "http", "url": url}}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            callbacks.team(token).map(|t| t.to_string()),
            Some("b".to_owned())
        );
        assert_eq!(callbacks.team("not-a-token"), None);
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
