//! What a restarted Iris does about agent processes a previous Iris left behind (when both
//! it and its guard died): stop each recorded process group whose processes still carry the
//! key Iris gave them. A group whose processes do not carry the key is someone else's (the
//! pgid was reused) and is left alone.

use std::fs::File;

use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::Flock;
use nix::sys::signal::Signal;

use super::PoolError;
use super::launch::AGENT_KEY_VARIABLE;
use crate::config::DatabaseConfig;
use crate::process;
use crate::store::Store;

/// Held for as long as a pool runs on a database file: a second Iris on the same file would
/// run restart recovery against a live one (marking its running messages interrupted and
/// stopping its agents), so it is refused instead. The kernel drops the lock when the
/// process dies, however it dies.
pub(super) struct InstanceLock {
    _lock: Option<Flock<File>>,
}

/// Takes the instance lock next to the database file (`<database>.lock`, holding the pid).
pub(super) fn lock_instance(database: &DatabaseConfig) -> Result<InstanceLock, PoolError> {
    if database.in_memory {
        return Ok(InstanceLock { _lock: None });
    }
    let mut path = database.path.clone().into_os_string();
    path.push(".lock");
    let path = PathBuf::from(path);
    let failed = |message: String| PoolError::Instance {
        path: path.clone(),
        message,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| failed(error.to_string()))?;
    }
    let mut lock = match process::try_lock(&path).map_err(|error| failed(error.to_string()))? {
        Ok(lock) => lock,
        Err(holder) => {
            return Err(failed(format!(
                "another Iris{} is already using this database; stop it, or give this one another database.path",
                holder
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default()
            )));
        }
    };
    process::write_pid(&mut lock, &path);
    Ok(InstanceLock { _lock: Some(lock) })
}

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
            // Only if it is still ours: the group may have ended and its id been reused.
            if process::group_has_environment(agent.pgid, &marker) {
                process::signal_group(agent.pgid, Signal::SIGKILL);
            }
        }
        store.agent_stopped(agent.pgid).await?;
    }
    Ok(())
}
