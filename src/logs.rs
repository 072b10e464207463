//! The in-memory log ring buffer behind the `get_logs` tool: a `tracing` layer that keeps the
//! last N events (time, level, target, message, fields).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// One captured log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LogEntry {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message.
    pub message: String,
    /// The other fields, as text.
    pub fields: BTreeMap<String, String>,
}

/// The last `capacity` log events. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct LogBuffer {
    entries: Mutex<VecDeque<(Level, LogEntry)>>,
    capacity: usize,
}

impl LogBuffer {
    /// A buffer keeping the last `capacity` events.
    #[must_use]
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
        })
    }

    /// The layer that fills this buffer.
    #[must_use]
    pub fn layer(self: &Arc<Self>) -> LogLayer {
        LogLayer(self.clone())
    }

    /// Events at `min_level` or more severe, newer than `since_ms`, the newest `limit` of them
    /// in time order.
    #[must_use]
    pub fn recent(&self, since_ms: Option<i64>, min_level: Level, limit: usize) -> Vec<LogEntry> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut picked: Vec<LogEntry> = entries
            .iter()
            .rev()
            // tracing orders levels by verbosity: ERROR < WARN < ... < TRACE.
            .filter(|(level, entry)| {
                *level <= min_level && since_ms.is_none_or(|since| entry.time_ms > since)
            })
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect();
        picked.reverse();
        picked
    }

    fn push(&self, level: Level, entry: LogEntry) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back((level, entry));
    }
}

/// The `tracing` layer of a [`LogBuffer`].
#[derive(Debug)]
pub struct LogLayer(Arc<LogBuffer>);

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        self.0.push(
            *metadata.level(),
            LogEntry {
                time_ms: crate::store::now_ms(),
                level: metadata.level().to_string(),
                target: metadata.target().to_owned(),
                message: visitor.message,
                fields: visitor.fields,
            },
        );
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_owned(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_last_events_and_filters_by_level() {
        let buffer = LogBuffer::new(3);
        let subscriber = tracing_subscriber::registry().with(buffer.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(pair = "a->b", "first");
            tracing::warn!("second");
            tracing::debug!("third");
            tracing::error!(code = 3, "fourth");
        });
        let all = buffer.recent(None, Level::TRACE, 10);
        let messages: Vec<_> = all.iter().map(|entry| entry.message.as_str()).collect();
        assert_eq!(messages, ["second", "third", "fourth"]);
        assert_eq!(all[2].fields["code"], "3");
        let warnings = buffer.recent(None, Level::WARN, 10);
        let messages: Vec<_> = warnings
            .iter()
            .map(|entry| entry.message.as_str())
            .collect();
        assert_eq!(messages, ["second", "fourth"]);
        assert_eq!(buffer.recent(None, Level::TRACE, 1)[0].message, "fourth");
    }
}
