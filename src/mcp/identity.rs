//! Who is calling: what the connection proves, never what the caller claims.
//!
//! Over HTTP a request proves a team by its URL (an agent's own `/mcp/s/<token>`, see
//! [`Pool::set_callback_base`](crate::pool::Pool::set_callback_base)) or by a team's bearer
//! token (`teams.<name>.token`). `settings.httpToken` lets a client in without proving a team.
//! The stdio server knows its caller from its working directory. A request that proves a
//! team may omit `fromTeam`; one that states a different `fromTeam` is refused.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::Config;
use crate::pool::{CALLBACK_PREFIX, Pair, Pool};

/// The team a connection proved, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenCaller {
    /// The caller's team.
    pub team: String,
    /// How it was proven, for messages: "its agent URL", "its bearer token", ...
    pub proof: &'static str,
    /// When the caller is an agent Iris started (it came through its agent URL): that
    /// agent's pair, whose running message is where its calls come from.
    pub agent: Option<Pair>,
}

/// The caller of a stdio server started in `dir`: the team whose path is the deepest that
/// contains it (a Claude Code session runs its MCP servers in its project's directory).
/// Remote teams never match: their paths are on another machine.
#[must_use]
pub fn stdio_caller(config: &Config, dir: &std::path::Path) -> Option<ProvenCaller> {
    let dir = std::fs::canonicalize(dir).ok()?;
    config
        .teams
        .values()
        .filter(|team| team.remote.is_none() && dir.starts_with(&team.path))
        .max_by_key(|team| team.path.components().count())
        .map(|team| ProvenCaller {
            team: team.name.to_string(),
            proof: "the stdio server's working directory",
            agent: None,
        })
}

/// How the HTTP listener admits requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpAccess {
    /// Every request must carry a valid bearer token or come through an agent URL (serving
    /// on a non-loopback address). Otherwise a request without credentials is let in and
    /// states its `fromTeam`.
    pub require_token: bool,
    /// Only agents' own URLs (and `/health`, `/status`, `/approvals`) are served: the
    /// call-back listener of `iris serve --stdio --in-process`.
    pub callbacks_only: bool,
    /// Nothing but agents' own URLs (and `/health`): the listener remote teams' tunnels
    /// lead to, which anyone on those hosts may reach.
    pub agents_only: bool,
}

#[derive(Clone)]
pub(super) struct Gate {
    pub(super) pool: Pool,
    pub(super) access: HttpAccess,
}

