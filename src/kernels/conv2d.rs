//! Rust side of `shaders/conv2d.wgsl`.
