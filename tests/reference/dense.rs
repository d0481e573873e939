//! CPU reference for `shaders/dense.wgsl` (to be written).
