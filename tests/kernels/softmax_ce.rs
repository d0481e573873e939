//! Tests for `shaders/softmax_ce.wgsl` (to be written).
