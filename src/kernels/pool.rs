//! Rust side of `shaders/pool.wgsl`.
