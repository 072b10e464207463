//! Support for testing Iris against the real Claude Code CLI, offline: a scriptable fake of
//! the Messages API ([`fake_api`]) that the CLI talks to instead of Anthropic's servers.
//! Used by the end-to-end tests and by the `iris-fake-api` binary; nothing in Iris itself
//! depends on it.

pub mod fake_api;
