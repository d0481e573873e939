//! Tests for `shaders/pool.wgsl` (to be written).
