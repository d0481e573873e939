//! A minimal streaming reader for MATLAB level-5 MAT-files, enough for the SVHN cropped-digit
//! files (`X`: uint8 32x32x3xN, `y`: Nx1 double with 10 meaning 0).
//!
//! Why not the `matfile` crate: it reads the whole file into memory and decompresses each variable
//! into a second buffer before copying it element by element (three copies of SVHN train's
//! 225 MB), it prints to stdout/stderr on unsupported input, and its dimension product is an
//! unchecked `i32` product that overflows on crafted headers. This reader streams: zlib-compressed
//! variables are inflated on the fly and `X` is transposed image by image straight into the
//! NHWC output, so the peak memory is the output itself; every size from the file is checked
//! before it is used, and the allocation a header can request is bounded by the file's size.
//!
//! Layout (MATLAB "MAT-File Format", level 5): a 128-byte header (text, subsystem offset,
//! version 0x0100, endian indicator `IM`), then data elements, each an 8-byte tag (u32 type, u32
//! byte count) and data padded to 8 bytes, or a "small" element packing type, count (<= 4) and
//! data in 8 bytes. Variables are `miMATRIX` (14) elements, or `miCOMPRESSED` (15) elements
//! holding a zlib stream of one `miMATRIX`. A numeric matrix holds, in order: array flags
//! (`miUINT32` x2, class in the low byte), dimensions (`miINT32`), name (`miINT8`), real part
//! (any numeric storage type, e.g. a double array with integer values stored as `miUINT8`).

use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{Dataset, IMAGE_BYTES, IMAGE_SIZE};

/// MAT data types (`mi*`).
pub mod mi {
    /// `miINT8` (1).
    pub const INT8: u32 = 1;
    /// `miUINT8` (2).
    pub const UINT8: u32 = 2;
    /// `miINT16` (3).
    pub const INT16: u32 = 3;
    /// `miUINT16` (4).
    pub const UINT16: u32 = 4;
    /// `miINT32` (5).
    pub const INT32: u32 = 5;
    /// `miUINT32` (6).
    pub const UINT32: u32 = 6;
    /// `miSINGLE` (7).
    pub const SINGLE: u32 = 7;
    /// `miDOUBLE` (9).
    pub const DOUBLE: u32 = 9;
    /// `miINT64` (12).
    pub const INT64: u32 = 12;
    /// `miUINT64` (13).
    pub const UINT64: u32 = 13;
    /// `miMATRIX` (14).
    pub const MATRIX: u32 = 14;
    /// `miCOMPRESSED` (15).
    pub const COMPRESSED: u32 = 15;
    /// `miUTF8` (16).
    pub const UTF8: u32 = 16;
}

/// MAT array classes (`mx*_CLASS`) that hold numbers.
pub mod mx {
    /// `mxDOUBLE_CLASS` (6).
    pub const DOUBLE: u8 = 6;
    /// `mxSINGLE_CLASS` (7).
    pub const SINGLE: u8 = 7;
    /// `mxINT8_CLASS` (8).
    pub const INT8: u8 = 8;
    /// `mxUINT8_CLASS` (9).
    pub const UINT8: u8 = 9;
    /// `mxINT16_CLASS` (10).
    pub const INT16: u8 = 10;
    /// `mxUINT16_CLASS` (11).
    pub const UINT16: u8 = 11;
    /// `mxINT32_CLASS` (12).
    pub const INT32: u8 = 12;
    /// `mxUINT32_CLASS` (13).
    pub const UINT32: u8 = 13;
    /// `mxINT64_CLASS` (14).
    pub const INT64: u8 = 14;
    /// `mxUINT64_CLASS` (15).
    pub const UINT64: u8 = 15;
}

/// Bytes per element of a numeric storage type, or None for non-numeric types.
fn elem_size(ty: u32) -> Option<usize> {
    Some(match ty {
        mi::INT8 | mi::UINT8 => 1,
        mi::INT16 | mi::UINT16 => 2,
        mi::INT32 | mi::UINT32 | mi::SINGLE => 4,
        mi::DOUBLE | mi::INT64 | mi::UINT64 => 8,
        _ => return None,
    })
}

