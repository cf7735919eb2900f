//! The `metaprompt` binary. Clap types live in [`args`], one file per command under
//! [`commands`]; [`context`] turns global flags and config into the provider hub. Library crates
//! return typed errors; this binary wraps them with `anyhow` and prints the whole cause chain.

mod args;
mod commands;
mod context;
mod format;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Complete(args) => commands::complete::run(&cli.global, args).await,
        Command::Cache(cmd) => commands::cache::run(&cli.global, cmd).await,
        Command::Config(cmd) => commands::config::run(&cli.global, cmd).await,
        Command::Model(cmd) => commands::model::run(&cli.global, cmd).await,
        Command::Eval(args) => commands::eval::run(&cli.global, args).await,
        Command::Compare(args) => commands::eval::compare(&cli.global, args).await,
        Command::Generate(args) => commands::generate::run(&cli.global, args).await,
        Command::Translate(args) => commands::translate::run(&cli.global, args).await,
        Command::Optimize(args) => commands::optimize::run(&cli.global, *args).await,
        Command::MetaPrompts(cmd) => commands::meta::run(cmd),
        Command::Prompts(cmd) => commands::prompts::run(&cli.global, cmd).await,
        Command::Review(cmd) => commands::review::run(&cli.global, cmd).await,
        Command::Serve(args) => commands::serve::run(&cli.global, args).await,
        Command::Tokens(cmd) => commands::serve::tokens(&cli.global, cmd).await,
        Command::Agent(args) => commands::agent::run(&cli.global, args).await,
        Command::CheckServe(args) => commands::check_serve::run(&cli.global, args).await,
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("METAPROMPT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
