//! `serve`: the web demo over HTTP on this machine.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::serve::{self, ServeOptions, WebServer};

#[derive(Args)]
pub struct ServeArgs {
    /// Weights the page loads by default [default: the web directory's model.safetensors].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Port on the host (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on (browsers allow WebGPU on localhost without https).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The web directory with the built bundle [default: web/ of the source tree this binary was
    /// built from].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds a client has to send its request head (the whole exchange gets twice this).
    #[arg(long, default_value_t = serve::DEFAULT_DEADLINE.as_secs_f64(), value_parser = parse_deadline)]
    deadline: f64,
}

/// A deadline in seconds: positive and finite, at most an hour.
fn parse_deadline(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a deadline in (0, 3600] seconds")),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}

pub fn run(a: &ServeArgs) -> Result<()> {
    let opts = ServeOptions {
        dir: a.dir.clone().unwrap_or_else(serve::default_web_dir),
        weights: a.weights.clone(),
        host: a.host.clone(),
        port: a.port,
        deadline: std::time::Duration::from_secs_f64(a.deadline),
    };
    let server = WebServer::bind(&opts)?;
    // 127.0.0.1 is a secure context like localhost, so WebGPU works without https.
    let banner = format!(
        "serving http://{}/\n  page: {}\n  weights: {} (at {})\nCtrl-C stops.\n",
        server.local_addr()?,
        opts.dir.display(),
        server.weights().display(),
        serve::WEIGHTS_URL
    );
    // A closed stdout (a script that read the URL and went on) must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, banner.as_bytes()).and_then(|_| std::io::Write::flush(&mut out));
    drop(out);
    server.run()
}
