//! One Rust wrapper module per shader file. Each function builds an [`Op`](crate::gpu::Op)
//! (pipeline + bind group + dispatch size) once; callers record ops as often as they like.

pub mod activation;
pub mod adamatch;
pub mod augment;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod fixmatch;
pub mod optimizer;
pub mod pool;
pub mod softmax_ce;

use crate::shaders::Shader;

/// Every shader module the crate compiles, each defined by its wrapper.
pub static SHADERS: &[&Shader] = &[
    &conv2d::SHADER,
    &conv2d::TILED_SHADERS[0],
    &conv2d::TILED_SHADERS[1],
    &conv2d::TILED_SHADERS[2],
    &conv2d::TILED_SHADERS[3],
    &conv2d::TILED_SHADERS[4],
    &conv2d::TILED_SHADERS[5],
    &conv2d::TILED_SHADERS[6],
    &conv2d::SUBGROUP_SHADER,
    &batchnorm::SHADER,
    &activation::SHADER,
    &pool::SHADER,
    &dense::SHADER,
    &softmax_ce::SHADER,
    &optimizer::SHADER,
    &adamatch::SHADER,
    &fixmatch::SHADER,
    &augment::SHADER,
];
