//! The command line's side of a running Iris: `iris status`, `iris ask`, `iris tell`,
//! `iris report` talk to `iris serve` over HTTP (`/status`, and MCP at `/mcp` through the
//! rmcp client) and get the typed results of [`crate::api`]; `iris doctor` checks the
//! installation without a server; `iris fork` reads the database. What they print is made
//! in [`crate::output`].

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{Failure, MessageOutcome, MessageView, ReportPage};
use crate::config::{Config, TeamName};
use crate::pool::{ApprovalEvent, ForkCommand, PoolStatus};
use crate::store::{ApprovalRecord, PairRuleRecord};

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
    /// The tool ran and failed (unknown team, bad caller, ...).
    #[error("{}", .0.error)]
    Tool(Failure),
    /// The server refused the request, saying why (no such approval, a wrong token...).
    #[error("{0}")]
    Refused(String),
    /// `iris fork`: the pair has nothing to fork, or cannot be named.
    #[error("{0}")]
    Fork(String),
    /// `iris fork`: the database could not be read.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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
    let response = send(request, &url).await?;
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
    decode(json_body(response, &url).await?, &url)
}

/// Calls `tool` with `arguments` on the MCP server at `base` (with the bearer token from
/// `IRIS_TOKEN`, if set) and reads its structured result as `T`.
///
/// # Errors
/// [`ClientError`] when the server cannot be reached, the call fails at the protocol level,
/// or the tool fails ([`ClientError::Tool`]).
pub async fn call_tool<T: DeserializeOwned>(
    base: &str,
    tool: &str,
    arguments: Value,
) -> Result<T, ClientError> {
    call_tool_at(
        &format!("{base}/mcp"),
        env_token().as_deref(),
        tool,
        arguments,
    )
    .await
}

/// Calls `tool` on the MCP endpoint `url` (sending `token` as a bearer token, if given) and
/// reads its structured result as `T`.
///
/// # Errors
/// As [`call_tool`].
pub async fn call_tool_at<T: DeserializeOwned>(
    url: &str,
    token: Option<&str>,
    tool: &str,
    arguments: Value,
) -> Result<T, ClientError> {
    let (body, is_error) = call_tool_raw(url, token, tool, arguments).await?;
    let protocol = |error: serde_json::Error| ClientError::Protocol {
        url: url.to_owned(),
        message: format!("{tool} answered something this client does not read: {error}"),
    };
    if is_error && let Ok(failure) = serde_json::from_value::<Failure>(body.clone()) {
        return Err(ClientError::Tool(failure));
    }
    serde_json::from_value(body).map_err(protocol)
}

