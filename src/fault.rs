//! Fault injection for the tests: with `ADAMATCH_FAULT=POINT:N` in the environment the process
//! aborts (no cleanup, as a kill -9 would end it) the Nth time it reaches `POINT`: `step` (after
//! a training step), `eval` (an evaluation computed, not yet logged), `export` (before the model
//! is written) or `write:FILE` (a file's temporary copy written, not yet renamed). Without the
//! variable a point is one initialised-once check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static REACHED: AtomicU64 = AtomicU64::new(0);

/// Marks a point of the process where a fault may be injected (see the module's doc).
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("ADAMATCH_FAULT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((want, n)) = target {
        if want == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            std::process::abort();
        }
    }
}
