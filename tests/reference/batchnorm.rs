//! CPU reference for `shaders/batchnorm.wgsl` (to be written).
