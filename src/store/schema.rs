//! The schema, as forward-only migrations.
//!
//! `PRAGMA user_version` holds how many migrations a database has had. Migration `i` (0-based)
//! takes a database from version `i` to `i + 1` and runs in one transaction together with the
//! version bump, so a database is always at exactly one released version.
//!
//! Rules for changing this file: never edit or remove a released migration, only append; for
//! every released version, check in a fixture database under `tests/fixtures/` and add it to
//! the fixture test in `store/tests.rs`, which opens each with the current code.

/// `PRAGMA application_id` of an Iris database ("Iris" in ASCII), so that another program's
/// SQLite file is recognised and left alone.
pub(super) const APPLICATION_ID: i64 = 0x4972_6973;

/// Every migration, oldest first. The schema version of a database is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // Ids are UUIDs as lowercase hyphenated text: readable in the sqlite3 shell, and for
    // messages (UUID v7) they sort by creation time. Times are unix milliseconds. `usage` and
    // `transcript` are JSON text.
    r"
PRAGMA application_id = 1232234867;

CREATE TABLE sessions (
    session_id      TEXT    NOT NULL PRIMARY KEY,
    caller          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('active', 'rebooted', 'deleted')),
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER NOT NULL,
    turns           INTEGER NOT NULL DEFAULT 0 CHECK (turns >= 0),
    total_cost_usd  REAL    NOT NULL DEFAULT 0,
    cli_total_usd   REAL    NOT NULL DEFAULT 0,
    resumable       INTEGER NOT NULL DEFAULT 0 CHECK (resumable IN (0, 1))
) STRICT;

-- At most one active session per (caller, target); retired ones are kept.
CREATE UNIQUE INDEX sessions_active_pair ON sessions (caller, target) WHERE status = 'active';

CREATE TABLE messages (
    id             TEXT    NOT NULL PRIMARY KEY,
    caller         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    session_id     TEXT,
    mode           TEXT    NOT NULL CHECK (mode IN ('ask', 'tell', 'quick')),
    text           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed',
                                                     'cancelled', 'timed_out', 'interrupted')),
    answer         TEXT,
    is_error       INTEGER NOT NULL DEFAULT 0 CHECK (is_error IN (0, 1)),
    error          TEXT,
    cost_usd       REAL,
    usage          TEXT,
    duration_ms    INTEGER CHECK (duration_ms >= 0),
    created_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    transcript     TEXT    NOT NULL DEFAULT '[]',
    truncated      INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1))
) STRICT;

CREATE INDEX messages_pair ON messages (caller, target, id);
CREATE INDEX messages_state ON messages (state);
CREATE INDEX messages_finished ON messages (finished_at_ms) WHERE finished_at_ms IS NOT NULL;

-- Agent process groups this Iris started and has not seen stop, so that a restarted Iris can
-- stop the leftovers of one that crashed.
CREATE TABLE agents (
    pgid          INTEGER NOT NULL PRIMARY KEY CHECK (pgid > 0),
    agent_key     TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    started_at_ms INTEGER NOT NULL
) STRICT;
",
    // Version 2.
    //
    // The index on `messages.state` is gone: every state change of every message rewrote one
    // of its pages (a fifth of the cost of recording a turn), and only start-up recovery and
    // `iris doctor`'s counts, which read every message once, looked things up by state.
    r"
DROP INDEX messages_state;
",
    // Version 3.
    //
    // Tool-permission decisions (`approvals`): every `can_use_tool` request of a message's
    // turn and how it was decided: by a rule or `grantPermission` at once, or by a person
    // (pending until then: `decision` is NULL). `input` and `suggestions` are JSON text.
    // `approval_rules`: what a person allowed for good (`iris approve --always`) for one pair:
    // a rule in Claude Code's syntax, or the exact tool and input.
    r"
CREATE TABLE approvals (
    id             TEXT    NOT NULL PRIMARY KEY,
    message_id     TEXT,
    caller         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    tool           TEXT    NOT NULL,
    input          TEXT    NOT NULL,
    suggestions    TEXT    NOT NULL DEFAULT '[]',
    created_at_ms  INTEGER NOT NULL,
    decided_at_ms  INTEGER,
    decision       TEXT    CHECK (decision IN ('allow', 'deny', 'expired')),
    decided_by     TEXT    CHECK (decided_by IN ('rule', 'grant', 'person', 'caller', 'timeout',
                                                 'fallback', 'ended', 'restart')),
    who            TEXT,
    reason         TEXT,
    CHECK ((decision IS NULL) = (decided_by IS NULL))
) STRICT;

