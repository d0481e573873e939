//! Downloads against a local HTTP server (std TcpListener on 127.0.0.1 in a thread): success,
//! checksum mismatch, a server closing mid-file (then resuming), mirror fallback, no server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use adamatch_wgpu::data::download::{
    check_file, download_file, payload_sha256, DownloadOptions, Downloaded, FileStatus, RemoteFile,
};
use sha2::{Digest, Sha256};

use crate::gzip;

/// How the server answers one connection.
#[derive(Clone)]
enum Reply {
    /// 200 with the whole body (ignores Range).
    Full(Vec<u8>),
    /// 200 announcing the whole length, but only the first `n` bytes are sent before closing.
    CloseAfter(Vec<u8>, usize),
    /// Honours `Range: bytes=N-` with 206, else 200.
    Ranged(Vec<u8>),
}

/// Serves `replies` to successive connections on 127.0.0.1, then stops (also after 10 s
/// without a connection). Returns the base URL and a channel of the request heads received.
fn serve(replies: Vec<Reply>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for reply in replies {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let range_start = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(String::from))
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            let _ = tx.send(head);
            let (status, body, announced) = match &reply {
                Reply::Full(b) => ("200 OK", b.as_slice(), b.len()),
                Reply::CloseAfter(b, n) => ("200 OK", &b[..*n], b.len()),
                Reply::Ranged(b) => match range_start {
                    Some(s) if s < b.len() => ("206 Partial Content", &b[s..], b.len() - s),
                    _ => ("200 OK", b.as_slice(), b.len()),
                },
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(body);
            let _ = stream.flush();
        }
    });
    (url, rx)
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        progress: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
    }
}

fn remote(name: &str, urls: Vec<String>, payload: &[u8], gzip: bool) -> RemoteFile {
    RemoteFile {
        name: name.into(),
        urls,
        sha256: sha_hex(payload),
        gzip,
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A closed port: bind, read the port, drop the listener.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[test]
fn success_verifies_the_decompressed_payload_and_repeats_are_noops() {
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let gz = gzip(&payload);
    let (url, rx) = serve(vec![Reply::Full(gz.clone())]);
    let f = remote("file.gz", vec![format!("{url}/file.gz")], &payload, true);
    let r = download_file(dir.path(), &f, &opts()).unwrap();
    assert_eq!(r, Downloaded::Fetched(format!("{url}/file.gz")));
    assert!(rx.recv().unwrap().starts_with("GET /file.gz HTTP/1.1"));
    assert_eq!(std::fs::read(dir.path().join("file.gz")).unwrap(), gz);
    assert_eq!(leftovers(dir.path()), vec!["file.gz"]);
    assert_eq!(check_file(dir.path(), &f), FileStatus::Ok);
    assert_eq!(payload_sha256(&dir.path().join("file.gz"), true).unwrap(), f.sha256);
    // Repeating needs no server.
    let again = RemoteFile {
        urls: vec![dead_url()],
        ..f
    };
    assert_eq!(
        download_file(dir.path(), &again, &opts()).unwrap(),
        Downloaded::AlreadyPresent
    );
}

#[test]
fn checksum_mismatch_leaves_nothing_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _rx) = serve(vec![Reply::Full(b"not what we want".to_vec())]);
    let f = remote("data.mat", vec![format!("{url}/data.mat")], b"the real payload", false);
    let msg = format!("{:#}", download_file(dir.path(), &f, &opts()).unwrap_err());
    assert!(msg.contains("data.mat"), "{msg}");
    assert!(msg.contains(&format!("{url}/data.mat")), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("data.mat").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("place it at"), "{msg}");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    assert_eq!(check_file(dir.path(), &f), FileStatus::Missing { partial: None });
    // A wrong file already in the cache is reported by `check`.
    std::fs::write(dir.path().join("data.mat"), b"wrong").unwrap();
    assert!(matches!(check_file(dir.path(), &f), FileStatus::Bad(m) if m.contains("checksum mismatch")));
}

