//! Tests for `shaders/conv2d.wgsl` (to be written).
