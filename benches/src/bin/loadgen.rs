//! `loadgen`: an XMPP load generator for Aviary, Prosody and ejabberd alike. See
//! `benches/README.md` for the flags, the scenarios and how to read the output; the
//! code lives in `aviary_benches::loadgen`.

use anyhow::Context as _;
use aviary_benches::loadgen::{self, args::Args};
use clap::Parser;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.validate()?;
    loadgen::raise_fd_limit(&args)?;
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let json_path = args.json.clone();
    let report = runtime.block_on(loadgen::run(args, threads))?;
    // Connection tasks are finished or aborted; do not wait for stragglers.
    runtime.shutdown_background();
    let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
    match json_path {
        Some(path) => std::fs::write(&path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{json}"),
    }
    eprintln!("{}", report.summary());
    Ok(())
}
