//! The command line's side of a running Iris: `iris status`, `iris ask`, `iris tell` talk to
//! `iris serve` over HTTP (`/status`, and MCP at `/mcp` through the rmcp client), and
//! `iris doctor` checks the installation without a server.

use std::fmt::Write as _;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::config::Config;
use crate::pool::{PairState, PoolStatus};

/// Why a command could not talk to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("no Iris answers at {url} ({message}); start one with `iris serve`")]
    Unreachable {
        /// Where.
        url: String,
        /// The connection error.
        message: String,
    },
    /// The server answered something unexpected.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// Where.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// The base URL of the local server on `port`.
#[must_use]
pub fn base_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The environment variable that holds the bearer token the command line sends
/// (`settings.httpToken` or a team's token), for a server that requires one.
pub const TOKEN_VARIABLE: &str = "IRIS_TOKEN";

/// The bearer token from [`TOKEN_VARIABLE`], if set.
fn env_token() -> Option<String> {
    std::env::var(TOKEN_VARIABLE)
        .ok()
        .filter(|token| !token.trim().is_empty())
}

/// The pool status of the server at `base` (with the bearer token from `IRIS_TOKEN`, if set).
///
/// # Errors
/// [`ClientError`] when it cannot be reached, refuses, or answers nonsense.
pub async fn status(base: &str) -> Result<PoolStatus, ClientError> {
    let url = format!("{base}/status");
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = env_token() {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|error| ClientError::Unreachable {
            url: url.clone(),
            message: error.to_string(),
        })?;
    if !response.status().is_success() {
        let code = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        let reason = body["error"].as_str().unwrap_or("no reason given");
        return Err(ClientError::Protocol {
            url,
            message: format!(
                "refused with {code}: {reason} (the token comes from {TOKEN_VARIABLE})"
            ),
        });
    }
    let value: Value = response
        .json()
        .await
        .map_err(|error| ClientError::Protocol {
            url: url.clone(),
            message: error.to_string(),
        })?;
    serde_json::from_value(value).map_err(|error| ClientError::Protocol {
        url,
        message: error.to_string(),
    })
}

