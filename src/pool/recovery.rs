//! What a restarted Iris does about agent processes a previous Iris left behind (when both
//! it and its guard died): stop each recorded process group whose processes still carry the
//! key Iris gave them. A group whose processes do not carry the key is someone else's (the
//! pgid was reused) and is left alone.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::PoolError;
use super::launch::AGENT_KEY_VARIABLE;
use crate::process;
use crate::store::Store;

/// Stops leftover agents recorded in the store and clears their records.
pub(super) async fn stop_leftover_agents(store: &Store, grace: Duration) -> Result<(), PoolError> {
    for agent in store.agents().await? {
        let marker = format!("{AGENT_KEY_VARIABLE}={}", agent.agent_key);
        if process::group_has_environment(agent.pgid, &marker) {
            tracing::warn!(pgid = agent.pgid, pair = %format!("{}->{}", agent.caller, agent.target), "stopping an agent left behind by a previous Iris");
            process::signal_group(agent.pgid, Signal::SIGTERM);
            let deadline = tokio::time::Instant::now() + grace;
            while process::group_has_environment(agent.pgid, &marker)
                && tokio::time::Instant::now() < deadline
            {
                // Not our children: polling is the only way to see them go.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            process::signal_group(agent.pgid, Signal::SIGKILL);
        }
        store.agent_stopped(agent.pgid).await?;
    }
    Ok(())
}
