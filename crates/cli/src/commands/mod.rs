//! One file per command.

pub mod agent;
pub mod cache;
pub mod check_serve;
pub mod complete;
pub mod config;
pub mod eval;
pub mod generate;
pub mod library;
pub mod meta;
pub mod model;
pub mod optimize;
pub mod prompts;
pub mod review;
pub mod serve;
pub mod translate;
