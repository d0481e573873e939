//! Tests for `shaders/batchnorm.wgsl` (to be written).