CREATE INDEX approvals_message ON approvals (message_id);
CREATE INDEX approvals_pending ON approvals (created_at_ms) WHERE decision IS NULL;
CREATE INDEX approvals_decided ON approvals (decided_at_ms) WHERE decided_at_ms IS NOT NULL;

CREATE TABLE approval_rules (
    id            TEXT    NOT NULL PRIMARY KEY,
    caller        TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    tool          TEXT    NOT NULL,
    rule          TEXT,
    input         TEXT,
    approval_id   TEXT,
    created_at_ms INTEGER NOT NULL,
    CHECK ((rule IS NULL) <> (input IS NULL))
) STRICT;

CREATE INDEX approval_rules_pair ON approval_rules (caller, target);
",
    // Version 4.
    //
    // The message whose turn sent a message (an agent calling another team through its
    // agent URL): call chains, shown by `message_status`, and what cycle and depth checks
    // follow while they run.
    r"
ALTER TABLE messages ADD COLUMN parent_id TEXT;
",
    // Version 5.
    //
    // The same tables and rows, with the CHECKs on `mode`, `state` and `status` written as
    // comparisons: SQLite evaluates `x IN (three or more values)` by building a temporary
    // b-tree of the values, and these run at every insert and state change (four times a
    // turn). The tables are rebuilt, as SQLite cannot change a constraint in place.
    r"
CREATE TABLE messages_v5 (
    id             TEXT    NOT NULL PRIMARY KEY,
    caller         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    session_id     TEXT,
    mode           TEXT    NOT NULL CHECK (mode = 'ask' OR mode = 'tell' OR mode = 'quick'),
    text           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state = 'queued' OR state = 'running'
                                           OR state = 'completed' OR state = 'failed'
                                           OR state = 'cancelled' OR state = 'timed_out'
                                           OR state = 'interrupted'),
    answer         TEXT,
    is_error       INTEGER NOT NULL DEFAULT 0 CHECK (is_error IN (0, 1)),
    error          TEXT,
    cost_usd       REAL,
    usage          TEXT,
    duration_ms    INTEGER CHECK (duration_ms >= 0),
    created_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    transcript     TEXT    NOT NULL DEFAULT '[]',
    truncated      INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
    parent_id      TEXT
) STRICT;
INSERT INTO messages_v5 (id, caller, target, session_id, mode, text, state, answer, is_error,
    error, cost_usd, usage, duration_ms, created_at_ms, started_at_ms, finished_at_ms,
    transcript, truncated, parent_id)
SELECT id, caller, target, session_id, mode, text, state, answer, is_error, error, cost_usd,
    usage, duration_ms, created_at_ms, started_at_ms, finished_at_ms, transcript, truncated,
    parent_id
FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v5 RENAME TO messages;
CREATE INDEX messages_pair ON messages (caller, target, id);
CREATE INDEX messages_finished ON messages (finished_at_ms) WHERE finished_at_ms IS NOT NULL;

CREATE TABLE sessions_v5 (
    session_id      TEXT    NOT NULL PRIMARY KEY,
    caller          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status = 'active' OR status = 'rebooted'
                                            OR status = 'deleted'),
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER NOT NULL,
    turns           INTEGER NOT NULL DEFAULT 0 CHECK (turns >= 0),
    total_cost_usd  REAL    NOT NULL DEFAULT 0,
    cli_total_usd   REAL    NOT NULL DEFAULT 0,
    resumable       INTEGER NOT NULL DEFAULT 0 CHECK (resumable IN (0, 1))
) STRICT;
INSERT INTO sessions_v5 (session_id, caller, target, status, created_at_ms, last_used_at_ms,
    turns, total_cost_usd, cli_total_usd, resumable)
SELECT session_id, caller, target, status, created_at_ms, last_used_at_ms, turns,
    total_cost_usd, cli_total_usd, resumable
FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_v5 RENAME TO sessions;
CREATE UNIQUE INDEX sessions_active_pair ON sessions (caller, target) WHERE status = 'active';
",
];

/// The schema version this build writes and the newest it can open.
pub(super) fn current_version() -> i64 {
    // The migration list is a few entries long; it always fits.
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}
