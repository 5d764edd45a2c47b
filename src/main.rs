//! The `pushbench` binary: build the runtime, parse, run, print the error.

use std::process::ExitCode;

use clap::Parser;
use pushbench::cli::Cli;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The embedded MQTT broker logs every client that hangs up as an error:
                // routine here, so it stays quiet unless RUST_LOG asks.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Every pushbench process may hold many sockets (a server, a load worker, `run` and its
    // link emulator): each runs at its open-file hard limit, the one budget planning reads.
    pushbench::protocol::open_files::raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
