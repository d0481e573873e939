//! The dataset cache and checksummed downloads (native only).
//!
//! A file is fetched into `NAME.part` (with `NAME.part.src` recording the URL, so an interrupted
//! download resumes with an HTTP range request only from the same URL), then its SHA-256 is
//! checked (of the decompressed payload for gzipped files, since the gzip bytes differ between
//! mirrors), and only then is it renamed to `NAME`. The final name therefore never holds a
//! partial or unverified file; a `.part` that fails its checksum is deleted.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// Environment variable naming the cache directory.
pub const DATA_DIR_ENV: &str = "ADAMATCH_DATA";

/// One file of a downloadable dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name in the dataset's cache folder.
    pub name: String,
    /// URLs to try in order (canonical first, then mirrors).
    pub urls: Vec<String>,
    /// Lower-case hex SHA-256 of the payload: of the decompressed bytes when `gzip` is set.
    pub sha256: String,
    /// Whether the file is gzipped (the checksum then covers the decompressed payload).
    pub gzip: bool,
}

const MNIST_MIRRORS: &[&str] = &[
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];

/// The files of a downloadable dataset (`mnist` or `svhn`), with URLs and payload checksums.
pub fn dataset_files(dataset: &str) -> Result<Vec<RemoteFile>> {
    let gz = |name: &str, sha: &str| RemoteFile {
        name: name.into(),
        urls: MNIST_MIRRORS.iter().map(|m| format!("{m}{name}")).collect(),
        sha256: sha.into(),
        gzip: true,
    };
    let mat = |name: &str, sha: &str| RemoteFile {
        name: name.into(),
        urls: vec![format!("http://ufldl.stanford.edu/housenumbers/{name}")],
        sha256: sha.into(),
        gzip: false,
    };
    Ok(match dataset {
        "mnist" => vec![
            gz(
                "train-images-idx3-ubyte.gz",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            gz(
                "train-labels-idx1-ubyte.gz",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            gz(
                "t10k-images-idx3-ubyte.gz",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            gz(
                "t10k-labels-idx1-ubyte.gz",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ],
        "svhn" => vec![
            mat(
                "train_32x32.mat",
                "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
            ),
            mat(
                "test_32x32.mat",
                "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
            ),
        ],
        other => {
            bail!("'{other}' cannot be downloaded: the downloadable datasets are mnist and svhn")
        }
    })
}

/// The cache directory: `explicit` if given, else `$ADAMATCH_DATA`, else
/// `<user cache dir>/adamatch-wgpu` (e.g. `~/.cache/adamatch-wgpu`), else `./adamatch-data`.
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .map(|d| d.join("adamatch-wgpu"))
        .unwrap_or_else(|| PathBuf::from("adamatch-data"))
}

/// SHA-256 (lower-case hex) of a file's payload: its bytes, or its decompressed bytes when
/// `gzip` is set (all gzip members). Errors on unreadable files and corrupt gzip data.
pub fn payload_sha256(path: &Path, gzip: bool) -> Result<String> {
    let f = fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut r: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)))
    } else {
        Box::new(io::BufReader::new(f))
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!(
                        "{}: {}",
                        path.display(),
                        if gzip {
                            "corrupt or truncated gzip data"
                        } else {
                            "read error"
                        }
                    )
                })
            }
        };
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// State of one cached file, as `data check` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the right checksum.
    Ok,
    /// Not in the cache (a `.part` of this many bytes may be waiting to be resumed).
    Missing {
        /// Size of a partial download, if any.
        partial: Option<u64>,
    },
    /// Present but wrong: the reason (checksum mismatch or unreadable).
    Bad(String),
}

/// Verifies one cached file against its checksum.
pub fn check_file(dir: &Path, file: &RemoteFile) -> FileStatus {
    let path = dir.join(&file.name);
    if !path.is_file() {
        let partial = fs::metadata(part_path(&path)).ok().map(|m| m.len());
        return FileStatus::Missing { partial };
    }
    match payload_sha256(&path, file.gzip) {
        Ok(h) if h == file.sha256 => FileStatus::Ok,
        Ok(h) => FileStatus::Bad(format!(
            "checksum mismatch: sha256 {}{h}, expected {}",
            if file.gzip { "of the decompressed payload " } else { "" },
            file.sha256
        )),
        Err(e) => FileStatus::Bad(format!("{e:#}")),
    }
}

