//! Who is connected to this Iris: the `iris serve --stdio` bridges of Claude Code sessions,
//! and when anything last asked over HTTP. A daemon started by a bridge stops when it has no
//! clients and no work for `settings.daemonIdleTimeout`; `iris status` lists the bridges.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// One connected bridge, as [`crate::pool::PoolStatus`] shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStatus {
    /// The bridge process (the `iris serve --stdio` a Claude Code session started).
    pub pid: Option<u32>,
    /// Its working directory: the session's project.
    pub cwd: PathBuf,
    /// The team that directory names, if any (else it calls as itself, naming `fromTeam`).
    pub team: Option<String>,
    /// Milliseconds since it connected.
    pub connected_ms: u64,
}

struct Bridge {
    pid: Option<u32>,
    cwd: PathBuf,
    team: Option<String>,
    since: Instant,
}

struct State {
    next: u64,
    bridges: BTreeMap<u64, Bridge>,
    /// The last time a bridge left or an HTTP request came.
    last_seen: Instant,
    /// Whether any bridge ever connected.
    ever: bool,
}

/// The registry. Cheap to share (`Arc`).
pub(crate) struct Clients {
    state: Mutex<State>,
    /// Woken when a bridge leaves or an HTTP request comes.
    changed: Notify,
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next: 0,
                bridges: BTreeMap::new(),
                last_seen: Instant::now(),
                ever: false,
            }),
            changed: Notify::new(),
        }
    }
}

/// A connected bridge; it is listed until this is dropped.
pub struct BridgeHandle {
    clients: Arc<Clients>,
    id: u64,
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        let mut state = self.clients.lock();
        state.bridges.remove(&self.id);
        state.last_seen = Instant::now();
        drop(state);
        self.clients.changed.notify_waiters();
    }
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave this map half-changed: every change is one call.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn connect(
        self: &Arc<Self>,
        pid: Option<u32>,
        cwd: PathBuf,
        team: Option<String>,
    ) -> BridgeHandle {
        let mut state = self.lock();
        let id = state.next;
        state.next += 1;
        state.ever = true;
        state.bridges.insert(
            id,
            Bridge {
                pid,
                cwd,
                team,
                since: Instant::now(),
            },
        );
        BridgeHandle {
            clients: Arc::clone(self),
            id,
        }
    }

    /// Something asked over HTTP just now.
    pub(crate) fn touch(&self) {
        let mut state = self.lock();
        state.last_seen = Instant::now();
    }

    pub(crate) fn bridges(&self) -> Vec<BridgeStatus> {
        let state = self.lock();
        let now = Instant::now();
        state
            .bridges
            .values()
            .map(|bridge| BridgeStatus {
                pid: bridge.pid,
                cwd: bridge.cwd.clone(),
                team: bridge.team.clone(),
                connected_ms: u64::try_from(now.duration_since(bridge.since).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Whether a bridge ever connected.
    pub(crate) fn ever_bridged(&self) -> bool {
        self.lock().ever
    }

    /// `None` while a bridge is connected; else since when no client was seen.
    pub(crate) fn quiet_since(&self) -> Option<Instant> {
        let state = self.lock();
        state.bridges.is_empty().then_some(state.last_seen)
    }

    /// Resolves when a bridge leaves or an HTTP request comes (register before checking).
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_is_listed_until_its_handle_is_dropped() {
        let clients = Arc::new(Clients::default());
        assert!(clients.quiet_since().is_some());
        let handle = clients.connect(Some(7), PathBuf::from("/p"), Some("web".to_owned()));
        assert_eq!(clients.quiet_since(), None);
        let listed = clients.bridges();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].pid, Some(7));
        assert_eq!(listed[0].team.as_deref(), Some("web"));
        let before = Instant::now();
        drop(handle);
        assert!(clients.bridges().is_empty());
        assert!(clients.quiet_since().unwrap() >= before);
    }
}
