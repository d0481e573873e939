//! The `adamatch-wgpu` command line ([`adamatch_wgpu::cli`] holds the commands).

use std::process::ExitCode;

use clap::Parser;

use adamatch_wgpu::cli::{run, Cli};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
