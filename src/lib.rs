//! Iris: a hub that lets Claude Code agents of different projects ask and tell each other.

pub mod agent;
pub mod config;
pub mod console;
pub mod guard;
pub mod pool;
pub mod process;
