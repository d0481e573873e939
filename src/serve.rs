//! `adamatch-wgpu serve`: the web demo (`web/`) over HTTP on this machine, with the user's
//! weights at the URL the page loads by default (`/model.safetensors`).
//!
//! A static GET server on `std::net` (one thread per connection, `Connection: close`): the page
//! needs nothing more, and a dependency would bring far more than that. It binds to 127.0.0.1
//! by default; browsers allow WebGPU on `localhost` without https.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::weights;

/// The URL path the page loads its default weights from.
pub const WEIGHTS_URL: &str = "/model.safetensors";

/// The command that builds the wasm bundle, named in errors.
pub const BUILD_COMMAND: &str = "scripts/build-web.sh";

/// Files of a built bundle (`wasm-bindgen --target web` output) that `serve` checks for.
pub const BUNDLE_FILES: &[&str] = &["pkg/adamatch_wgpu.js", "pkg/adamatch_wgpu_bg.wasm"];

/// `web/` of the source tree this binary was built from.
pub fn default_web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// What to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The web directory (index.html, app.js, pkg/, samples/).
    pub dir: PathBuf,
    /// Served at [`WEIGHTS_URL`]; None serves `dir/model.safetensors`.
    pub weights: Option<PathBuf>,
    /// Address to bind, e.g. `127.0.0.1`.
    pub host: String,
    /// 0 picks a free port (printed).
    pub port: u16,
}

/// A bound server; [`WebServer::run`] answers requests until the process ends.
pub struct WebServer {
    listener: TcpListener,
    site: Arc<Site>,
}

struct Site {
    dir: PathBuf,
    weights: PathBuf,
}

impl WebServer {
    /// Checks the directory, the bundle and the weights, then binds.
    pub fn bind(opts: &ServeOptions) -> Result<WebServer> {
        let dir = &opts.dir;
        if !dir.join("index.html").is_file() {
            bail!(
                "{} is not the web demo directory (no index.html in it); pass --dir PATH/TO/adamatch-wgpu/web",
                dir.display()
            );
        }
        for f in BUNDLE_FILES {
            if !dir.join(f).is_file() {
                bail!(
                    "the web bundle is not built ({} is missing). Build it with `{BUILD_COMMAND}` in the \
                     adamatch-wgpu source tree (needs the wasm32-unknown-unknown target and wasm-bindgen-cli; \
                     the script installs both)",
                    dir.join(f).display()
                );
            }
        }
        let weights = match &opts.weights {
            Some(w) => {
                // Fail here, with the file's name, rather than later in the browser.
                weights::load(w)?;
                w.clone()
            }
            None => {
                let w = dir.join("model.safetensors");
                if !w.is_file() {
                    bail!(
                        "no default weights at {}: pass --weights W.safetensors (e.g. runs/NAME/model.safetensors)",
                        w.display()
                    );
                }
                w
            }
        };
        let listener = TcpListener::bind((opts.host.as_str(), opts.port))
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        Ok(WebServer {
            listener,
            site: Arc::new(Site {
                dir: dir.clone(),
                weights,
            }),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The weights file served at [`WEIGHTS_URL`].
    pub fn weights(&self) -> &Path {
        &self.site.weights
    }

    /// Answers requests, one thread per connection, until the process ends.
    pub fn run(self) -> Result<()> {
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("serve: accept failed: {e}");
                    continue;
                }
            };
            let site = Arc::clone(&self.site);
            std::thread::spawn(move || {
                if let Err(e) = handle(&site, stream) {
                    eprintln!("serve: {e:#}");
                }
            });
        }
        Ok(())
    }
}

/// A response status with its reason phrase.
type Status = (u16, &'static str);

fn handle(site: &Site, stream: TcpStream) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // A connection opened speculatively and closed unused.
    }
    // Skip the headers; nothing here depends on them.
    let mut header_bytes = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if header_bytes > 64 * 1024 {
            return respond(
                stream,
                (431, "Request Header Fields Too Large"),
                "text/plain",
                b"",
                true,
            );
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            stream,
            (405, "Method Not Allowed"),
            "text/plain",
            b"only GET and HEAD\n",
            false,
        );
    }
    let Some(path) = resolve(site, target) else {
        eprintln!("serve: 404 {target}");
        return respond(stream, (404, "Not Found"), "text/plain", b"not found\n", head_only);
    };
    match std::fs::read(&path) {
        Ok(body) => respond(stream, (200, "OK"), content_type(&path), &body, head_only),
        Err(_) => {
            eprintln!("serve: 404 {target}");
            respond(stream, (404, "Not Found"), "text/plain", b"not found\n", head_only)
        }
    }
}

/// The file for a request target: `/` is index.html, [`WEIGHTS_URL`] the weights; anything
/// else a file under the directory. None for paths leaving it (`..`) or not decodable.
fn resolve(site: &Site, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = percent_decode(path)?;
    if path == WEIGHTS_URL {
        return Some(site.weights.clone());
    }
    let rel = path.strip_prefix('/')?;
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let rel = Path::new(rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = site.dir.join(rel);
    full.is_file().then_some(full)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0') && !s.contains('\\')).then_some(s)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        // ES modules need a JavaScript type; instantiateStreaming needs application/wasm.
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn respond(mut stream: TcpStream, status: Status, content_type: &str, body: &[u8], head_only: bool) -> Result<()> {
    // no-store: a rebuilt bundle or retrained weights show on the next reload.
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        status.0,
        status.1,
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    Ok(())
}