fn class_name(class: u8) -> &'static str {
    match class {
        1 => "cell",
        2 => "struct",
        3 => "object",
        4 => "char",
        5 => "sparse",
        mx::DOUBLE => "double",
        mx::SINGLE => "single",
        mx::INT8 => "int8",
        mx::UINT8 => "uint8",
        mx::INT16 => "int16",
        mx::UINT16 => "uint16",
        mx::INT32 => "int32",
        mx::UINT32 => "uint32",
        mx::INT64 => "int64",
        mx::UINT64 => "uint64",
        _ => "unknown",
    }
}

/// The header of one numeric variable, handed to the visitor of [`read_mat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarHeader {
    /// Variable name.
    pub name: String,
    /// Array class (`mx::*`).
    pub class: u8,
    /// Dimensions (column-major: the first index varies fastest in the data).
    pub dims: Vec<usize>,
    /// Storage type of the real part (`mi::*`), which may be narrower than the class.
    pub storage: u32,
    /// Number of elements (product of `dims`).
    pub count: usize,
    /// Whether the file is big-endian.
    pub big_endian: bool,
}

impl VarHeader {
    /// The array class as MATLAB names it (`uint8`, `double`, ...).
    pub fn class_name(&self) -> &'static str {
        class_name(self.class)
    }
}

/// Reads exactly `buf.len()` bytes, turning a short read into a "truncated" error.
fn read_full(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            anyhow!("truncated: the data ends inside {what}")
        } else {
            anyhow!(e).context(format!("while reading {what}"))
        }
    })
}

/// Discards `n` bytes.
fn skip(r: &mut dyn Read, n: u64, what: &str) -> Result<()> {
    let got =
        io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| anyhow!(e).context(format!("while skipping {what}")))?;
    if got < n {
        bail!("truncated: the data ends inside {what}");
    }
    Ok(())
}

struct Endian(bool);

