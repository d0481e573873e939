//! Rust side of `shaders/dense.wgsl`.
