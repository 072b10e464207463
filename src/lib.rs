//! Iris: a hub that lets Claude Code agents of different projects ask and tell each other.

pub mod config;