impl Endian {
    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.0 {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
}

/// One parsed element tag. `small` elements carry their (<= 4 byte) payload in `inline`.
struct Tag {
    ty: u32,
    size: usize,
    small: Option<[u8; 4]>,
}

impl Tag {
    /// Bytes after the payload up to the next 8-byte boundary (0 for small elements).
    fn padding(&self) -> usize {
        if self.small.is_some() {
            0
        } else {
            (8 - self.size % 8) % 8
        }
    }
    /// Bytes this element occupies after its tag, padding included.
    fn span(&self) -> usize {
        if self.small.is_some() {
            0
        } else {
            self.size + self.padding()
        }
    }
}

fn read_tag(r: &mut dyn Read, e: &Endian, what: &str) -> Result<Tag> {
    let mut b = [0u8; 8];
    read_full(r, &mut b, what)?;
    let first = e.u32([b[0], b[1], b[2], b[3]]);
    if first >> 16 != 0 {
        let size = (first >> 16) as usize;
        if size > 4 {
            bail!("corrupt small data element in {what} (size {size} > 4)");
        }
        Ok(Tag {
            ty: first & 0xffff,
            size,
            small: Some([b[4], b[5], b[6], b[7]]),
        })
    } else {
        Ok(Tag {
            ty: first,
            size: e.u32([b[4], b[5], b[6], b[7]]) as usize,
            small: None,
        })
    }
}

/// Reads a whole (small) sub-element payload, checking it fits in what the matrix has left.
fn read_payload(r: &mut dyn Read, tag: &Tag, left: &mut usize, max: usize, what: &str) -> Result<Vec<u8>> {
    if let Some(inline) = tag.small {
        return Ok(inline[..tag.size].to_vec());
    }
    if tag.size > max || tag.span() > *left {
        bail!(
            "corrupt {what}: {} bytes claimed, {} left in the variable",
            tag.size,
            *left
        );
    }
    let mut v = vec![0u8; tag.size];
    read_full(r, &mut v, what)?;
    skip(r, tag.padding() as u64, what)?;
    *left -= tag.span();
    Ok(v)
}

/// Parses one `miMATRIX` element's contents from `r` (`size` bytes) and hands a numeric variable
/// to `visit`; other classes (cell, struct, char, sparse, ...) are skipped. Reads exactly `size`
/// bytes unless it fails.
fn read_matrix(
    r: &mut dyn Read,
    size: usize,
    e: &Endian,
    alloc_bound: usize,
    visit: &mut dyn FnMut(&VarHeader, &mut dyn Read, usize) -> Result<()>,
) -> Result<()> {
    let mut left = size;
    if size == 0 {
        return Ok(()); // an empty placeholder element
    }
    let flags_tag = read_tag(r, e, "array flags")?;
    left = left
        .checked_sub(8)
        .ok_or_else(|| anyhow!("corrupt variable: too small for array flags"))?;
    if flags_tag.ty != mi::UINT32 || flags_tag.size != 8 {
        bail!(
            "corrupt variable: array flags have type {} and size {} (expected miUINT32, 8)",
            flags_tag.ty,
            flags_tag.size
        );
    }
    let flags = read_payload(r, &flags_tag, &mut left, 8, "array flags")?;
    let f0 = e.u32([flags[0], flags[1], flags[2], flags[3]]);
    let class = (f0 & 0xff) as u8;
    let complex = f0 & 0x0800 != 0;
    if !(mx::DOUBLE..=mx::UINT64).contains(&class) || complex {
        // Not a real numeric array: skip the rest of the element.
        return skip(r, left as u64, "a non-numeric variable");
    }
    let dims_tag = read_tag(r, e, "dimensions")?;
    left = left
        .checked_sub(8)
        .ok_or_else(|| anyhow!("corrupt variable: too small for dimensions"))?;
    if dims_tag.ty != mi::INT32 || dims_tag.size % 4 != 0 || dims_tag.size < 8 {
        bail!(
            "corrupt variable: dimensions have type {} and size {}",
            dims_tag.ty,
            dims_tag.size
        );
    }
    let dbytes = read_payload(r, &dims_tag, &mut left, 4 * 64, "dimensions")?;
    let mut dims = Vec::with_capacity(dbytes.len() / 4);
    for c in dbytes.chunks_exact(4) {
        let d = e.u32([c[0], c[1], c[2], c[3]]) as i32;
        if d < 0 {
            bail!("corrupt variable: negative dimension {d}");
        }
        dims.push(d as usize);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("corrupt variable: dimensions {dims:?} overflow"))?;
    let name_tag = read_tag(r, e, "variable name")?;
    left = left
        .checked_sub(8)
        .ok_or_else(|| anyhow!("corrupt variable: too small for a name"))?;
    if name_tag.ty != mi::INT8 && name_tag.ty != mi::UINT8 && name_tag.ty != mi::UTF8 {
        bail!("corrupt variable: name has type {}", name_tag.ty);
    }
    let name_bytes = read_payload(r, &name_tag, &mut left, 4096, "variable name")?;
    let name = String::from_utf8_lossy(&name_bytes).into_owned();
    let what = format!("variable '{name}'");
    let data_tag = read_tag(r, e, &format!("the data of {what}"))?;
    left = left
        .checked_sub(8)
        .ok_or_else(|| anyhow!("corrupt {what}: too small for its data"))?;
    let es =
        elem_size(data_tag.ty).ok_or_else(|| anyhow!("corrupt {what}: data has non-numeric type {}", data_tag.ty))?;
    let expected = count
        .checked_mul(es)
        .ok_or_else(|| anyhow!("corrupt {what}: size overflow"))?;
    if data_tag.size != expected {
        bail!(
            "corrupt {what}: dimensions {dims:?} need {expected} data bytes, the element has {}",
            data_tag.size
        );
    }
    if data_tag.span() > left {
        bail!(
            "corrupt {what}: {} data bytes claimed, {} left in the variable",
            data_tag.size,
            left
        );
    }
    let header = VarHeader {
        name,
        class,
        dims,
        storage: data_tag.ty,
        count,
        big_endian: e.0,
    };
    match data_tag.small {
        Some(inline) => visit(&header, &mut &inline[..data_tag.size], alloc_bound)?,
        None => {
            let mut data = r.take(data_tag.size as u64);
            visit(&header, &mut data, alloc_bound)?;
            // Whatever the visitor did not read is skipped.
            let rest = data.limit();
            skip(&mut data, rest, &format!("the data of {what}"))?;
            left -= data_tag.size;
        }
    }
    // Padding, an imaginary part we ignore, or anything else that follows.
    skip(r, left as u64, &what)
}

/// Streams a level-5 MAT-file from `r`, calling `visit(header, data, alloc_bound)` for every
/// real numeric variable (compressed or not). `data` yields exactly the variable's raw data
/// (`header.count` elements of type `header.storage`, column-major, file endianness);
/// `alloc_bound` is the largest number of bytes the visitor may reserve up front for this
/// variable (derived from the file size, so a corrupt header cannot make the reader allocate
/// more than the file can hold). `file_len` is the file size when known.
pub fn read_mat(
    r: &mut dyn Read,
    file_len: Option<u64>,
    visit: &mut dyn FnMut(&VarHeader, &mut dyn Read, usize) -> Result<()>,
) -> Result<()> {
    let mut header = [0u8; 128];
    read_full(r, &mut header, "the 128-byte MAT header")?;
    let text = String::from_utf8_lossy(&header[..116]);
    if header[0..4] == [0x89, b'H', b'D', b'F'] || text.contains("MAT-file, Platform") && text.contains("7.3") {
        bail!("MAT v7.3 (HDF5) files are not supported: resave with save(..., '-v7')");
    }
    let e = match &header[126..128] {
        b"IM" => Endian(false),
        b"MI" => Endian(true),
        _ => bail!("not a MATLAB 5.0 MAT-file (no endian indicator at byte 126)"),
    };
    let version = if e.0 {
        u16::from_be_bytes([header[124], header[125]])
    } else {
        u16::from_le_bytes([header[124], header[125]])
    };
    if version == 0x0200 {
        bail!("MAT v7.3 (HDF5) files are not supported: resave with save(..., '-v7')");
    }
    if version != 0x0100 {
        bail!("unsupported MAT-file version 0x{version:04x} (expected 0x0100, level 5)");
    }
    let mut pos: u64 = 128;
    loop {
        // Peek the tag byte by byte so that a clean end of file ends the loop.
        let mut b = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            match r.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(anyhow!(err).context("while reading a data element tag")),
            }
        }
        if got == 0 {
            return Ok(());
        }
        if got < 8 {
            bail!("truncated: the data ends inside a data element tag at byte {pos}");
        }
        let ty = e.u32([b[0], b[1], b[2], b[3]]);
        let size = e.u32([b[4], b[5], b[6], b[7]]) as u64;
        pos += 8;
        let remaining = file_len.map(|l| l.saturating_sub(pos));
        if let Some(rem) = remaining {
            if size > rem {
                bail!(
                    "truncated: a data element at byte {} claims {size} bytes, the file has {rem} left",
                    pos - 8
                );
            }
        }
        match ty {
            mi::COMPRESSED => {
                let mut raw = r.take(size);
                {
                    let mut z = flate2::read::ZlibDecoder::new(&mut raw);
                    let inner = read_tag(&mut z, &e, "a compressed variable").context("corrupt compressed variable")?;
                    if inner.ty != mi::MATRIX || inner.small.is_some() {
                        bail!(
                            "corrupt compressed variable: holds type {} instead of miMATRIX",
                            inner.ty
                        );
                    }
                    // Deflate cannot expand more than ~1032:1; allow some slack.
                    let bound = (size as usize).saturating_mul(1100).saturating_add(1 << 16);
                    read_matrix(&mut z, inner.size, &e, bound, visit)?;
                    // Drain to the end of the zlib stream so its checksum is verified.
                    io::copy(&mut z, &mut io::sink()).context("corrupt compressed variable")?;
                }
                let rest = raw.limit();
                skip(&mut raw, rest, "a compressed variable")?;
                pos += size;
            }
            mi::MATRIX => {
                let mut m = r.take(size);
                let bound = size as usize;
                read_matrix(&mut m, size as usize, &e, bound, visit)?;
                pos += size;
                let pad = (8 - size % 8) % 8;
                // Tolerate a missing final pad at the very end of the file.
                if remaining.is_none_or(|rem| rem >= size + pad) {
                    skip(r, pad, "padding")?;
                    pos += pad;
                }
            }
            _ => {
                skip(r, size, "an unsupported data element")?;
                pos += size;
            }
        }
    }
}