/// A status as a table, one pair per line.
#[must_use]
pub fn status_table(status: &PoolStatus) -> String {
    let mut out = format!("processes: {}/{}\n", status.live, status.max_processes);
    if status.pairs.is_empty() {
        out.push_str("no conversations yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<30} {:<9} {:>8} {:>6} {:>6} {:>10}  SESSION",
        "PAIR", "STATE", "PID", "TURNS", "QUEUE", "COST $"
    );
    for pair in &status.pairs {
        let state = match pair.state {
            PairState::Stopped => "asleep",
            PairState::Spawning => "starting",
            PairState::Idle => "idle",
            PairState::Busy => "busy",
            PairState::Stopping => "stopping",
        };
        let _ = writeln!(
            out,
            "{:<30} {:<9} {:>8} {:>6} {:>6} {:>10.4}  {}",
            pair.pair.to_string(),
            state,
            pair.pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            pair.session_turns,
            pair.queued,
            pair.total_cost_usd,
            pair.session_id
        );
    }
    out
}

/// Calls `tool` with `arguments` on the MCP server at `base` (with the bearer token from
/// `IRIS_TOKEN`, if set), returning its structured result and whether it is an error.
///
/// # Errors
/// [`ClientError`] when the server cannot be reached or the call fails at the protocol level.
pub async fn call_tool(
    base: &str,
    tool: &str,
    arguments: Value,
) -> Result<(Value, bool), ClientError> {
    call_tool_at(
        &format!("{base}/mcp"),
        env_token().as_deref(),
        tool,
        arguments,
    )
    .await
}

/// Calls `tool` on the MCP endpoint `url` (sending `token` as a bearer token, if given);
/// returns its structured result and whether it is an error result.
///
/// # Errors
/// As [`call_tool`].
pub async fn call_tool_at(
    url: &str,
    token: Option<&str>,
    tool: &str,
    arguments: Value,
) -> Result<(Value, bool), ClientError> {
    let url = url.to_owned();
    let unreachable = |message: String| ClientError::Unreachable {
        url: url.clone(),
        message,
    };
    let mut transport = StreamableHttpClientTransportConfig::with_uri(url.clone());
    if let Some(token) = token {
        transport = transport.auth_header(token);
    }
    let client =
        ().serve(StreamableHttpClientTransport::from_config(transport))
            .await
            .map_err(|error| unreachable(error.to_string()))?;
    let Value::Object(arguments) = arguments else {
        return Err(ClientError::Protocol {
            url,
            message: "tool arguments must be an object".to_owned(),
        });
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .map_err(|error| ClientError::Protocol {
            url: url.clone(),
            message: error.to_string(),
        });
    let _ = client.cancel().await;
    let result = result?;
    let body = result.structured_content.unwrap_or_else(|| json!({}));
    Ok((body, result.is_error.unwrap_or(false)))
}

/// Asks `team` (as `from`) and follows a `pending` answer with `message_status` until it
/// finishes. `on_wait` is called while waiting (for a spinner).
///
/// # Errors
/// As [`call_tool`].
pub async fn ask(
    base: &str,
    from: &str,
    team: &str,
    message: &str,
    mut on_wait: impl FnMut(),
) -> Result<(Value, bool), ClientError> {
    let arguments = json!({"fromTeam": from, "toTeam": team, "message": message, "timeout": 1000});
    let (mut body, mut is_error) = call_tool(base, "ask_message", arguments).await?;
    while matches!(body["status"].as_str(), Some("pending" | "queued")) {
        on_wait();
        let id = body["messageId"].clone();
        (body, is_error) = call_tool(
            base,
            "message_status",
            json!({"messageId": id, "timeout": 1000}),
        )
        .await?;
    }
    Ok((body, is_error))
}

/// One line of `iris doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it is fine.
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

/// The oldest Claude Code version Iris is tested with.
pub const MINIMUM_CLAUDE_VERSION: (u32, u32, u32) = (2, 1, 0);

/// Checks the claude binary (and its version), the configuration's teams, the database and
/// the port. Never changes anything.
pub async fn doctor(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let claude = config
        .settings
        .claude_path
        .clone()
        .unwrap_or_else(|| "claude".to_owned());
    checks.push(check_claude(&claude, "settings.claudePath").await);
    for team in config.teams.values() {
        if let Some(path) = &team.claude_path {
            checks.push(check_claude(path, &format!("teams.{}.claudePath", team.name)).await);
        }
        let (ok, detail) = if team.remote.is_some() {
            (
                false,
                "remote teams are not run by this build yet".to_owned(),
            )
        } else if team.path.is_dir() {
            (true, team.path.display().to_string())
        } else {
            (false, format!("{} is not a directory", team.path.display()))
        };
        checks.push(Check {
            name: format!("team {}", team.name),
            ok,
            detail,
        });
    }
    if config.teams.is_empty() {
        checks.push(Check {
            name: "teams".to_owned(),
            ok: false,
            detail: "no teams configured: add them under `teams:` in the config file".to_owned(),
        });
    }
    checks.push(match crate::store::Store::open(&config.database).await {
        Ok(store) => {
            let stats = store.stats().await;
            let _ = store.close().await;
            Check {
                name: "database".to_owned(),
                ok: true,
                detail: format!(
                    "{} ({} active sessions)",
                    config.database.path.display(),
                    stats.map_or(0, |stats| stats.active_sessions)
                ),
            }
        }
        Err(error) => Check {
            name: "database".to_owned(),
            ok: false,
            detail: error.to_string(),
        },
    });
    let port = config.settings.http_port;
    checks.push(match status(&base_url(port)).await {
        Ok(status) => Check {
            name: "server".to_owned(),
            ok: true,
            detail: format!("an Iris serves on port {port} ({}/{} processes)", status.live, status.max_processes),
        },
        Err(_) => match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => Check {
                name: "server".to_owned(),
                ok: true,
                detail: format!("not running; port {port} is free for `iris serve`"),
            },
            Err(error) => Check {
                name: "server".to_owned(),
                ok: false,
                detail: format!("port {port} is taken by something that is not Iris ({error}); set settings.httpPort"),
            },
        },
    });
    checks
}

async fn check_claude(program: &str, key: &str) -> Check {
    let name = format!("claude ({key})");
    let resolved = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        which::which(program).ok()
    };
    let Some(path) = resolved.filter(|path| path.exists()) else {
        return Check {
            name,
            ok: false,
            detail: format!("'{program}' not found: install Claude Code or set {key}"),
        };
    };
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&path)
            .arg("--version")
            .output(),
    )
    .await;
    let text = match output {
        Ok(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(Ok(output)) => {
            return Check {
                name,
                ok: false,
                detail: format!("{} --version failed ({})", path.display(), output.status),
            };
        }
        Ok(Err(error)) => {
            return Check {
                name,
                ok: false,
                detail: format!("cannot run {}: {error}", path.display()),
            };
        }
        Err(_) => {
            return Check {
                name,
                ok: false,
                detail: format!("{} --version did not answer within 20 s", path.display()),
            };
        }
    };
    match parse_version(&text) {
        Some(version) if version >= MINIMUM_CLAUDE_VERSION => Check {
            name,
            ok: true,
            detail: format!("{} ({text})", path.display()),
        },
        Some(_) => Check {
            name,
            ok: false,
            detail: format!(
                "{} is {text}, older than {}.{}.{} which Iris needs: update Claude Code",
                path.display(),
                MINIMUM_CLAUDE_VERSION.0,
                MINIMUM_CLAUDE_VERSION.1,
                MINIMUM_CLAUDE_VERSION.2
            ),
        },
        None => Check {
            name,
            ok: false,
            detail: format!("{} answered '{text}', not a version", path.display()),
        },
    }
}

/// `2.1.332 (Claude Code)` → `(2, 1, 332)`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .split_whitespace()
        .next()?
        .split('.')
        .map(str::parse::<u32>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_claude_versions() {
        assert_eq!(parse_version("2.1.332 (Claude Code)"), Some((2, 1, 332)));
        assert_eq!(parse_version("1.0.7"), Some((1, 0, 7)));
        assert_eq!(parse_version("not a version"), None);
        assert!(parse_version("2.0.99").unwrap() < MINIMUM_CLAUDE_VERSION);
    }
}
