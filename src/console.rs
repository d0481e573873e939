//! Writing for humans and for pipes without a panic: `println!` and `eprintln!` panic when the
//! stream is closed (`| head -1`) or full (`> /dev/full`). [`outln!`] returns the write's error
//! instead (a closed pipe as [`ClosedOutput`], which `main` turns into a quiet exit 0, as `head`
//! users expect), [`errln!`] never fails but remembers that a diagnostic was lost, and
//! [`printable`] escapes the control characters of names that came from files.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Standard output was closed by its reader: the command ends quietly.
#[derive(Debug)]
pub struct ClosedOutput;

impl fmt::Display for ClosedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for ClosedOutput {}

static STDERR_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output; a closed pipe is [`ClosedOutput`], any other failure (a full disk)
/// an error that says so.
pub fn write_out(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|_| out.flush()).map_err(out_error)
}

/// The error for a failed write to standard output.
pub fn out_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(ClosedOutput)
    } else {
        anyhow::anyhow!("cannot write to standard output: {e}")
    }
}

/// Writes to standard error; a failure is remembered (see [`stderr_failed`]), never a panic.
pub fn write_err(args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if err.write_fmt(args).and_then(|_| err.flush()).is_err() {
        STDERR_FAILED.store(true, Ordering::Relaxed);
    }
}

/// Whether a diagnostic could not be written to standard error (the exit status says so).
pub fn stderr_failed() -> bool {
    STDERR_FAILED.load(Ordering::Relaxed)
}

/// Whether `e` (or an error it wraps) is a closed standard output.
pub fn is_closed_output(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<ClosedOutput>())
}

/// `s` with its control characters (C0, DEL, C1) and Unicode direction overrides escaped as
/// `\u{..}` (`\n`, `\t`, `\r` and `\e` by their short names), so that a class or file name
/// cannot clear the screen, set the window title or break a line of a report.
pub fn printable(s: &str) -> Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`printable`] of a path as `Path::display` shows it.
pub fn printable_path(p: &std::path::Path) -> String {
    printable(&p.display().to_string()).into_owned()
}

/// `println!` that returns the error instead of panicking: `outln!(...)?`.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that returns the error instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::write_out(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics (a lost diagnostic is remembered for the exit status).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}