/// Reads `count` elements of numeric storage type `ty` and converts each with `f`.
fn for_each_element(
    data: &mut dyn Read,
    ty: u32,
    big_endian: bool,
    count: usize,
    what: &str,
    mut f: impl FnMut(usize, f64) -> Result<()>,
) -> Result<()> {
    let es = elem_size(ty).ok_or_else(|| anyhow!("{what}: non-numeric storage {ty}"))?;
    let mut buf = vec![0u8; es * 4096];
    let mut i = 0;
    while i < count {
        let n = (count - i).min(4096);
        read_full(data, &mut buf[..n * es], what)?;
        for k in 0..n {
            let b = &buf[k * es..(k + 1) * es];
            let mut a = [0u8; 8];
            a[..es].copy_from_slice(b);
            if big_endian {
                a[..es].reverse();
            }
            let v = match ty {
                mi::INT8 => a[0] as i8 as f64,
                mi::UINT8 => a[0] as f64,
                mi::INT16 => i16::from_le_bytes([a[0], a[1]]) as f64,
                mi::UINT16 => u16::from_le_bytes([a[0], a[1]]) as f64,
                mi::INT32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                mi::UINT32 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                mi::SINGLE => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                mi::DOUBLE => f64::from_le_bytes(a),
                mi::INT64 => i64::from_le_bytes(a) as f64,
                _ => u64::from_le_bytes(a) as f64,
            };
            f(i + k, v)?;
        }
        i += n;
    }
    Ok(())
}

