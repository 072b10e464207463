//! How a team's agent is launched: the command line and environment built from its config.

use std::sync::Arc;

use uuid::Uuid;

use super::Pair;
use crate::agent::{AgentSpec, PermissionPolicy};
use crate::config::{Config, TeamConfig};

/// Whether a spawn starts the pair's session or continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// `--session-id=<uuid>`: nothing of this session exists yet.
    New,
    /// `--resume=<uuid>`: the session has a transcript to continue.
    Resume,
}

/// The fixed flags of every agent: headless, stream-json both ways, permissions asked on stdio.
const BASE_ARGS: [&str; 5] = [
    "--print",
    "--verbose",
    "--input-format=stream-json",
    "--output-format=stream-json",
    "--permission-prompt-tool=stdio",
];

/// Builds the spec that starts `team`'s agent for `pair`.
#[must_use]
pub fn agent_spec(
    config: &Config,
    team: &TeamConfig,
    pair: &Pair,
    session: Uuid,
    mode: SessionMode,
    cost_baseline: f64,
) -> AgentSpec {
    let settings = &config.settings;
    let (program, program_source) = match (&team.claude_path, &settings.claude_path) {
        (Some(path), _) => (path.clone(), format!("teams.{}.claudePath", team.name)),
        (None, Some(path)) => (path.clone(), "settings.claudePath".to_owned()),
        (None, None) => (
            "claude".to_owned(),
            "PATH (no claudePath is configured; set settings.claudePath)".to_owned(),
        ),
    };
    let mut args: Vec<String> = BASE_ARGS.iter().map(|arg| (*arg).to_owned()).collect();
    args.push(match mode {
        SessionMode::New => format!("--session-id={session}"),
        SessionMode::Resume => format!("--resume={session}"),
    });
    if let Some(model) = &team.model {
        args.push(format!("--model={model}"));
    }
    if !team.allowed_tools.is_empty() {
        args.push(format!("--allowedTools={}", team.allowed_tools.join(",")));
    }
    if !team.disallowed_tools.is_empty() {
        args.push(format!(
            "--disallowedTools={}",
            team.disallowed_tools.join(",")
        ));
    }
    if let Some(prompt) = &team.append_system_prompt {
        args.push(format!("--append-system-prompt={prompt}"));
    }
    if let Some(mode) = &team.permission_mode {
        args.push(format!("--permission-mode={mode}"));
    }
    let mut env: Vec<(String, String)> = vec![
        ("IRIS_TEAM".to_owned(), pair.target.to_string()),
        ("IRIS_CALLER".to_owned(), pair.caller.to_string()),
    ];
    env.extend(
        team.env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    AgentSpec {
        label: Arc::from(pair.to_string()),
        program,
        program_source,
        args,
        cwd: team.path.clone(),
        env,
        env_remove: Vec::new(),
        spawn_timeout: team.spawn_timeout.unwrap_or(settings.spawn_timeout),
        response_timeout: settings.response_timeout,
        stop_grace: settings.stop_grace_period,
        max_line_bytes: settings.max_line_bytes,
        permissions: PermissionPolicy {
            grant: team.grant_permission,
            team: team.name.to_string(),
        },
        cost_baseline,
    }
}
