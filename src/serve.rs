//! `adamatch-wgpu serve`: the web demo (`web/`) over HTTP on this machine, with the user's
//! weights at the URL the page loads by default (`/model.safetensors`).
//!
//! HTTP/1 from hyper on a small tokio runtime, one connection per request (`Connection: close`).
//! It binds to 127.0.0.1 by default (browsers allow WebGPU on `localhost` without https) and is
//! safe to leave running: it serves only regular files whose canonical path lies inside the
//! served folder (no symbolic link out of it), gives each connection a deadline for its request
//! head and for the whole exchange, holds at most [`MAX_CONNECTIONS`] at once, logs failed
//! accepts at most once a second with a count, and cuts logged paths to [`LOGGED_PATH_BYTES`].

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use hyper::{Method, Request, Response, StatusCode};

use crate::weights;

/// Connections served at once; further ones wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Bytes of a request path written to the log at most.
pub const LOGGED_PATH_BYTES: usize = 200;
/// Default deadline for a connection's request head, and twice it for the whole exchange.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The URL path the page loads its default weights from.
pub const WEIGHTS_URL: &str = "/model.safetensors";

/// Bytes read from a file per body frame: memory per connection stays this, whatever the file.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// What the page may load: its own scripts, wasm and styles; images from itself, `data:` and
/// `blob:` URLs; no plugins, no framing by other sites, no forms sent anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    /// Deadline for a request head; the whole exchange gets twice this.
    pub deadline: Duration,
}

/// A bound server; [`WebServer::run`] answers requests until the process ends.
pub struct WebServer {
    listener: TcpListener,
    site: Arc<Site>,
    deadline: Duration,
}

struct Site {
    /// Canonical, so that a file's canonical path can be checked to lie inside it.
    dir: PathBuf,
    weights: PathBuf,
    /// The address bound: requests must name it, a loopback address or `localhost` as their
    /// `Host` (a DNS name that resolves here, as in DNS rebinding, is refused).
    bound: SocketAddr,
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
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let bound = listener.local_addr()?;
        Ok(WebServer {
            listener,
            site: Arc::new(Site { dir, weights, bound }),
            deadline: opts.deadline,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The weights file served at [`WEIGHTS_URL`].
    pub fn weights(&self) -> &Path {
        &self.site.weights
    }

    /// Answers requests until the process ends.
    pub fn run(self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the server's runtime")?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> Result<()> {
        use hyper::server::conn::http1;
        use hyper_util::rt::{TokioIo, TokioTimer};
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut accept_errors = RateLimitedLog::default();
        loop {
            let slot = Arc::clone(&slots).acquire_owned().await?;
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: report it at most once a second and
                    // give the others a moment to close.
                    accept_errors.note(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let site = Arc::clone(&self.site);
            let deadline = self.deadline;
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let site = Arc::clone(&site);
                    async move { Ok::<_, Infallible>(answer(&site, &req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(deadline)
                    .keep_alive(false)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), service);
                // A deadline for the whole exchange too: a client that reads the answer one byte
                // at a time does not hold its slot for ever.
                let _ = tokio::time::timeout(2 * deadline, conn).await;
            });
        }
    }
}

/// An error line at most once a second, with the count of the ones not written.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn note(&mut self, line: &str) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        match self.suppressed {
            0 => crate::errln!("serve: {line}"),
            n => crate::errln!("serve: {line} ({n} more like it in the last second)"),
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// A request path for the log: at most [`LOGGED_PATH_BYTES`] bytes, cut on a character boundary.
fn for_log(path: &str) -> String {
    if path.len() <= LOGGED_PATH_BYTES {
        return path.to_string();
    }
    let mut end = LOGGED_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &path[..end], path.len())
}

/// The body of an answer: a small buffer or a file streamed in [`STREAM_CHUNK`] frames.
pub type Body = BoxBody<Bytes, std::io::Error>;

async fn answer<B>(site: &Site, req: &Request<B>) -> Response<Body> {
    let head_only = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head_only {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"only GET and HEAD\n".to_vec(),
            false,
        );
        r.headers_mut()
            .insert("Allow", "GET, HEAD".parse().expect("a header value"));
        return r;
    }
    if !host_allowed(site, req.headers().get("host")) {
        return respond(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            b"unknown Host: open the page through localhost or the address serve printed\n".to_vec(),
            head_only,
        );
    }
    let target = req.uri().path();
    let not_found = || {
        crate::errln!("serve: 404 {}", for_log(target));
        respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec(), head_only)
    };
    let server_error = |e: std::io::Error| {
        crate::errln!("serve: 500 {}: {e}", for_log(target));
        respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            b"could not read the file\n".to_vec(),
            head_only,
        )
    };
    let path = match resolve(site, target) {
        Ok(Some(path)) => path,
        Ok(None) => return not_found(),
        Err(e) => return server_error(e),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
        Err(e) => return server_error(e),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return server_error(e),
    };
    let body = if head_only { empty() } else { file_body(file, len) };
    with_headers(Response::builder().status(StatusCode::OK), content_type(&path), len)
        .body(body)
        .expect("a response of valid parts")
}