/// Admits or refuses a request and records the caller it proved in its extensions (where
/// the tools find it through rmcp's `http::request::Parts`).
pub(super) async fn admit(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    gate.pool.client_seen();
    match identify(&gate, &request) {
        Ok(Some(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Why a request is refused.
#[derive(Debug)]
enum Refusal {
    NotFound(String),
    Unauthorized(String),
    Forbidden(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message),
        };
        let mut response = (status, axum::Json(json!({"error": message}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"iris\""),
            );
        }
        response
    }
}

fn identify(gate: &Gate, request: &Request) -> Result<Option<ProvenCaller>, Refusal> {
    let path = request.uri().path();
    if path == "/health" {
        return Ok(None);
    }
    // Against DNS rebinding (rmcp checks this for MCP; this covers every route): a loopback
    // server answers only requests addressed to a loopback name.
    if !gate.access.require_token && !loopback_host(request) {
        return Err(Refusal::Forbidden(
            "this Iris serves loopback only: the Host header must be localhost, 127.0.0.1 or [::1]"
                .to_owned(),
        ));
    }
    let by_url = match path.strip_prefix(CALLBACK_PREFIX) {
        Some(token) => Some(agent_url(gate, token)?),
        None if gate.access.agents_only => {
            return Err(Refusal::NotFound(format!(
                "{path}: this listener serves only the agents Iris started on remote hosts (their {CALLBACK_PREFIX}<token> URLs)"
            )));
        }
        // A person's approvals reach the stdio server's listener too (they carry the
        // approver token, checked by the routes), and so does `iris status`.
        None if gate.access.callbacks_only
            && !path.starts_with("/approvals")
            && path != "/status"
            && path != "/metrics" =>
        {
            return Err(Refusal::NotFound(format!(
                "{path}: this listener serves only the agents Iris started (their {CALLBACK_PREFIX}<token> URLs)"
            )));
        }
        None if path.starts_with("/mcp/") => {
            return Err(Refusal::NotFound(format!(
                "{path}: no such MCP endpoint; use /mcp"
            )));
        }
        None => None,
    };
    let by_token = bearer(gate, request)?;
    match (by_url, by_token) {
        (Some(agent), Some(Bearer::Team(team))) if team != agent.team => {
            Err(Refusal::Forbidden(format!(
                "the bearer token is team '{team}''s, but this URL belongs to team '{}''s agent",
                agent.team
            )))
        }
        (Some(agent), _) => Ok(Some(agent)),
        (None, Some(Bearer::Team(team))) => Ok(Some(ProvenCaller {
            team,
            proof: "its bearer token",
            agent: None,
        })),
        (None, Some(Bearer::Server)) => Ok(None),
        // The dashboard checks its own login (a cookie from its login form, or a bearer
        // token), so a browser can reach its login page.
        (None, None) if gate.access.require_token && !crate::dashboard::is_dashboard_path(path) => Err(Refusal::Unauthorized(
            "this Iris serves a non-loopback address: send `Authorization: Bearer <token>` with a token from settings.httpToken or a team's token".to_owned(),
        )),
        // The pool's state names every team's pairs and sessions: once tokens are configured,
        // only a holder of one reads it.
        (None, None) if path == "/status" && gate.pool.config().has_tokens() => {
            Err(Refusal::Unauthorized(
                "tokens are configured: /status needs `Authorization: Bearer <token>` (settings.httpToken or a team's token; the iris command sends IRIS_TOKEN)".to_owned(),
            ))
        }
        (None, None) => Ok(None),
    }
}

/// Whether the request's `Host` is a loopback name (any port). No `Host` (HTTP/1.0) passes:
/// a browser always sends one.
fn loopback_host(request: &Request) -> bool {
    let Some(host) = request.headers().get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    loopback_authority(host)
}

/// Whether `authority` (`host[:port]`, `[v6][:port]`) names this machine's loopback:
/// `localhost`, `127.0.0.1` or `::1`.
pub(crate) fn loopback_authority(authority: &str) -> bool {
    let name = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

fn agent_url(gate: &Gate, token: &str) -> Result<ProvenCaller, Refusal> {
    if token.is_empty() || token.contains('/') {
        return Err(Refusal::NotFound(format!(
            "{CALLBACK_PREFIX}{token}: an agent URL is {CALLBACK_PREFIX}<token> with nothing after the token"
        )));
    }
    let pair = gate.pool.callback_pair(token).ok_or_else(|| {
        Refusal::NotFound(
            "unknown agent URL: it was not given out by this Iris (after a restart, agents get new URLs)".to_owned(),
        )
    })?;
    let team = pair.target.clone();
    // A team removed from the configuration has no agents any more: its URLs are dead.
    if gate.pool.config().team(team.as_str()).is_none() {
        return Err(Refusal::NotFound(format!(
            "this agent URL belonged to team '{team}', which is no longer configured"
        )));
    }
    Ok(ProvenCaller {
        team: team.to_string(),
        proof: "its agent URL",
        agent: Some(pair),
    })
}

enum Bearer {
    Team(String),
    Server,
}

/// Whether `offered` is one of the configured tokens (`settings.httpToken` or a team's).
pub(crate) fn known_token(config: &crate::config::Config, offered: &str) -> bool {
    config
        .settings
        .http_token
        .as_ref()
        .is_some_and(|token| token.matches(offered))
        || config.teams.values().any(|team| {
            team.token
                .as_ref()
                .is_some_and(|token| token.matches(offered))
        })
}

fn bearer(gate: &Gate, request: &Request) -> Result<Option<Bearer>, Refusal> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let offered = value
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            Refusal::Unauthorized("the Authorization header must be `Bearer <token>`".to_owned())
        })?;
    let config = gate.pool.config();
    if let Some(team) = config.teams.values().find(|team| {
        team.token
            .as_ref()
            .is_some_and(|token| token.matches(offered))
    }) {
        return Ok(Some(Bearer::Team(team.name.to_string())));
    }
    if config
        .settings
        .http_token
        .as_ref()
        .is_some_and(|token| token.matches(offered))
    {
        return Ok(Some(Bearer::Server));
    }
    Err(Refusal::Unauthorized(
        "the bearer token matches no token in the configuration (settings.httpToken or teams.<name>.token)".to_owned(),
    ))
}