/// Reads the SVHN layout from a MAT-file stream: `X` (32x32x3xN, any integer-valued numeric
/// class with values 0..=255; uint8 in the real files) and `y` (Nx1 or 1xN, values 1..=10, 10
/// meaning digit 0; 0 is accepted as 0). Returns NHWC images and labels 0..=9.
pub fn read_svhn(r: &mut dyn Read, file_len: Option<u64>) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut images: Option<Vec<u8>> = None;
    let mut labels: Option<Vec<u8>> = None;
    read_mat(r, file_len, &mut |h, data, bound| {
        match h.name.as_str() {
            "X" => {
                let n = match h.dims.as_slice() {
                    [32, 32, 3, n] => *n,
                    [32, 32, 3] => 1,
                    d => bail!("variable 'X' has shape {d:?}, expected 32x32x3xN"),
                };
                if !matches!(h.class, mx::DOUBLE..=mx::UINT64) {
                    bail!("variable 'X' has class {}", h.class_name());
                }
                let total = n * IMAGE_BYTES;
                let mut out = Vec::with_capacity(total.min(bound));
                // Read up to CHUNK images per call (fewer decoder round trips), then
                // transpose each from column-major X[h, w, c, i] = col[h + 32 w + 1024 c]
                // to NHWC.
                const CHUNK: usize = 64;
                let mut col = vec![0u8; IMAGE_BYTES * CHUNK.min(n.max(1))];
                let mut img = [0u8; IMAGE_BYTES];
                let mut i = 0;
                while i < n {
                    let m = (n - i).min(CHUNK);
                    let buf = &mut col[..m * IMAGE_BYTES];
                    if h.storage == mi::UINT8 {
                        read_full(data, buf, "the data of variable 'X'")?;
                    } else {
                        for_each_element(
                            data,
                            h.storage,
                            h.big_endian,
                            m * IMAGE_BYTES,
                            "variable 'X'",
                            |k, v| {
                                if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                                    bail!(
                                        "variable 'X' holds {v} at image {}: pixels must be \
                                         integers 0..=255",
                                        i + k / IMAGE_BYTES
                                    );
                                }
                                buf[k] = v as u8;
                                Ok(())
                            },
                        )?;
                    }
                    for one in buf.chunks_exact(IMAGE_BYTES) {
                        for c in 0..3 {
                            for x in 0..IMAGE_SIZE {
                                let s = &one[c * 1024 + x * 32..c * 1024 + x * 32 + 32];
                                for (y, &v) in s.iter().enumerate() {
                                    img[(y * IMAGE_SIZE + x) * 3 + c] = v;
                                }
                            }
                        }
                        out.extend_from_slice(&img);
                    }
                    i += m;
                }
                images = Some(out);
            }
            "y" => {
                let n = match h.dims.as_slice() {
                    [n, 1] | [1, n] => *n,
                    d => bail!("variable 'y' has shape {d:?}, expected Nx1"),
                };
                let mut out = Vec::with_capacity(n.min(bound));
                for_each_element(data, h.storage, h.big_endian, n, "variable 'y'", |i, v| {
                    if v.fract() != 0.0 || !(0.0..=10.0).contains(&v) {
                        bail!("variable 'y' holds label {v} at index {i}: SVHN labels are 1..=10 (10 means 0)");
                    }
                    out.push((v as u8) % 10);
                    Ok(())
                })?;
                labels = Some(out);
            }
            _ => {}
        }
        Ok(())
    })?;
    let images = images.ok_or_else(|| anyhow!("no variable 'X' (the images)"))?;
    let labels = labels.ok_or_else(|| anyhow!("no variable 'y' (the labels)"))?;
    if images.len() / IMAGE_BYTES != labels.len() {
        bail!(
            "'X' holds {} images but 'y' holds {} labels",
            images.len() / IMAGE_BYTES,
            labels.len()
        );
    }
    Ok((images, labels))
}

