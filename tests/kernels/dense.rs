//! Tests for `shaders/dense.wgsl` (to be written).
