//! CPU reference for `shaders/pool.wgsl` (to be written).
