//! The process entry point, shared by the `aviary` binary and the test-node binary
//! the end-to-end tests spawn as real processes.

use crate::cli::{self, Cli, Command};
use crate::config::{Config, LogFormat};
use clap::Parser;
use std::process::ExitCode;

/// The whole `aviary` command: parse the arguments, load the configuration, run.
pub fn main() -> ExitCode {
    let args = Cli::parse();
    let config = match cli::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command {
        Command::Serve => {
            init_logging(&config);
            crate::server::run(config)
        }
        Command::User(cmd) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cli::user(&config, cmd)),
            Err(e) => Err(e.into()),
        },
        Command::Config(cmd) => {
            cli::config_cmd(&config, cmd);
            Ok(())
        }
        Command::Store(cmd) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cli::store(&config, cmd)),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
