//! The `adamatch-wgpu` command line ([`adamatch_wgpu::cli`] holds the commands).

use std::process::ExitCode;

use clap::Parser;

use adamatch_wgpu::cli::{run, Cli};
use adamatch_wgpu::console;

fn main() -> ExitCode {
    let code = match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head -1`: the reader has what it wanted.
        Err(e) if console::is_closed_output(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // File and class names inside the message may hold control characters.
            let text = format!("{e:#}");
            let lines: Vec<String> = text.split('\n').map(|l| console::printable(l).into_owned()).collect();
            adamatch_wgpu::errln!("error: {}", lines.join("\n"));
            ExitCode::FAILURE
        }
    };
    if console::stderr_failed() {
        return ExitCode::FAILURE;
    }
    code
}