/// Loads an SVHN-layout `.mat` file as a labeled [`Dataset`]; errors name the file.
pub fn load_svhn_mat(path: &Path) -> Result<Dataset> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    let mut r = BufReader::with_capacity(1 << 20, f);
    let (images, labels) = read_svhn(&mut r, len).with_context(|| format!("{}", path.display()))?;
    let labels = labels.iter().map(|&v| v as super::Label).collect();
    Dataset::new(images, Some(labels), path.display().to_string())
}

/// One variable for [`write_mat`]: (name, class `mx::*`, dims, storage type `mi::*`,
/// little-endian raw data).
pub type MatVarSpec<'a> = (&'a str, u8, &'a [usize], u32, &'a [u8]);

/// Writes a level-5 MAT-file with numeric variables, for tests and fixtures. Each variable is
/// (name, class, dims, storage type, little-endian raw data); `compress` wraps each variable in
/// a zlib `miCOMPRESSED` element as MATLAB's default `-v7` does.
pub fn write_mat(vars: &[MatVarSpec<'_>], compress: bool) -> Vec<u8> {
    use std::io::Write;
    fn element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
        if data.len() <= 4 && ty != mi::MATRIX {
            out.extend_from_slice(&(((data.len() as u32) << 16) | ty).to_le_bytes());
            let mut b = [0u8; 4];
            b[..data.len()].copy_from_slice(data);
            out.extend_from_slice(&b);
        } else {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
            out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
        }
    }
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: adamatch-wgpu tests".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for &(name, class, dims, storage, data) in vars {
        let mut body = Vec::new();
        let mut flags = (class as u32).to_le_bytes().to_vec();
        flags.extend_from_slice(&[0u8; 4]);
        element(&mut body, mi::UINT32, &flags);
        let d: Vec<u8> = dims.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect();
        element(&mut body, mi::INT32, &d);
        element(&mut body, mi::INT8, name.as_bytes());
        element(&mut body, storage, data);
        let mut matrix = Vec::new();
        matrix.extend_from_slice(&mi::MATRIX.to_le_bytes());
        matrix.extend_from_slice(&(body.len() as u32).to_le_bytes());
        matrix.extend_from_slice(&body);
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&matrix).expect("in-memory write");
            let zbytes = z.finish().expect("in-memory write");
            out.extend_from_slice(&mi::COMPRESSED.to_le_bytes());
            out.extend_from_slice(&(zbytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&zbytes);
        } else {
            out.extend_from_slice(&matrix);
        }
    }
    out
}