#[test]
fn server_closing_mid_file_keeps_only_a_part_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let half = 123_457;
    let (url, rx) = serve(vec![
        Reply::CloseAfter(payload.clone(), half),
        Reply::Ranged(payload.clone()),
    ]);
    let f = remote("big.bin", vec![format!("{url}/big.bin")], &payload, false);
    let msg = format!("{:#}", download_file(dir.path(), &f, &opts()).unwrap_err());
    assert!(msg.contains("big.bin") && msg.contains("broke off"), "{msg}");
    assert!(
        !dir.path().join("big.bin").exists(),
        "no half file under the final name"
    );
    let part = dir.path().join("big.bin.part");
    let got = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(got <= half, "part has {got} bytes");
    assert_eq!(
        check_file(dir.path(), &f),
        FileStatus::Missing {
            partial: Some(got as u64)
        }
    );
    // Second run: resumes with a range request and completes.
    let r = download_file(dir.path(), &f, &opts()).unwrap();
    assert!(matches!(r, Downloaded::Fetched(_)));
    let _first = rx.recv().unwrap();
    let second = rx.recv().unwrap().to_ascii_lowercase();
    assert!(got > 0, "the first transfer wrote nothing before breaking off");
    assert!(second.contains(&format!("range: bytes={got}-")), "{second}");
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), payload);
    assert_eq!(leftovers(dir.path()), vec!["big.bin"]);
}

#[test]
fn mirror_fallback_and_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let payload = b"mirror payload".to_vec();
    let (url, _rx) = serve(vec![Reply::Full(payload.clone())]);
    let dead = dead_url();
    let f = remote(
        "m.bin",
        vec![format!("{dead}/m.bin"), format!("{url}/m.bin")],
        &payload,
        false,
    );
    assert_eq!(
        download_file(dir.path(), &f, &opts()).unwrap(),
        Downloaded::Fetched(format!("{url}/m.bin"))
    );

    let f = remote("offline.gz", vec![format!("{dead}/offline.gz")], b"x", true);
    let msg = format!("{:#}", download_file(dir.path(), &f, &opts()).unwrap_err());
    assert!(msg.contains("offline.gz"), "{msg}");
    assert!(msg.contains(&format!("{dead}/offline.gz")), "{msg}");
    assert!(msg.contains("offline?"), "{msg}");
    assert!(
        msg.contains(&dir.path().join("offline.gz").display().to_string()),
        "{msg}"
    );
    assert_eq!(
        leftovers(dir.path()),
        vec!["m.bin"],
        "no partial files after a failed connect"
    );
}

#[test]
fn dataset_table_is_complete() {
    use adamatch_wgpu::data::download::dataset_files;
    let m = dataset_files("mnist").unwrap();
    assert_eq!(m.len(), 4);
    assert!(m.iter().all(|f| f.gzip && f.urls.len() >= 2 && f.sha256.len() == 64));
    let s = dataset_files("svhn").unwrap();
    assert_eq!(s.len(), 2);
    assert!(dataset_files("cifar").is_err());
    // The shared MNIST copy (gzip bytes differ from the mirrors) verifies by payload.
    if let Some(dir) = crate::shared_mnist_dir() {
        for f in m.iter().filter(|f| f.name.starts_with("t10k")) {
            assert_eq!(check_file(&dir, f), FileStatus::Ok, "{}", f.name);
        }
    } else {
        println!("SKIPPED shared MNIST checksum check: shared/data/mnist-t10k not found");
    }
}

#[test]
fn resume_against_a_server_without_range_support_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let (url, _rx) = serve(vec![
        Reply::CloseAfter(payload.clone(), 40_000),
        Reply::Full(payload.clone()),
    ]);
    let f = remote("r.bin", vec![format!("{url}/r.bin")], &payload, false);
    assert!(download_file(dir.path(), &f, &opts()).is_err());
    download_file(dir.path(), &f, &opts()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("r.bin")).unwrap(), payload);
    assert_eq!(leftovers(dir.path()), vec!["r.bin"]);
}
