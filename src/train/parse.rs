//! Parsers of numeric flags: each value is checked when the command line is read, so nothing is
//! accepted that fails later (clap names the flag; the message names the range).

use super::config::{MAX_BN_CALIBRATION, MAX_EVAL_LIMIT, MAX_STEPS};
use super::overrides::EvalLimit;

/// A whole number in `min..=max`.
pub fn count<T: TryFrom<u64>>(s: &str, min: u64, max: u64) -> Result<T, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number from {min} to {max}"))?;
    if !(min..=max).contains(&v) {
        return Err(format!("must be from {min} to {max}"));
    }
    T::try_from(v).map_err(|_| format!("must be from {min} to {max}"))
}

/// A positive count with no useful upper bound but the address space's.
pub fn positive(s: &str) -> Result<usize, String> {
    count(s, 1, u32::MAX as u64)
}

/// `--steps` and the step intervals.
pub fn steps(s: &str) -> Result<u64, String> {
    count(s, 1, MAX_STEPS)
}

/// `--source-steps` (0: no source-only phase).
pub fn source_steps(s: &str) -> Result<u64, String> {
    count(s, 0, MAX_STEPS)
}

/// `--bn-calibration` (0 switches it off).
pub fn bn_calibration(s: &str) -> Result<usize, String> {
    count(s, 0, MAX_BN_CALIBRATION as u64)
}

/// `--eval-limit` and `eval --limit`: a positive count.
pub fn eval_limit(s: &str) -> Result<usize, String> {
    count(s, 1, MAX_EVAL_LIMIT as u64)
}

/// `--eval-limit`: a positive count or `all`.
pub fn eval_limit_or_all(s: &str) -> Result<EvalLimit, String> {
    if s == "all" {
        return Ok(EvalLimit(None));
    }
    eval_limit(s)
        .map(|n| EvalLimit(Some(n)))
        .map_err(|e| format!("{e}, or all"))
}

/// `--image-size`: the sides training supports.
pub fn image_size(s: &str) -> Result<usize, String> {
    let v: usize = count(s, 0, u32::MAX as u64)?;
    crate::data::check_image_size(v).map_err(|e| {
        // The message starts with the flag, which clap names already.
        let text = e.to_string();
        text.split_once(": ").map(|(_, m)| m.to_string()).unwrap_or(text)
    })?;
    Ok(v)
}

/// `--depth`: the WideResNet depths (6n + 4) up to the supported maximum.
pub fn depth(s: &str) -> Result<usize, String> {
    let max = crate::network::MAX_DEPTH;
    let v: usize = count(s, 10, max as u64)?;
    if !(v - 4).is_multiple_of(6) {
        return Err(format!(
            "a WideResNet's depth is 6n + 4 (10, 16, 22, 28, ...), up to {max}"
        ));
    }
    Ok(v)
}

/// `--width`: the widening factor.
pub fn width(s: &str) -> Result<usize, String> {
    count(s, 1, crate::network::MAX_WIDTH as u64)
}
