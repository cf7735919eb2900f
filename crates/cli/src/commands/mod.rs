//! One file per command.

pub mod cache;
pub mod complete;
pub mod config;
pub mod eval;
pub mod generate;
pub mod meta;
pub mod model;
pub mod optimize;
pub mod translate;
