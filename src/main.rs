//! The `cxpulse` command line: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cxpulse",
    version,
    about = "Live customer-experience and acquisition metrics from Kafka events"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine over NDJSON files (plain or gzip) and print the final series.
    Replay(cxpulse::replay::ReplayArgs),
    /// Generate realistic exchange traffic as NDJSON (or produce it to Kafka).
    Gen(cxpulse::r#gen::GenArgs),
    /// The live service: consume Kafka, serve /metrics, publish to the output topic.
    Run(cxpulse::run::RunArgs),
    /// One-command demo: embedded broker, live generated traffic, /metrics served.
    Demo(cxpulse::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Replay(a) => cxpulse::replay::main(a),
        Cmd::Gen(a) => cxpulse::r#gen::main(a),
        Cmd::Run(a) => cxpulse::run::main(a),
        Cmd::Demo(a) => cxpulse::demo::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cxpulse: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
