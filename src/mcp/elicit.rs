//! `grantPermission: forward`: a tool-permission request put to the caller's person, through
//! MCP elicitation on the caller's own connection (Claude Code shows it as a form in that
//! person's session).

use rmcp::RoleServer;
use rmcp::model::{
    CancelledNotificationParam, ClientResult, ElicitRequest, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, RequestId, ServerRequest,
};
use rmcp::service::PeerRequestOptions;
use rmcp::service::{ElicitationMode, Peer, RequestContext};
use serde_json::{Value, json};

use super::ProvenCaller;
use crate::pool::{ElicitAnswer, ElicitFuture, Elicitor, Question, Route};

/// Who decides the forwarded requests of a message sent on this request: the agent's call
/// chain when an agent calls through its own URL, else the connection itself if it declared
/// form elicitation, else nobody (then `settings.forwardFallback` applies).
pub(super) fn route(
    context: &RequestContext<RoleServer>,
    proven: Option<&ProvenCaller>,
    caller: &str,
) -> Route {
    if let Some(pair) = proven.and_then(|proven| proven.agent.clone()) {
        return Route::Agent {
            pair,
            message: None,
        };
    }
    if context
        .peer
        .supported_elicitation_modes()
        .contains(&ElicitationMode::Form)
    {
        return Route::Person(std::sync::Arc::new(PeerElicitor {
            peer: context.peer.clone(),
            caller: caller.to_owned(),
        }));
    }
    Route::Nobody
}

/// A caller's MCP connection that declared elicitation.
struct PeerElicitor {
    peer: Peer<RoleServer>,
    caller: String,
}

/// The answer's choices, as the form offers them.
const ALLOW: &str = "allow";
const ALLOW_ALWAYS: &str = "allow_always";
const DENY: &str = "deny";

/// The form: a choice and an optional reason.
fn schema() -> Result<ElicitationSchema, String> {
    serde_json::from_value(json!({
        "type": "object",
        "properties": {
            "decision": {
                "type": "string",
                "title": "Decision",
                "description": "Allow once, allow this request of this team from now on, or deny",
                "enum": [ALLOW, ALLOW_ALWAYS, DENY],
                "enumNames": ["Allow once", "Allow always (this team, for you)", "Deny"]
            },
            "reason": {
                "type": "string",
                "title": "Reason",
                "description": "Why you deny it (the agent reads this)"
            }
        },
        "required": ["decision"]
    }))
    .map_err(|error| format!("the approval form could not be built: {error}"))
}

/// Reads the person's answer: an accepted form, or a decline (a denial).
fn answer(action: &ElicitationAction, content: Option<&Value>) -> Result<ElicitAnswer, String> {
    match action {
        ElicitationAction::Accept => {
            let decision = content
                .and_then(|content| content.get("decision"))
                .and_then(Value::as_str);
            let reason = content
                .and_then(|content| content.get("reason"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|reason| !reason.is_empty())
                .map(str::to_owned);
            match decision {
                Some(ALLOW) => Ok(ElicitAnswer::Allow),
                Some(ALLOW_ALWAYS) => Ok(ElicitAnswer::AllowAlways),
                Some(DENY) => Ok(ElicitAnswer::Deny(reason)),
                other => Err(format!(
                    "the caller's answer has no valid decision (got {other:?}; expected {ALLOW}, {ALLOW_ALWAYS} or {DENY})"
                )),
            }
        }
        ElicitationAction::Decline => {
            Ok(ElicitAnswer::Deny(Some("declined the request".to_owned())))
        }
        ElicitationAction::Cancel => Ok(ElicitAnswer::Deny(Some(
            "dismissed the request without deciding".to_owned(),
        ))),
        other => Err(format!(
            "the caller answered with an unknown action ({other:?})"
        )),
    }
}

impl Elicitor for PeerElicitor {
    fn describe(&self) -> String {
        format!("caller '{}' through MCP elicitation", self.caller)
    }

    fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    fn ask(&self, question: Question) -> ElicitFuture {
        let peer = self.peer.clone();
        Box::pin(async move {
            let params = ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: question.text(),
                requested_schema: schema()?,
            };
            let handle = peer
                .send_cancellable_request(
                    ServerRequest::ElicitRequest(ElicitRequest::new(params)),
                    PeerRequestOptions::no_options(),
                )
                .await
                .map_err(|error| format!("elicitation failed: {error}"))?;
            // Decided another way meanwhile (this future is dropped): the form is withdrawn
            // from the caller's session.
            let mut withdraw = Withdraw {
                peer: peer.clone(),
                id: Some(handle.id.clone()),
            };
            let response = handle.await_response().await;
            withdraw.id = None;
            match response.map_err(|error| format!("elicitation failed: {error}"))? {
                ClientResult::ElicitResult(result) => {
                    answer(&result.action, result.content.as_ref())
                }
                _ => Err("the caller answered the question with something else".to_owned()),
            }
        })
    }
}

/// Cancels a question still open at the caller's when dropped.
struct Withdraw {
    peer: Peer<RoleServer>,
    id: Option<RequestId>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let peer = self.peer.clone();
        let param = serde_json::from_value::<CancelledNotificationParam>(json!({
            "requestId": id,
            "reason": "decided another way (by a person at Iris, a timeout, or the end of the turn)"
        }));
        if let (Ok(param), Ok(runtime)) = (param, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = peer.notify_cancelled(param).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_a_valid_elicitation_schema() {
        let schema = schema().expect("schema");
        let text = serde_json::to_value(&schema).expect("encode");
        assert_eq!(text["required"], json!(["decision"]));
        assert_eq!(
            text["properties"]["decision"]["enum"],
            json!([ALLOW, ALLOW_ALWAYS, DENY])
        );
    }

    #[test]
    fn answers_map_to_decisions() {
        let accept = ElicitationAction::Accept;
        assert_eq!(
            answer(&accept, Some(&json!({"decision": "allow"}))),
            Ok(ElicitAnswer::Allow)
        );
        assert_eq!(
            answer(&accept, Some(&json!({"decision": "allow_always"}))),
            Ok(ElicitAnswer::AllowAlways)
        );
        assert_eq!(
            answer(
                &accept,
                Some(&json!({"decision": "deny", "reason": " not now "}))
            ),
            Ok(ElicitAnswer::Deny(Some("not now".to_owned())))
        );
        assert!(answer(&accept, Some(&json!({"decision": "maybe"}))).is_err());
        assert!(matches!(
            answer(&ElicitationAction::Decline, None),
            Ok(ElicitAnswer::Deny(Some(_)))
        ));
    }
}
