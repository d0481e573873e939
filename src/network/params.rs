//! The parameters, gradients and running statistics of a network on the GPU.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::gpu::{GpuContext, Tensor};

use super::*;

/// The network: structure plus parameters, gradients and running statistics on the GPU.
pub struct WideResNet {
    pub config: WideResNetConfig,
    pub arch: Architecture,
    /// Trainable parameters, one flat f32 buffer (see [`Architecture::param_specs`]).
    pub params: wgpu::Buffer,
    /// Gradients, same layout as `params`.
    pub grads: wgpu::Buffer,
    /// Batch-norm running means and variances.
    pub running: wgpu::Buffer,
}

impl std::ops::Deref for WideResNet {
    type Target = Architecture;
    fn deref(&self) -> &Architecture {
        &self.arch
    }
}

impl WideResNet {
    /// Builds the structure and He-normal-initialized parameters from `seed`.
    pub fn new(ctx: &GpuContext, config: WideResNetConfig, seed: u64) -> Result<Self> {
        let arch = Architecture::new(&config)?;
        let params = ctx.storage_buffer("params", arch.params_len() as u64 * 4);
        let grads = ctx.storage_buffer("grads", arch.params_len() as u64 * 4);
        let running = ctx.storage_buffer("bn running stats", arch.running_len() as u64 * 4);
        let net = WideResNet {
            config,
            arch,
            params,
            grads,
            running,
        };
        ctx.queue
            .write_buffer(&net.params, 0, bytemuck::cast_slice(&net.initial_params(seed)));
        ctx.queue
            .write_buffer(&net.running, 0, bytemuck::cast_slice(&net.initial_running()));
        Ok(net)
    }

    /// He-normal conv kernels (truncated at 2 sigma, as Keras' `he_normal`), Glorot-uniform dense
    /// kernel (Keras' Dense default), zero bias, BN gamma 1 and beta 0.
    pub fn initial_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.param_layout.len];
        for spec in &self.param_layout.specs {
            let dst = &mut flat[spec.offset..spec.offset + spec.len()];
            match spec.kind.unwrap() {
                ParamKind::ConvKernel => {
                    let fan_in = (spec.shape[0] * spec.shape[1] * spec.shape[2]) as f64;
                    // Keras divides by the std of a unit normal truncated at 2 sigma.
                    let std = (2.0 / fan_in).sqrt() / 0.879_625_661_034_239_8;
                    for v in dst.iter_mut() {
                        *v = (truncated_normal(&mut rng) * std) as f32;
                    }
                }
                ParamKind::DenseKernel => {
                    let limit = (6.0 / (spec.shape[0] + spec.shape[1]) as f64).sqrt();
                    for v in dst.iter_mut() {
                        *v = rng.random_range(-limit..limit) as f32;
                    }
                }
                ParamKind::BnGamma => dst.fill(1.0),
                ParamKind::DenseBias | ParamKind::BnBeta => dst.fill(0.0),
            }
        }
        flat
    }

    /// Running means 0, running variances 1.
    pub fn initial_running(&self) -> Vec<f32> {
        let mut flat = vec![0.0f32; self.running_layout.len];
        for spec in &self.running_layout.specs {
            if spec.name.ends_with("running_var") {
                flat[spec.offset..spec.offset + spec.len()].fill(1.0);
            }
        }
        flat
    }

    pub(super) fn param(&self, idx: usize) -> Tensor {
        let s = &self.param_layout.specs[idx];
        Tensor::view(&self.params, s.offset, &s.shape)
    }

    pub(super) fn grad(&self, idx: usize) -> Tensor {
        let s = &self.param_layout.specs[idx];
        Tensor::view(&self.grads, s.offset, &s.shape)
    }

    pub(super) fn running_tensor(&self, idx: usize) -> Tensor {
        let s = &self.running_layout.specs[idx];
        Tensor::view(&self.running, s.offset, &s.shape)
    }

    /// Reads all parameters (flat layout, gaps included).
    pub async fn read_params_async(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.params, 0, &[self.param_layout.len])
            .read_f32_async(ctx)
            .await
    }

    /// Reads all running statistics (flat layout).
    pub async fn read_running_async(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.running, 0, &[self.running_layout.len])
            .read_f32_async(ctx)
            .await
    }

    /// [`WideResNet::read_params_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        pollster::block_on(self.read_params_async(ctx))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_grads(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.grads, 0, &[self.param_layout.len]).read_f32(ctx)
    }

    /// [`WideResNet::read_running_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_running(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        pollster::block_on(self.read_running_async(ctx))
    }

    pub fn write_params(&self, ctx: &GpuContext, flat: &[f32]) {
        Tensor::view(&self.params, 0, &[self.param_layout.len]).write_f32(ctx, flat);
    }

    pub fn write_running(&self, ctx: &GpuContext, flat: &[f32]) {
        Tensor::view(&self.running, 0, &[self.running_layout.len]).write_f32(ctx, flat);
    }
}

/// A standard normal sample truncated to [-2, 2] by rejection.
pub(super) fn truncated_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let v: f64 = StandardNormal.sample(rng);
        if v.abs() <= 2.0 {
            return v;
        }
    }
}