/// Options for [`download_file`].
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any single read (a stalled server fails after this).
    pub read_timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            progress: true,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What [`download_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Downloaded {
    /// The file was already in the cache with the right checksum.
    AlreadyPresent,
    /// Fetched (and verified) from this URL.
    Fetched(String),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn src_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part.src");
    PathBuf::from(s)
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

fn agent(url: &str, opts: &DownloadOptions) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_recv_response(Some(opts.read_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .user_agent(concat!("adamatch-wgpu/", env!("CARGO_PKG_VERSION")));
    if is_loopback(url) {
        // Never route a loopback address through an environment proxy.
        cfg = cfg.proxy(None);
    }
    cfg.build().new_agent()
}

/// Fetches `url` into `part`, resuming from `part`'s length when `resume` is set and the server
/// honours the range request. Returns when the body has been fully written.
fn fetch(url: &str, part: &Path, resume: bool, opts: &DownloadOptions, label: &str) -> Result<()> {
    let offset = if resume {
        fs::metadata(part).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };
    let agent = agent(url, opts);
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    let resp = req.call().map_err(|e| match e {
        ureq::Error::Io(io) => anyhow!("cannot connect ({io}); are you offline?"),
        ureq::Error::HostNotFound => anyhow!("host not found; are you offline?"),
        ureq::Error::ConnectionFailed => anyhow!("connection failed; are you offline?"),
        ureq::Error::Timeout(t) => anyhow!("timed out ({t})"),
        other => anyhow!("{other}"),
    })?;
    let status = resp.status().as_u16();
    let (append, start) = match status {
        206 if offset > 0 => (true, offset),
        200 => (false, 0),
        416 if offset > 0 => return Ok(()), // the part is already complete
        s => bail!("HTTP status {s}"),
    };
    let total = resp.body().content_length().map(|l| l + start);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .with_context(|| format!("{}: cannot write", part.display()))?;
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar.set_position(start);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut written = start;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                bail!("the transfer broke off after {written} bytes ({e}); run the command again to resume");
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("{}: cannot write", part.display()))?;
        written += n as u64;
        bar.set_position(written);
    }
    bar.finish_and_clear();
    file.sync_all()
        .with_context(|| format!("{}: cannot write", part.display()))?;
    if let Some(t) = total {
        if written < t {
            bail!("the transfer broke off after {written} of {t} bytes; run the command again to resume");
        }
    }
    Ok(())
}

/// Downloads one file into `dir` unless it is already there with the right checksum. Tries
/// each URL in turn; a partial download from an earlier run is resumed from the same URL. On
/// failure the error names the file, each URL with what went wrong, and where to put a copy
/// downloaded by hand.
pub fn download_file(dir: &Path, file: &RemoteFile, opts: &DownloadOptions) -> Result<Downloaded> {
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let dest = dir.join(&file.name);
    if dest.is_file() && check_file(dir, file) == FileStatus::Ok {
        return Ok(Downloaded::AlreadyPresent);
    }
    let part = part_path(&dest);
    let src = src_path(&dest);
    let mut failures = Vec::new();
    for url in &file.urls {
        let resume = part.is_file() && fs::read_to_string(&src).is_ok_and(|s| s.trim() == url);
        if !resume {
            let _ = fs::remove_file(&part);
        }
        fs::write(&src, url).with_context(|| format!("{}: cannot write", src.display()))?;
        if let Err(e) = fetch(url, &part, resume, opts, &file.name) {
            failures.push(format!("{url}: {e:#}"));
            // Keep a non-empty partial file (and its URL) for resuming; drop empty leftovers.
            if fs::metadata(&part).map(|m| m.len()).unwrap_or(0) == 0 {
                let _ = fs::remove_file(&part);
                let _ = fs::remove_file(&src);
            }
            continue;
        }
        match payload_sha256(&part, file.gzip) {
            Ok(h) if h == file.sha256 => {
                fs::rename(&part, &dest)
                    .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
                let _ = fs::remove_file(&src);
                return Ok(Downloaded::Fetched(url.clone()));
            }
            Ok(h) => failures.push(format!(
                "{url}: checksum mismatch (sha256 {}{h}, expected {})",
                if file.gzip { "of the decompressed payload " } else { "" },
                file.sha256
            )),
            Err(e) => failures.push(format!("{url}: {e:#}")),
        }
        // A complete but wrong file cannot be resumed: start over next time.
        let _ = fs::remove_file(&part);
        let _ = fs::remove_file(&src);
    }
    bail!(
        "could not download {}:\n  {}\nDownload it by hand from {} and place it at {}\n\
         (then run `adamatch-wgpu data check` to verify it).",
        file.name,
        failures.join("\n  "),
        file.urls.join(" or "),
        dest.display()
    )
}

/// Downloads every file of `dataset` (`mnist` or `svhn`) into `data_dir/dataset/`, printing one
/// line per file. Stops at the first file that cannot be fetched.
pub fn download_dataset(dataset: &str, data_dir: &Path, opts: &DownloadOptions) -> Result<()> {
    let files = dataset_files(dataset)?;
    let dir = data_dir.join(dataset);
    for f in &files {
        match download_file(&dir, f, opts)? {
            Downloaded::AlreadyPresent => {
                crate::outln!("{}: already present, checksum ok", dir.join(&f.name).display())?
            }
            Downloaded::Fetched(url) => {
                crate::outln!("{}: downloaded from {url}, checksum ok", dir.join(&f.name).display())?
            }
        }
    }
    Ok(())
}
