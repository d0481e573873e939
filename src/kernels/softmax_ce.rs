//! Rust side of `shaders/softmax_ce.wgsl`.
