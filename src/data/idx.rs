//! MNIST IDX files: parsing (raw or gzipped), conversion to 32x32x3, and a writer for tests.
//!
//! Format: a big-endian header `00 00 TT ND` (TT = element type, 0x08 for unsigned bytes; ND =
//! number of dimensions), then ND big-endian u32 sizes, then the elements in row-major order.
//! Images are `0x00000803` (N, rows, cols), labels `0x00000801` (N).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::image::{pad_center, Resizer};
use super::{Dataset, Label, Preprocess, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES};

/// Largest decompressed IDX payload accepted (guards against gzip bombs; MNIST train is 47 MB).
pub const MAX_IDX_BYTES: u64 = 2 << 30;

/// A parsed IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` equals the product of `dims`.
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed). Only the unsigned-byte element type (0x08) is
/// accepted; the payload must be exactly as long as the header says. Never panics.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        bail!("too short for an IDX header ({} bytes)", bytes.len());
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!(
            "wrong magic {:02x}{:02x}{:02x}{:02x}: an IDX file starts with two zero bytes",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3]
        );
    }
    let (ty, nd) = (bytes[2], bytes[3] as usize);
    if ty != 0x08 {
        bail!("IDX element type 0x{ty:02x} is not supported (only 0x08, unsigned bytes)");
    }
    if nd == 0 {
        bail!("IDX header has zero dimensions");
    }
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        bail!(
            "truncated IDX header: {nd} dimensions need {header} bytes, file has {}",
            bytes.len()
        );
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .with_context(|| format!("IDX dimensions {dims:?} overflow"))?;
    let payload = bytes.len() - header;
    if payload < expected {
        bail!("truncated IDX data: dimensions {dims:?} need {expected} bytes, found {payload}");
    }
    if payload > expected {
        bail!(
            "IDX file has {} bytes after the data (dimensions {dims:?})",
            payload - expected
        );
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes unsigned-byte data as an IDX file (uncompressed). `data.len()` must equal the product
/// of `dims` (panics otherwise). Used by tests and tools to make fixtures.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    assert!(!dims.is_empty() && dims.len() < 256, "encode_idx: dims");
    assert_eq!(dims.iter().product::<usize>(), data.len(), "encode_idx: length");
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Returns the decompressed bytes of a file that may be gzipped (detected by the gzip magic
/// `1f 8b`, not by the name), with at most [`MAX_IDX_BYTES`] accepted.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    maybe_gunzip(&raw).with_context(|| format!("{}", path.display()))
}

/// Decompresses gzip data (all members) if `bytes` starts with the gzip magic, else returns a
/// copy. Errors on corrupt or truncated gzip data.
pub fn maybe_gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .context("corrupt or truncated gzip data")?;
        if out.len() as u64 > MAX_IDX_BYTES {
            bail!("gzip payload larger than {MAX_IDX_BYTES} bytes");
        }
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Reads an IDX file (raw or gzipped); errors name the file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes).with_context(|| format!("{}", path.display()))
}

/// Converts an IDX image array (N, rows, cols) of gray bytes to 32x32x3 NHWC. `Pad` centres
/// images up to 32x32 with zero padding (2 px for MNIST); `Resize` uses the Pillow-compatible
/// bilinear resize keeping the aspect ratio. Gray is repeated to 3 channels.
pub fn images_to_rgb32(arr: &IdxArray, preprocess: Preprocess) -> Result<Vec<u8>> {
    let &[n, h, w] = arr.dims.as_slice() else {
        bail!(
            "an image IDX file has 3 dimensions (count, rows, cols), this one has {:?}",
            arr.dims
        );
    };
    if h == 0 || w == 0 {
        bail!("images of size {h}x{w}");
    }
    if preprocess == Preprocess::Pad && (h > IMAGE_SIZE || w > IMAGE_SIZE) {
        bail!("{h}x{w} images are larger than 32x32: use the resize preprocessing");
    }
    let mut out = vec![0u8; n * IMAGE_BYTES];
    let (nw, nh) = super::image::fitted_size(w, h, IMAGE_SIZE);
    let resizer = Resizer::new(w, h, nw, nh, 1);
    // Convert in parallel, one contiguous chunk of images per core.
    let per = n.div_ceil(super::worker_count(n, 1024)).max(1);
    super::par_chunks_mut(&mut out, per * IMAGE_BYTES, |c, dst| {
        let src = &arr.data[c * per * h * w..];
        let mut tmp = vec![0u8; nw * nh];
        let mut scratch = Vec::new();
        for (src, dst) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(IMAGE_BYTES)) {
            match preprocess {
                Preprocess::Pad => pad_center(src, w, h, 1, dst),
                Preprocess::Resize => {
                    resizer.resize_with_scratch(src, &mut tmp, &mut scratch);
                    pad_center(&tmp, nw, nh, 1, dst);
                }
            }
        }
    });
    Ok(out)
}

/// Checks an IDX label array: one dimension, every value in 0..=9.
pub fn check_labels(arr: &IdxArray) -> Result<()> {
    if arr.dims.len() != 1 {
        bail!("a label IDX file has 1 dimension, this one has {:?}", arr.dims);
    }
    if let Some((i, &v)) = arr.data.iter().enumerate().find(|(_, &v)| v as usize >= NUM_CLASSES) {
        bail!("label {v} at index {i} is out of range 0..=9");
    }
    Ok(())
}

/// Loads an MNIST-style pair of IDX files (labels optional) as a [`Dataset`]. Errors name the
/// file and the problem (bad gzip, wrong magic or dimensions, label out of range, counts that
/// differ between the two files).
pub fn load_idx(images: &Path, labels: Option<&Path>, preprocess: Preprocess) -> Result<Dataset> {
    let arr = read_idx(images)?;
    let px = images_to_rgb32(&arr, preprocess).with_context(|| format!("{}", images.display()))?;
    let labels = match labels {
        None => None,
        Some(lp) => {
            let l = read_idx(lp)?;
            check_labels(&l).with_context(|| format!("{}", lp.display()))?;
            if l.dims[0] != arr.dims[0] {
                bail!(
                    "{} has {} labels but {} has {} images",
                    lp.display(),
                    l.dims[0],
                    images.display(),
                    arr.dims[0]
                );
            }
            Some(l.data.iter().map(|&v| v as Label).collect())
        }
    };
    Dataset::new(px, labels, images.display().to_string())
}
