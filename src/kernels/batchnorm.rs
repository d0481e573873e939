//! Rust side of `shaders/batchnorm.wgsl`.