/// Calls `tool` on the MCP endpoint `url`; returns its structured result as JSON and whether
/// it is an error result.
///
/// # Errors
/// As [`call_tool`], but a failing tool is not an error here.
pub async fn call_tool_raw(
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
/// As [`call_tool`]: a turn that failed is [`ClientError::Tool`]; one that ended with an
/// error result (an API error) is an outcome with `is_error` set and the result's text.
pub async fn ask(
    base: &str,
    from: &str,
    team: &str,
    message: &str,
    mut on_wait: impl FnMut(),
) -> Result<MessageOutcome, ClientError> {
    let arguments = json!({"fromTeam": from, "toTeam": team, "message": message, "timeout": 1000});
    let mut outcome: MessageOutcome = call_tool(base, "ask_message", arguments).await?;
    while outcome.is_waiting() {
        on_wait();
        let arguments = json!({"messageId": outcome.message_id, "timeout": 1000});
        let view: MessageView = call_tool(base, "message_status", arguments).await?;
        outcome = view.into();
    }
    Ok(outcome)
}

/// Tells `team` (as `from`) without waiting: the queued message.
///
/// # Errors
/// As [`call_tool`].
pub async fn tell(
    base: &str,
    from: &str,
    team: &str,
    message: &str,
) -> Result<MessageOutcome, ClientError> {
    call_tool(
        base,
        "quick_message",
        json!({"fromTeam": from, "toTeam": team, "message": message}),
    )
    .await
}

/// The newest `limit` messages of the pair `from` → `team`.
///
/// # Errors
/// As [`call_tool`].
pub async fn report(
    base: &str,
    from: &str,
    team: &str,
    limit: u32,
) -> Result<ReportPage, ClientError> {
    call_tool(
        base,
        "session_report",
        json!({"fromTeam": from, "team": team, "limit": limit}),
    )
    .await
}

/// The command that opens the stored conversation of `from` with `team` as a fork, read
/// from the database (no server needed; nothing is written).
///
/// # Errors
/// [`ClientError::Fork`] for an unknown team, a bad name or a pair with no conversation;
/// [`ClientError::Store`] when the database cannot be read.
pub async fn fork(config: &Config, team: &str, from: &str) -> Result<ForkCommand, ClientError> {
    let Some(team_config) = config.team(team) else {
        return Err(ClientError::Fork(format!(
            "unknown team '{team}'; known teams: {}",
            config.team_names().join(", ")
        )));
    };
    let caller =
        TeamName::new(from).map_err(|error| ClientError::Fork(format!("--from: {error}")))?;
    let store = crate::store::Store::open(&config.database).await?;
    let session = store.current_session(&caller, &team_config.name).await;
    let _ = store.close().await;
    let Some(session) = session? else {
        return Err(ClientError::Fork(format!(
            "{from} has no conversation with {team} yet: nothing to fork"
        )));
    };
    Ok(crate::pool::fork_command(
        config,
        team_config,
        session.session_id,
    ))
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
        if let Some(remote) = &team.remote {
            checks.extend(check_remote(team, remote).await);
            continue;
        }
        if let Some(path) = &team.claude_path {
            checks.push(check_claude(path, &format!("teams.{}.claudePath", team.name)).await);
        }
        let (ok, detail) = if team.path.is_dir() {
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
    // Read only: a doctor creates and migrates nothing.
    let path = config.database.path.display();
    checks.push(match crate::store::Store::inspect(&config.database) {
        Ok(Some(found)) => Check {
            name: "database".to_owned(),
            ok: true,
            detail: if found.needs_migration {
                format!(
                    "{path} (schema {}, migrated at the next start; {} active sessions)",
                    found.schema, found.active_sessions
                )
            } else {
                format!("{path} ({} active sessions)", found.active_sessions)
            },
        },
        Ok(None) if config.database.in_memory => Check {
            name: "database".to_owned(),
            ok: true,
            detail: "in memory (database.inMemory): nothing survives a restart".to_owned(),
        },
        Ok(None) => Check {
            name: "database".to_owned(),
            ok: true,
            detail: format!("{path} does not exist yet: `iris serve` creates it"),
        },
        Err(error) => Check {
            name: "database".to_owned(),
            ok: false,
            detail: error.to_string(),
        },
    });
    let port = config.settings.http_port;
    // The running Iris says where it serves (a daemon whose port was taken serves elsewhere).
    let base = crate::approver::running_url(&config.iris_home).unwrap_or_else(|| base_url(port));
    checks.push(match status(&base).await {
        Ok(status) => Check {
            name: "server".to_owned(),
            ok: true,
            detail: format!(
                "an Iris serves at {base} ({}/{} processes, {} stdio sessions)",
                status.live,
                status.max_processes,
                status.bridges.len()
            ),
        },
        // It answered, and refused: an Iris with tokens, and no (or a wrong) IRIS_TOKEN here.
        Err(ClientError::Protocol { message, .. }) => Check {
            name: "server".to_owned(),
            ok: true,
            detail: format!("an Iris serves at {base}; its status: {message}"),
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

/// A remote team's checks: its host reached without prompts (BatchMode), the team's
/// directory there, and the claude executable there with its version.
async fn check_remote(
    team: &crate::config::TeamConfig,
    remote: &crate::config::RemoteConfig,
) -> Vec<Check> {
    let name = format!("team {} (on {})", team.name, remote.host);
    let started = std::time::Instant::now();
    let probe = match crate::remote::probe(team, remote).await {
        Ok(probe) => probe,
        Err(error) => {
            return vec![Check {
                name,
                ok: false,
                detail: error.to_string(),
            }];
        }
    };
    let reached = format!(
        "reached {} with `{}` in {} ms",
        remote.host,
        remote.command,
        started.elapsed().as_millis()
    );
    let path = team.path.display();
    let mut checks = vec![match &probe.directory {
        Some(directory) => Check {
            name,
            ok: true,
            detail: format!("{reached}; directory {path} is {directory}"),
        },
        None => Check {
            name,
            ok: false,
            detail: format!(
                "{reached}, but there is no directory {path} there: create it, or fix teams.{}.path",
                team.name
            ),
        },
    }];
    let program = team.claude_path.as_deref().unwrap_or("claude");
    let claude = format!("claude of team {} (on {})", team.name, remote.host);
    checks.push(match (&probe.claude, &probe.version) {
        (None, _) => Check {
            name: claude,
            ok: false,
            detail: format!(
                "'{program}' not found on {}: install Claude Code there, or set teams.{}.claudePath to its full path (a non-interactive ssh session may not read your login PATH)",
                remote.host, team.name
            ),
        },
        (Some(found), version) => {
            let text = version.clone().unwrap_or_default();
            match parse_version(&text) {
                Some(version) if version >= MINIMUM_CLAUDE_VERSION => Check {
                    name: claude,
                    ok: true,
                    detail: format!("{found} ({text})"),
                },
                Some(_) => Check {
                    name: claude,
                    ok: false,
                    detail: format!(
                        "{found} on {} is {text}, older than {}.{}.{} which Iris needs: update Claude Code there",
                        remote.host,
                        MINIMUM_CLAUDE_VERSION.0,
                        MINIMUM_CLAUDE_VERSION.1,
                        MINIMUM_CLAUDE_VERSION.2
                    ),
                },
                None => Check {
                    name: claude,
                    ok: false,
                    detail: format!("{found} on {} answered '{text}' to --version, not a version", remote.host),
                },
            }
        }
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

/// Where the `iris` command reaches the approvals of a running Iris: its address and the
/// approver token it left in `$IRIS_HOME/run/approver.json`. Its `Debug` leaves the token
/// out.
#[derive(Clone)]
pub struct Approver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    token: String,
}

impl std::fmt::Debug for Approver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approver")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Approver {
    /// The running Iris of `iris_home`, from its approver file; `port` overrides the address
    /// it names (the token still comes from the file).
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when no Iris left a file (none runs for this
    /// `IRIS_HOME`), [`ClientError::Protocol`] when the file cannot be read.
    pub fn find(iris_home: &std::path::Path, port: Option<u16>) -> Result<Self, ClientError> {
        let path = crate::approver::approver_file(iris_home);
        let file = crate::approver::read_approver_file(iris_home)
            .map_err(|error| ClientError::Protocol {
                url: path.display().to_string(),
                message: format!("the approver file cannot be read: {error}"),
            })?
            .ok_or_else(|| ClientError::Unreachable {
                url: path.display().to_string(),
                message: "no approver file: no Iris runs for this IRIS_HOME (approvals are decided on a running `iris serve`)".to_owned(),
            })?;
        Ok(Self {
            base: port.map_or(file.url, base_url),
            token: file.token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .header(crate::approver::APPROVER_HEADER, &self.token);
        // A server that requires bearer tokens (serving off loopback) lets no request in
        // without one; the approver token is checked on top.
        if let Some(token) = env_token() {
            request = request.bearer_auth(token);
        }
        (url, request)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let (url, mut request) = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = send(request, &url).await?;
        let code = response.status();
        let value = json_body(response, &url).await?;
        if !code.is_success() {
            let reason = value["error"].as_str().unwrap_or("no reason given");
            return Err(ClientError::Refused(reason.to_owned()));
        }
        decode(value, &url)
    }

    /// The pending requests (with `all`, the last `limit` recorded ones too, newest first).
    ///
    /// # Errors
    /// [`ClientError`] when the server cannot be reached or refuses.
    pub async fn list(&self, all: bool, limit: usize) -> Result<Vec<ApprovalRecord>, ClientError> {
        let path = if all {
            format!("/approvals?all=1&limit={limit}")
        } else {
            "/approvals".to_owned()
        };
        let mut page: Value = self.send(reqwest::Method::GET, &path, None).await?;
        decode(page["approvals"].take(), &format!("{}{path}", self.base))
    }

    /// A one-time link (valid 2 minutes) that logs a person into the dashboard, so that it
    /// can decide approvals.
    ///
    /// # Errors
    /// [`ClientError`] when the server cannot be reached or refuses (the dashboard is off).
    pub async fn dashboard_link(&self) -> Result<String, ClientError> {
        let answer: Value = self
            .send(reqwest::Method::POST, "/dashboard/login-link", None)
            .await?;
        let path = answer["path"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol {
                url: format!("{}/dashboard/login-link", self.base),
                message: "the answer has no path".to_owned(),
            })?;
        Ok(format!("{}{path}", self.base))
    }

    /// Allows a pending request (`id` whole or a unique prefix); with `always`, the same
    /// request of its pair from now on.
    ///
    /// # Errors
    /// [`ClientError::Refused`] when no pending request has that id.
    pub async fn approve(&self, id: &str, always: bool) -> Result<ApprovalRecord, ClientError> {
        self.send(
            reqwest::Method::POST,
            &format!("/approvals/{}/approve", encode(id)),
            Some(json!({"always": always, "via": "the iris command"})),
        )
        .await
    }

    /// Denies a pending request, with a reason the agent reads.
    ///
    /// # Errors
    /// [`ClientError::Refused`] when no pending request has that id.
    pub async fn deny(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalRecord, ClientError> {
        self.send(
            reqwest::Method::POST,
            &format!("/approvals/{}/deny", encode(id)),
            Some(json!({"reason": reason, "via": "the iris command"})),
        )
        .await
    }

    /// The allow-always rules.
    ///
    /// # Errors
    /// [`ClientError`] when the server cannot be reached or refuses.
    pub async fn rules(&self) -> Result<Vec<PairRuleRecord>, ClientError> {
        let mut page: Value = self
            .send(reqwest::Method::GET, "/approvals/rules", None)
            .await?;
        decode(
            page["rules"].take(),
            &format!("{}/approvals/rules", self.base),
        )
    }

    /// Removes an allow-always rule.
    ///
    /// # Errors
    /// [`ClientError::Refused`] when no rule has that id.
    pub async fn forget(&self, id: &str) -> Result<PairRuleRecord, ClientError> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/approvals/rules/{}", encode(id)),
            None,
        )
        .await
    }

    /// Follows the approvals: the pending ones, then every event as it happens, each given to
    /// `on_event`, until the server stops (or the connection breaks).
    ///
    /// # Errors
    /// [`ClientError`] when the server cannot be reached, refuses, or the stream breaks.
    pub async fn watch(&self, mut on_event: impl FnMut(ApprovalEvent)) -> Result<(), ClientError> {
        let (url, request) = self.request(reqwest::Method::GET, "/approvals/watch");
        let mut response = send(request, &url).await?;
        if !response.status().is_success() {
            let value: Value = response.json().await.unwrap_or_default();
            let reason = value["error"].as_str().unwrap_or("no reason given");
            return Err(ClientError::Refused(reason.to_owned()));
        }
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|error| ClientError::Protocol {
                    url: url.clone(),
                    message: error.to_string(),
                })?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if let Ok(event) = serde_json::from_slice::<ApprovalEvent>(&line) {
                    on_event(event);
                }
            }
        }
    }
}

/// A response's body as JSON.
async fn json_body(response: reqwest::Response, url: &str) -> Result<Value, ClientError> {
    response
        .json()
        .await
        .map_err(|error| ClientError::Protocol {
            url: url.to_owned(),
            message: error.to_string(),
        })
}

/// JSON from `url` read as `T`.
fn decode<T: DeserializeOwned>(value: Value, url: &str) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|error| ClientError::Protocol {
        url: url.to_owned(),
        message: error.to_string(),
    })
}

/// Sends `request` (to `url`, named in the error when nothing answers there).
async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, ClientError> {
    request
        .send()
        .await
        .map_err(|error| ClientError::Unreachable {
            url: url.to_owned(),
            message: error.to_string(),
        })
}

/// An id as one URL path segment: ids are hex, anything else is refused by the server as
/// unknown, so only the characters that would change the path are escaped.
fn encode(id: &str) -> String {
    id.trim()
        .chars()
        .map(|c| match c {
            '/' => "%2F".to_owned(),
            '?' => "%3F".to_owned(),
            '#' => "%23".to_owned(),
            '%' => "%25".to_owned(),
            ' ' => "%20".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