/// Whether a request's `Host` names this server: `localhost`, a loopback address, or the
/// address it is bound to (any IP literal when bound to all interfaces), with or without the
/// port. Refusing other names stops DNS rebinding: a site whose name resolves to 127.0.0.1
/// cannot read the page or the user's weights.
fn host_allowed(site: &Site, host: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: only a local tool sends that.
        return host.is_none();
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == site.bound.ip() || site.bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// The file for a request path: `/` is index.html, [`WEIGHTS_URL`] the weights; anything else a
/// regular file whose canonical path lies inside the directory and no part of whose path is
/// hidden (`.git`, `.env`). Ok(None) for paths leaving it (`..`, a symbolic link out), hidden,
/// not decodable, missing, or not regular files; an error for a file that exists but cannot be
/// looked at (out of file descriptors, permissions), which is the server's failure, not a 404.
fn resolve(site: &Site, path: &str) -> std::io::Result<Option<PathBuf>> {
    let Some(path) = percent_decode(path) else {
        return Ok(None);
    };
    if path == WEIGHTS_URL {
        return Ok(Some(site.weights.clone()));
    }
    let Some(rel) = path.strip_prefix('/') else {
        return Ok(None);
    };
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let rel = Path::new(rel);
    let visible = |c: Component| matches!(c, Component::Normal(n) if !n.to_string_lossy().starts_with('.'));
    if !rel.components().all(visible) {
        return Ok(None);
    }
    let full = match site.dir.join(rel).canonicalize() {
        Ok(p) => p,
        // Missing, or a name no file can have (too long): the request's fault, a 404.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory | std::io::ErrorKind::InvalidFilename
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    if !full.starts_with(&site.dir) {
        return Ok(None);
    }
    // A link inside the folder to a hidden file is hidden too.
    let inside = full.strip_prefix(&site.dir).unwrap_or(&full);
    if !inside.components().all(visible) {
        return Ok(None);
    }
    Ok(full.metadata()?.is_file().then_some(full))
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

fn with_headers(b: hyper::http::response::Builder, content_type: &str, len: u64) -> hyper::http::response::Builder {
    b.header("Content-Type", content_type)
        .header("Content-Length", len)
        // no-store: a rebuilt bundle or retrained weights show on the next reload.
        .header("Cache-Control", "no-store")
        .header("X-Content-Type-Options", "nosniff")
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cross-Origin-Opener-Policy", "same-origin")
        .header("Cross-Origin-Resource-Policy", "same-origin")
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>, head_only: bool) -> Response<Body> {
    let len = body.len() as u64;
    let body = if head_only {
        empty()
    } else {
        Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed()
    };
    with_headers(Response::builder().status(status), content_type, len)
        .body(body)
        .expect("a response of valid parts")
}

/// A file as a body of [`STREAM_CHUNK`]-byte frames, read as the client takes them, ending after
/// `len` bytes (the length the answer declared, even if the file grows meanwhile).
fn file_body(file: tokio::fs::File, len: u64) -> Body {
    FileBody {
        file,
        left: len,
        buf: vec![0; STREAM_CHUNK],
    }
    .boxed()
}

struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Vec<u8>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        use tokio::io::AsyncRead;
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = (this.left as usize).min(this.buf.len());
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match std::pin::Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    // The file shrank under us: the declared length cannot be kept.
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    ))));
                }
                this.left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&this.buf[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}
