//! The `pagewire` command: parses the command line and runs the command (see [`cli`]).

use std::process::ExitCode;

use clap::Parser;

use cli::{disk, live, replay, simulate, trace, tunnel, Cli, Command};

mod cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Demo(a) => live::run_demo(a),
        Command::Send(a) => live::run_send(a),
        Command::Receive(a) => live::run_receive(a),
        Command::Keygen(a) => live::run_keygen(a),
        Command::Coordinator(a) => live::run_coordinator(a),
        Command::Replay(a) => replay::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Tunnel(a) => tunnel::run(a),
        Command::Disk(a) => disk::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
