use adamatch_wgpu::gpu::{GpuContext, Tensor};
use adamatch_wgpu::kernels::conv2d::{
    backward_data_plan, backward_weights_plan, conv2d_backward_data, conv2d_backward_weights,
    conv2d_backward_weights_scratch_len, conv2d_forward, forward_plan, Conv2dKernel, Conv2dShape, ConvPath, ConvTiles,
};
use adamatch_wgpu::profile::AdapterProfile;

use crate::ctx;
use crate::reference::{assert_close, conv2d as cpu, random_vec, to_f64};

// f32 sums of `terms` products of values in [-1, 1): relative 1e-4, and an absolute floor that
// grows with the length of the sum (rounding error of a long sum near zero).
const RTOL: f64 = 1e-4;
fn atol(terms: usize) -> f64 {
    1e-6 * terms as f64
}

fn shape(batch: usize, hw: (usize, usize), in_c: usize, out_c: usize, kernel: usize, stride: usize) -> Conv2dShape {
    Conv2dShape {
        batch,
        in_h: hw.0,
        in_w: hw.1,
        in_c,
        out_c,
        kernel,
        stride,
    }
}

/// 3x3 and 1x1, stride 1 and 2, odd and even sizes, channel counts that are and are not
/// multiples of 4 (vec4 and scalar staging), GEMM sizes that are not multiples of the tiles.
fn shapes() -> Vec<Conv2dShape> {
    vec![
        shape(1, (5, 5), 3, 5, 3, 1),
        shape(3, (7, 9), 13, 17, 3, 2),
        shape(3, (8, 8), 5, 13, 3, 2),
        shape(1, (6, 10), 17, 33, 1, 2),
        shape(3, (7, 9), 33, 17, 1, 1),
        shape(2, (11, 12), 3, 16, 3, 1),
        shape(1, (7, 5), 16, 13, 3, 2),
        shape(1, (9, 7), 16, 32, 3, 1),
        shape(2, (8, 8), 32, 64, 3, 2),
        shape(2, (6, 6), 8, 12, 1, 2),
        shape(3, (5, 7), 4, 36, 3, 1),
        shape(2, (1, 1), 4, 4, 3, 1),
        // Channels that are multiples of the K step (the tap-walking fast path) with several M
        // tiles.
        shape(3, (10, 9), 16, 32, 3, 1),
        shape(2, (12, 11), 32, 16, 3, 2),
        // Stride 3: nine backward-data phases, some of them without positions near the edges.
        shape(2, (7, 8), 16, 16, 3, 3),
        shape(1, (4, 5), 5, 6, 1, 3),
        // Channel counts that are multiples of 16 (the direct path's 16-column `_wide` blocks),
        // an odd number of such blocks, rows that do not fill a block.
        shape(3, (5, 7), 16, 48, 3, 1),
        shape(2, (7, 7), 48, 32, 1, 2),
        // 9 * 64 weight-gradient rows: whole subgroups of row blocks (the subgroup kernel).
        shape(2, (6, 5), 64, 16, 3, 1),
        // 3x3 stride 1 with output rows a multiple of 16 wide (the forward `_rows_subgroup`
        // kernel: both padded edges, blocks past the last row, two image rows per 32).
        shape(3, (3, 16), 16, 32, 3, 1),
        shape(1, (4, 32), 32, 16, 3, 1),
        // The same 8 wide (`_rows8_subgroup`: two image rows per block, images of 6 rows).
        shape(3, (6, 8), 32, 16, 3, 1),
        // 32-column blocks (`_rows32` / `_rows8_32`, GEMM columns a multiple of 32): two and
        // three column blocks, ragged row blocks, both row widths.
        shape(3, (5, 16), 32, 64, 3, 1),
        shape(1, (4, 8), 64, 96, 3, 1),
        shape(3, (6, 8), 16, 32, 3, 1),
        // The weight gradient's taps kernel (3x3 stride 1, 32-column blocks) with 3 of a
        // subgroup's 8 (kernel row, channel quad) pairs in use, two column blocks.
        shape(2, (9, 13), 4, 64, 3, 1),
    ]
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
}

/// The shared context with every convolution forced onto `path`, or None, after printing SKIPPED
/// and the reason, where the adapter cannot run it.
fn on_path(path: ConvPath, test: &str) -> Option<GpuContext> {
    match ctx().with_conv_path(path) {
        Ok(c) => Some(c),
        Err(e) => {
            println!("SKIPPED {test} on the {path} path: {e:#}");
            None
        }
    }
}

/// The kernels the three passes of `s` run on `path`: forward, backward data, and the weight
/// gradient's GEMM.
fn kernels(path: ConvPath, s: &Conv2dShape) -> [Conv2dKernel; 3] {
    [
        forward_plan(path, ConvTiles::DEFAULT, s, false).kernel,
        backward_data_plan(path, ConvTiles::DEFAULT, s, false).kernel,
        backward_weights_plan(path, ConvTiles::DEFAULT, s, false)[0].kernel,
    ]
}

fn data(s: &Conv2dShape, seed: u64) -> Data {
    Data {
        x: random_vec(seed, s.input_len()),
        w: random_vec(seed + 1, s.weight_len()),
        dy: random_vec(seed + 2, s.output_len()),
    }
}

#[test]
fn same_padding_matches_definition() {
    for s in shapes() {
        let (ho, pt) = cpu::same_geometry(s.in_h, s.kernel, s.stride);
        let (wo, pl) = cpu::same_geometry(s.in_w, s.kernel, s.stride);
        assert_eq!((s.out_h(), s.pad_top(), s.out_w(), s.pad_left()), (ho, pt, wo, pl));
    }
    // Keras pads stride-2 convolutions of even sizes at the bottom/right only.
    let s = shape(1, (32, 32), 32, 64, 3, 2);
    assert_eq!((s.out_h(), s.pad_top(), s.pad_left()), (16, 0, 0));
    let s = shape(1, (32, 32), 32, 32, 3, 1);
    assert_eq!((s.out_h(), s.pad_top(), s.pad_left()), (32, 1, 1));
    let s = shape(1, (7, 7), 3, 3, 3, 2);
    assert_eq!((s.out_h(), s.pad_top()), (4, 1));
    let s = shape(64, (32, 32), 32, 64, 1, 2);
    assert_eq!((s.out_w(), s.pad_left()), (16, 0));
    assert_eq!(s.flops(), 2.0 * (64 * 16 * 16) as f64 * 32.0 * 64.0);
}

/// A pass's result without and with what it adds to (`base`: the residual, or the gradient an
/// accumulating pass starts from), each against the reference.
fn assert_plain_and_added(
    ctx: &GpuContext,
    what: &str,
    plain: &Tensor,
    added: &Tensor,
    want: &[f64],
    base: &[f32],
    terms: usize,
) {
    assert_close(what, &plain.read_f32(ctx).unwrap(), want, RTOL, atol(terms));
    let want_added: Vec<f64> = want.iter().zip(base).map(|(a, &b)| a + b as f64).collect();
    assert_close(
        &format!("{what} (added to)"),
        &added.read_f32(ctx).unwrap(),
        &want_added,
        RTOL,
        atol(terms),
    );
}

#[test]
fn forward_matches_reference_with_and_without_residual() {
    for path in ConvPath::ALL {
        check_forward(path);
    }
}

fn check_forward(path: ConvPath) {
    let Some(ctx) = &on_path(path, "forward_matches_reference_with_and_without_residual") else {
        return;
    };
    for (i, s) in shapes().into_iter().enumerate() {
        let d = data(&s, 100 + i as u64);
        let res = random_vec(200 + i as u64, s.output_len());
        let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d.x);
        let w = Tensor::from_f32(ctx, "w", &[s.weight_len()], &d.w);
        let r = Tensor::from_f32(ctx, "residual", &[s.output_len()], &res);
        let y = Tensor::zeros(ctx, "y", &[s.output_len()]);
        let y_res = Tensor::zeros(ctx, "y_res", &[s.output_len()]);
        let plain = conv2d_forward(ctx, &s, &x, &w, &y, None);
        let with_res = conv2d_forward(ctx, &s, &x, &w, &y_res, Some(&r));
        ctx.run(&[&plain, &with_res]).unwrap();

        let want = cpu::conv2d_forward(&to_f64(&d.x), &to_f64(&d.w), &s);
        let terms = s.kernel * s.kernel * s.in_c;
        let what = format!("conv2d forward {path:?} {s:?}");
        assert_plain_and_added(ctx, &what, &y, &y_res, &want, &res, terms);
    }
}

#[test]
fn backward_data_matches_reference_and_accumulates() {
    for path in ConvPath::ALL {
        check_backward_data(path);
    }
}

fn check_backward_data(path: ConvPath) {
    let Some(ctx) = &on_path(path, "backward_data_matches_reference_and_accumulates") else {
        return;
    };
    for (i, s) in shapes().into_iter().enumerate() {
        let d = data(&s, 300 + i as u64);
        let dx0 = random_vec(400 + i as u64, s.input_len());
        let dy = Tensor::from_f32(ctx, "dy", &[s.output_len()], &d.dy);
        let w = Tensor::from_f32(ctx, "w", &[s.weight_len()], &d.w);
        // Start from garbage so "overwrite" is tested too.
        let dx = Tensor::from_f32(ctx, "dx", &[s.input_len()], &dx0);
        let dx_acc = Tensor::from_f32(ctx, "dx_acc", &[s.input_len()], &dx0);
        let set = conv2d_backward_data(ctx, &s, &dy, &w, &dx, false);
        let acc = conv2d_backward_data(ctx, &s, &dy, &w, &dx_acc, true);
        ctx.run(&[&set, &acc]).unwrap();

        let want = cpu::conv2d_backward_data(&to_f64(&d.dy), &to_f64(&d.w), &s);
        let terms = s.kernel * s.kernel * s.out_c;
        let what = format!("conv2d backward data {path:?} {s:?}");
        assert_plain_and_added(ctx, &what, &dx, &dx_acc, &want, &dx0, terms);
    }
}

fn check_backward_weights(ctx: &GpuContext, s: &Conv2dShape, seed: u64) {
    let path = ctx.profile.conv_path;
    let d = data(s, seed);
    let dw0 = random_vec(seed + 3, s.weight_len());
    let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d.x);
    let dy = Tensor::from_f32(ctx, "dy", &[s.output_len()], &d.dy);
    let dw = Tensor::from_f32(ctx, "dw", &[s.weight_len()], &dw0);
    let dw_acc = Tensor::from_f32(ctx, "dw_acc", &[s.weight_len()], &dw0);
    let set = conv2d_backward_weights(ctx, s, &x, &dy, &dw, false, None);
    let acc = conv2d_backward_weights(ctx, s, &x, &dy, &dw_acc, true, None);
    let ops: Vec<_> = set.iter().chain(&acc).collect();
    ctx.run(&ops).unwrap();

    let want = cpu::conv2d_backward_weights(&to_f64(&d.x), &to_f64(&d.dy), s);
    let terms = s.batch * s.out_h() * s.out_w();
    let what = format!("conv2d backward weights {path:?} {s:?}");
    assert_plain_and_added(ctx, &what, &dw, &dw_acc, &want, &dw0, terms);
}

#[test]
fn backward_weights_matches_reference_and_accumulates() {
    for path in ConvPath::ALL {
        let Some(ctx) = &on_path(path, "backward_weights_matches_reference_and_accumulates") else {
            continue;
        };
        for (i, s) in shapes().into_iter().enumerate() {
            check_backward_weights(ctx, &s, 500 + 10 * i as u64);
        }
    }
}

#[test]
fn backward_weights_long_reduction_uses_several_chunks() {
    // Chunks: the tiled path's are about 2048 rows (multiples of 16), the direct path's 512.
    for path in ConvPath::ALL {
        let Some(ctx) = &on_path(path, "backward_weights_long_reduction_uses_several_chunks") else {
            continue;
        };
        // 5 * 30 * 31 = 4650 reduction rows: tiled, three chunks, the last one partial; direct, ten.
        check_backward_weights(ctx, &shape(5, (30, 31), 5, 6, 3, 1), 900);
        // 20 * 16 * 16 = 5120 rows (three or ten chunks) through the aligned entry points, stride 2.
        check_backward_weights(ctx, &shape(20, (32, 32), 16, 8, 3, 2), 910);
        // 3 * 17 * 19 = 969 rows: direct, two chunks of 485 and 484.
        check_backward_weights(ctx, &shape(3, (17, 19), 8, 12, 3, 1), 920);
        // The same through the direct path's 16-column blocks (subgroup path: the taps kernel).
        check_backward_weights(ctx, &shape(3, (17, 19), 16, 32, 3, 1), 930);
        // 5 * 15 * 16 = 1200 rows, stride 2 (the taps kernel reloading two pixels per step),
        // three chunks starting mid-row.
        check_backward_weights(ctx, &shape(5, (30, 31), 4, 32, 3, 2), 940);
    }
}

/// Shapes for the tiled path's tile candidates: scalar and vec4 staging, channels in whole K
/// steps of 8 and 16 but not 32 and of all three, several M and N tiles, strides 1 to 3, ragged
/// edges, a reduction cut into several split-K chunks.
fn tile_shapes() -> Vec<Conv2dShape> {
    vec![
        shape(3, (7, 9), 13, 17, 3, 2),
        shape(3, (10, 9), 16, 32, 3, 1),
        shape(2, (12, 11), 32, 16, 3, 2),
        shape(1, (7, 8), 16, 16, 3, 3),
        shape(2, (7, 7), 48, 36, 1, 2),
        shape(1, (9, 13), 8, 64, 3, 1),
        // 2 * 33 * 33 = 2178 reduction rows: two split-K chunks.
        shape(2, (33, 33), 4, 4, 3, 1),
    ]
}

#[test]
fn every_tile_candidate_matches_the_reference_and_the_default_tiles_bit_for_bit() {
    // The candidates cut the GEMMs into other tiles but sum every output in the same order, so
    // the choice is a matter of speed alone: each matches the f64 reference, and the default's
    // results bit for bit.
    let Some(tiled) = &on_path(ConvPath::Tiled, "every_tile_candidate_matches_the_reference") else {
        return;
    };
    for (i, s) in tile_shapes().into_iter().enumerate() {
        let seed = 1200 + 10 * i as u64;
        let d = data(&s, seed);
        let want = [
            cpu::conv2d_forward(&to_f64(&d.x), &to_f64(&d.w), &s),
            cpu::conv2d_backward_data(&to_f64(&d.dy), &to_f64(&d.w), &s),
            cpu::conv2d_backward_weights(&to_f64(&d.x), &to_f64(&d.dy), &s),
        ];
        let terms = [
            s.kernel * s.kernel * s.in_c,
            s.kernel * s.kernel * s.out_c,
            s.batch * s.out_h() * s.out_w(),
        ];
        let mut default_bits = None;
        for tiles in ConvTiles::ALL {
            let ctx = &tiled.with_conv_tiles(tiles);
            let got = run_passes(ctx, &s, &d);
            for (j, name) in ["forward", "backward data", "backward weights"].iter().enumerate() {
                let what = format!("conv2d {name}, tiles {tiles}, {s:?}");
                assert_close(&what, &got[j], &want[j], RTOL, atol(terms[j]));
            }
            let bits = got.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
            match &default_bits {
                None => default_bits = Some(bits),
                Some(d) => {
                    for (j, name) in ["y", "dx", "dw"].iter().enumerate() {
                        assert!(
                            d[j] == bits[j],
                            "{name} of tiles {tiles} differs from the default's bits, {s:?}"
                        );
                    }
                }
            }
        }
    }
}

/// y, dx and dw of one shape's three passes on the context's path and tiles.
fn run_passes(ctx: &GpuContext, s: &Conv2dShape, d: &Data) -> [Vec<f32>; 3] {
    let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d.x);
    let w = Tensor::from_f32(ctx, "w", &[s.weight_len()], &d.w);
    let dy = Tensor::from_f32(ctx, "dy", &[s.output_len()], &d.dy);
    let y = Tensor::zeros(ctx, "y", &[s.output_len()]);
    let dx = Tensor::zeros(ctx, "dx", &[s.input_len()]);
    let dw = Tensor::zeros(ctx, "dw", &[s.weight_len()]);
    let mut ops = vec![
        conv2d_forward(ctx, s, &x, &w, &y, None),
        conv2d_backward_data(ctx, s, &dy, &w, &dx, false),
    ];
    ops.extend(conv2d_backward_weights(ctx, s, &x, &dy, &dw, false, None));
    ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
    [y, dx, dw].map(|t| t.read_f32(ctx).unwrap())
}

#[test]
fn all_passes_are_bitwise_deterministic() {
    for path in ConvPath::ALL {
        check_deterministic(path);
    }
}

fn check_deterministic(path: ConvPath) {
    let Some(ctx) = &on_path(path, "all_passes_are_bitwise_deterministic") else {
        return;
    };
    // General and aligned entry points; several split-K chunks in the first.
    for s in [shape(5, (30, 31), 5, 6, 3, 1), shape(3, (16, 16), 16, 32, 3, 2)] {
        let d = data(&s, 1000);
        let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d.x);
        let w = Tensor::from_f32(ctx, "w", &[s.weight_len()], &d.w);
        let dy = Tensor::from_f32(ctx, "dy", &[s.output_len()], &d.dy);
        let run = || {
            let y = Tensor::zeros(ctx, "y", &[s.output_len()]);
            let dx = Tensor::zeros(ctx, "dx", &[s.input_len()]);
            let dw = Tensor::zeros(ctx, "dw", &[s.weight_len()]);
            let mut ops = vec![
                conv2d_forward(ctx, &s, &x, &w, &y, None),
                conv2d_backward_data(ctx, &s, &dy, &w, &dx, false),
            ];
            ops.extend(conv2d_backward_weights(ctx, &s, &x, &dy, &dw, false, None));
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            [y, dx, dw].map(|t| {
                t.read_f32(ctx)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<u32>>()
            })
        };
        let (a, b) = (run(), run());
        for (name, (a, b)) in ["y", "dx", "dw"].iter().zip(a.iter().zip(&b)) {
            assert!(a == b, "conv2d {name} differs between two runs for {path:?} {s:?}");
        }
    }
}

#[test]
fn forward_at_training_batch_size_512() {
    for path in ConvPath::ALL {
        check_forward_batch_512(path);
    }
}

fn check_forward_batch_512(path: ConvPath) {
    // 512 x 32 x 32 = 524,288 GEMM rows (a large dispatch; 1x1 keeps it ~1 GFLOP). Only a
    // sample of outputs is checked, against the reference evaluated at those positions.
    let Some(ctx) = &on_path(path, "forward_at_training_batch_size_512") else {
        return;
    };
    let s = shape(512, (32, 32), 32, 32, 1, 1);
    let d_x = random_vec(1100, s.input_len());
    let d_w = random_vec(1101, s.weight_len());
    let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d_x);
    let w = Tensor::from_f32(ctx, "w", &[s.weight_len()], &d_w);
    let y = Tensor::zeros(ctx, "y", &[s.output_len()]);
    ctx.run(&[&conv2d_forward(ctx, &s, &x, &w, &y, None)]).unwrap();
    let got = y.read_f32(ctx).unwrap();

    let len = s.output_len();
    // Evenly spread samples plus the last outputs (the final, highest-numbered tiles).
    let picks: Vec<usize> = (0..2000usize)
        .map(|i| i * (len / 2000) + i % s.out_c)
        .chain(len - 64..len)
        .collect();
    let w64 = to_f64(&d_w);
    let want: Vec<f64> = picks
        .iter()
        .map(|&i| cpu::conv2d_forward_at(&d_x, &w64, &s, i))
        .collect();
    let got: Vec<f32> = picks.iter().map(|&i| got[i]).collect();
    assert_close(
        &format!("conv2d forward, batch 512 sample, {path:?}"),
        &got,
        &want,
        RTOL,
        atol(s.in_c),
    );
}

#[test]
fn direct_path_takes_16_column_blocks_where_channels_allow() {
    // The `_wide` entry points need vec4 channels and 16 | the GEMM's columns (out_c for the
    // forward and weight gradient, in_c for the input gradient); the tests above run both kinds.
    use Conv2dKernel::*;
    let wide = |s: &Conv2dShape| {
        kernels(ConvPath::Direct, s).map(|k| {
            matches!(
                k,
                ForwardDirectWide | BackwardDataDirectWide | BackwardWeightsDirectWide
            )
        })
    };
    assert_eq!(wide(&shape(2, (8, 8), 32, 64, 3, 2)), [true, true, true]);
    assert_eq!(wide(&shape(2, (8, 8), 16, 12, 3, 1)), [false, true, false]);
    assert_eq!(wide(&shape(2, (8, 8), 12, 32, 3, 1)), [true, false, true]);
    assert_eq!(wide(&shape(2, (8, 8), 3, 16, 3, 1)), [false, false, false]);
}

#[test]
fn every_kernel_is_chosen_by_some_network_the_crate_builds() {
    // Applies the three plans on every path to every convolution of every network the crate
    // accepts (each width, each image side; one and two blocks per stage, since deeper networks
    // repeat those shapes): an entry point that no network selects is dead code to delete.
    use adamatch_wgpu::network::{Architecture, WideResNetConfig, MAX_IMAGE_SIZE, MAX_WIDTH};
    let mut reached = vec![Conv2dKernel::BackwardWeightsReduce];
    for depth in [10, 16] {
        for width in 1..=MAX_WIDTH {
            for image_size in 1..=MAX_IMAGE_SIZE {
                let config = WideResNetConfig {
                    depth,
                    width,
                    image_size,
                    ..WideResNetConfig::paper()
                };
                let arch = Architecture::new(&config).unwrap();
                for s in arch.conv_shapes(2) {
                    for path in ConvPath::ALL {
                        for k in kernels(path, &s) {
                            if !reached.contains(&k) {
                                reached.push(k);
                            }
                        }
                    }
                }
            }
        }
    }
    // The tiled path's only data-gradient kernel for output channels that are not whole K tiles:
    // no network has such a layer, but the public conv2d functions take any shape on every path,
    // and the tiled path is the only one browsers run.
    let kept_for_any_shape = [Conv2dKernel::BackwardDataGeneral];
    let unchosen: Vec<_> = Conv2dKernel::ALL
        .iter()
        .copied()
        .filter(|k| !reached.contains(k))
        .collect();
    assert_eq!(unchosen, kept_for_any_shape, "kernels that no network selects");
}

#[test]
fn every_kernel_is_run_by_the_reference_tests() {
    // The shapes of the reference tests, on the three paths, reach every entry point: no kernel
    // goes unchecked because no test shape selects it.
    let mut shapes = shapes();
    shapes.extend([shape(5, (30, 31), 5, 6, 3, 1), shape(3, (17, 19), 16, 32, 3, 1)]);
    let mut reached: Vec<Conv2dKernel> = Vec::new();
    for path in ConvPath::ALL {
        for s in &shapes {
            for k in kernels(path, s) {
                assert!(
                    k.path() == path || (path == ConvPath::Subgroup && k.path() == ConvPath::Direct),
                    "{path} path chose {k:?} for {s:?}"
                );
                reached.push(k);
            }
        }
    }
    reached.push(Conv2dKernel::BackwardWeightsReduce);
    let missed: Vec<_> = Conv2dKernel::ALL.iter().filter(|k| !reached.contains(k)).collect();
    assert!(missed.is_empty(), "no test shape selects {missed:?}");
}

#[test]
fn subgroup_path_is_bitwise_the_direct_path() {
    // The subgroup kernels share operands through broadcasts but sum in the direct path's order.
    // Ragged rows (not whole 16-row blocks, not whole subgroups of blocks), several column blocks,
    // stride 2 (four backward-data phases), 1x1, and several weight-gradient chunks.
    let test = "subgroup_path_is_bitwise_the_direct_path";
    let (Some(direct_ctx), Some(subgroup_ctx)) = (on_path(ConvPath::Direct, test), on_path(ConvPath::Subgroup, test))
    else {
        return;
    };
    let weight_kernels = std::cell::RefCell::new(Vec::new());
    for (i, s) in [
        shape(3, (5, 7), 16, 48, 3, 1),
        shape(2, (9, 8), 32, 16, 3, 2),
        shape(3, (9, 11), 16, 32, 3, 2),
        shape(2, (7, 7), 48, 32, 1, 2),
        shape(4, (17, 19), 16, 32, 3, 1),
        shape(2, (6, 5), 64, 16, 3, 1),
    ]
    .iter()
    .enumerate()
    {
        let d = data(s, 1400 + i as u64);
        let x = Tensor::from_f32(&direct_ctx, "x", &[s.input_len()], &d.x);
        let w = Tensor::from_f32(&direct_ctx, "w", &[s.weight_len()], &d.w);
        let dy = Tensor::from_f32(&direct_ctx, "dy", &[s.output_len()], &d.dy);
        let run = |ctx: &GpuContext| {
            let y = Tensor::zeros(ctx, "y", &[s.output_len()]);
            let dx = Tensor::zeros(ctx, "dx", &[s.input_len()]);
            let dw = Tensor::zeros(ctx, "dw", &[s.weight_len()]);
            let mut ops = vec![
                conv2d_forward(ctx, s, &x, &w, &y, Some(&dy)),
                conv2d_backward_data(ctx, s, &dy, &w, &dx, false),
            ];
            ops.extend(conv2d_backward_weights(ctx, s, &x, &dy, &dw, false, None));
            if ctx.profile.conv_path == ConvPath::Subgroup {
                // The ops run the plans' kernels, and the comparison is worth something only
                // where those are subgroup kernels (every shape's forward and data gradient).
                let planned = kernels(ConvPath::Subgroup, s);
                for (op, k) in ops.iter().zip(planned) {
                    assert!(
                        op.label.ends_with(k.entry_point()),
                        "{} for {s:?}: plan says {k:?}",
                        op.label
                    );
                }
                assert_eq!(planned[0].path(), ConvPath::Subgroup, "{s:?}");
                assert_eq!(planned[1].path(), ConvPath::Subgroup, "{s:?}");
                weight_kernels.borrow_mut().push(planned[2]);
            }
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            [y, dx, dw].map(|t| {
                t.read_f32(ctx)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<u32>>()
            })
        };
        let (direct, subgroup, again) = (run(&direct_ctx), run(&subgroup_ctx), run(&subgroup_ctx));
        for (name, (a, b)) in ["y", "dx", "dw"].iter().zip(direct.iter().zip(&subgroup)) {
            assert!(a == b, "conv2d {name}: subgroup path differs from direct for {s:?}");
        }
        assert!(subgroup == again, "subgroup path not deterministic for {s:?}");
    }
    // Both subgroup weight-gradient kernels and the direct fallback were among those compared.
    let weight_kernels = weight_kernels.into_inner();
    for k in [
        Conv2dKernel::BackwardWeightsTapsSubgroup,
        Conv2dKernel::BackwardWeightsSubgroup,
        Conv2dKernel::BackwardWeightsDirectWide,
    ] {
        assert!(weight_kernels.contains(&k), "no shape runs {k:?}: {weight_kernels:?}");
    }
}

#[test]
fn each_adapter_gets_its_path_and_cannot_be_forced_onto_one_it_cannot_run() {
    // (cpu, browser, subgroup size) -> the adapter's own path.
    for (cpu, browser, sg, want) in [
        (false, false, None, ConvPath::Tiled),
        (false, false, Some(8), ConvPath::Tiled),
        (true, false, Some(8), ConvPath::Subgroup),
        (true, false, Some(16), ConvPath::Direct),
        (true, false, None, ConvPath::Direct),
        (true, true, Some(8), ConvPath::Tiled),
        (false, true, None, ConvPath::Tiled),
    ] {
        let p = AdapterProfile::new(cpu, browser, sg);
        assert_eq!(p.conv_path, want, "cpu {cpu} browser {browser} subgroups {sg:?}");
        assert_eq!(ConvPath::for_adapter(&p), want);
        // Every adapter runs the tiled path.
        assert_eq!(p.with_conv_path(ConvPath::Tiled).unwrap().conv_path, ConvPath::Tiled);
    }
    let refused = |p: AdapterProfile, path: ConvPath| p.with_conv_path(path).unwrap_err().to_string();
    let e = refused(AdapterProfile::new(true, false, Some(16)), ConvPath::Subgroup);
    assert!(
        e.contains("'subgroup'") && e.contains("exactly 8 lanes") && e.contains("subgroups of 16"),
        "{e}"
    );
    let e = refused(AdapterProfile::new(false, false, None), ConvPath::Subgroup);
    assert!(e.contains("no fixed subgroup size"), "{e}");
    let e = refused(AdapterProfile::new(true, true, Some(8)), ConvPath::Direct);
    assert!(e.contains("'direct'") && e.contains("WebGPU"), "{e}");
    let gpu = AdapterProfile::new(false, false, None);
    assert_eq!(
        gpu.with_conv_path(ConvPath::Direct).unwrap().conv_path,
        ConvPath::Direct
    );
    // The names --conv-path and ADAMATCH_CONV_PATH take.
    for path in ConvPath::ALL {
        assert_eq!(path.name().parse::<ConvPath>(), Ok(path));
        assert_eq!(path.name().to_uppercase().parse::<ConvPath>(), Ok(path));
    }
    let e = "fast".parse::<ConvPath>().unwrap_err();
    assert!(e.contains("'fast'") && e.contains("tiled, direct or subgroup"), "{e}");
}

#[test]
fn the_pass_functions_run_the_contexts_path() {
    // A forced context's ops are its path's kernels: the plans are what runs.
    let s = shape(2, (16, 16), 16, 32, 3, 1);
    let x = Tensor::zeros(ctx(), "x", &[s.input_len()]);
    let w = Tensor::zeros(ctx(), "w", &[s.weight_len()]);
    let y = Tensor::zeros(ctx(), "y", &[s.output_len()]);
    let mut ran = Vec::new();
    for path in ConvPath::ALL {
        let Some(ctx) = &on_path(path, "the_pass_functions_run_the_contexts_path") else {
            continue;
        };
        let labels = [
            conv2d_forward(ctx, &s, &x, &w, &y, None).label,
            conv2d_backward_data(ctx, &s, &y, &w, &x, false).label,
            conv2d_backward_weights(ctx, &s, &x, &y, &w, false, None)[0]
                .label
                .clone(),
        ];
        for (label, kernel) in labels.iter().zip(kernels(path, &s)) {
            assert!(
                label.ends_with(&format!("::{}", kernel.entry_point())),
                "{path}: {label} is not {kernel:?}"
            );
            assert_eq!(kernel.path(), path, "{path}: {kernel:?} for {s:?}");
        }
        ran.push(labels);
    }
    // The paths run different kernels, so forcing one is never a no-op.
    for (i, a) in ran.iter().enumerate() {
        assert!(
            ran[i + 1..].iter().all(|b| a != b),
            "two paths ran the same kernels {a:?}"
        );
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    // L = sum(conv(x, w) * g) is linear in x and in w, so central differences are exact up to
    // rounding; this proves the reference's backward functions against its forward.
    for s in [
        shape(2, (4, 6), 2, 3, 3, 2),
        shape(1, (5, 5), 3, 2, 3, 1),
        shape(2, (5, 3), 2, 2, 1, 2),
    ] {
        let x = to_f64(&random_vec(1200, s.input_len()));
        let w = to_f64(&random_vec(1201, s.weight_len()));
        let g = to_f64(&random_vec(1202, s.output_len()));
        let loss =
            |x: &[f64], w: &[f64]| -> f64 { cpu::conv2d_forward(x, w, &s).iter().zip(&g).map(|(a, b)| a * b).sum() };
        let h = 1e-4;
        let dx = cpu::conv2d_backward_data(&g, &w, &s);
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp, &w) - loss(&xm, &w)) / (2.0 * h);
            assert!((fd - dx[i]).abs() < 1e-8, "dx[{i}] {s:?}: fd {fd} vs {}", dx[i]);
        }
        let dw = cpu::conv2d_backward_weights(&x, &g, &s);
        for i in 0..w.len() {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[i] += h;
            wm[i] -= h;
            let fd = (loss(&x, &wp) - loss(&x, &wm)) / (2.0 * h);
            assert!((fd - dw[i]).abs() < 1e-8, "dw[{i}] {s:?}: fd {fd} vs {}", dw[i]);
        }
        // The forward itself, at every position, agrees with the single-position form.
        let y = cpu::conv2d_forward(&x, &w, &s);
        for (i, v) in y.iter().enumerate() {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            assert!((cpu::conv2d_forward_at(&xf, &w, &s, i) - v).abs() < 1e-12);
        }
    }
}

/// One partial-sum scratch for several layers, as a network workspace holds it: larger than
/// either layer needs, filled with NaN beforehand, and reused by the second layer right after the
/// first. Each layer's dw must be bitwise what it is with a scratch of its own.
#[test]
fn backward_weights_share_one_scratch_across_layers() {
    for path in ConvPath::ALL {
        let Some(ctx) = &on_path(path, "backward_weights_share_one_scratch_across_layers") else {
            continue;
        };
        // Several split-K chunks in both; the second needs fewer partials than the first.
        let layers = [shape(5, (30, 31), 5, 6, 3, 1), shape(3, (16, 16), 16, 32, 3, 2)];
        let len = layers
            .iter()
            .map(|s| conv2d_backward_weights_scratch_len(ctx, s))
            .max()
            .unwrap()
            + 37;
        let scratch = Tensor::from_f32(ctx, "shared scratch", &[len], &vec![f32::NAN; len]);
        let mut shared_ops = Vec::new();
        let mut own_ops = Vec::new();
        let mut outputs = Vec::new();
        for (i, s) in layers.iter().enumerate() {
            let d = data(s, 1200 + i as u64);
            let x = Tensor::from_f32(ctx, "x", &[s.input_len()], &d.x);
            let dy = Tensor::from_f32(ctx, "dy", &[s.output_len()], &d.dy);
            let shared = Tensor::zeros(ctx, "dw shared", &[s.weight_len()]);
            let own = Tensor::zeros(ctx, "dw own", &[s.weight_len()]);
            shared_ops.extend(conv2d_backward_weights(ctx, s, &x, &dy, &shared, false, Some(&scratch)));
            own_ops.extend(conv2d_backward_weights(ctx, s, &x, &dy, &own, false, None));
            outputs.push((*s, shared, own));
        }
        ctx.run(&shared_ops.iter().chain(&own_ops).collect::<Vec<_>>()).unwrap();
        for (s, shared, own) in outputs {
            let bits = |t: &Tensor| t.read_f32(ctx).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&shared) == bits(&own),
                "{path:?} {s:?}: dw with the shared scratch differs from dw with its own"
            );
        }
    }
}

#[test]
fn autotuning_times_each_pass_once_and_reads_its_choices_back_from_the_cache() {
    use adamatch_wgpu::autotune::{adapter_key, key_text, tune_with_cache};
    use adamatch_wgpu::kernels::conv2d::ConvPass;
    use std::collections::BTreeMap;
    let Some(tiled) = on_path(ConvPath::Tiled, "autotuning_times_each_pass_once") else {
        return;
    };
    let ctx = &tiled.with_autotune(true);
    let dir = std::env::temp_dir().join(format!("adamatch-autotune-test-{}", std::process::id()));
    let path = dir.join("cache.json");
    let (a, b) = (shape(1, (5, 6), 8, 16, 3, 1), shape(1, (7, 8), 16, 16, 3, 3));
    let first = tune_with_cache(ctx, &[a, a], &ConvPass::ALL, &path).unwrap();
    assert_eq!((first.timed, first.cached), (3, 0), "one timing per pass of the shape");
    let clock = if ctx.timestamps { "gpu timestamps" } else { "wall clock" };
    assert_eq!(first.clock, clock, "timestamps where the device has them");
    let file: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for pass in ConvPass::ALL {
        let key = a.tune_key(pass);
        let tiles = ctx.tuned_tiles(&key).expect("tuned");
        assert!(ConvTiles::ALL.contains(&tiles));
        assert_eq!(ctx.conv_tiles_for(&key), tiles, "the plans take the tuned tiles");
        assert_eq!(file[&adapter_key(ctx)][&key_text(&key)], tiles.to_string());
        // Forced tiles win; without autotuning the default stays.
        assert_eq!(
            ctx.with_conv_tiles(ConvTiles::ALL[4]).conv_tiles_for(&key),
            ConvTiles::ALL[4]
        );
        assert_eq!(ctx.with_autotune(false).conv_tiles_for(&key), ConvTiles::DEFAULT);
    }
    let again = tune_with_cache(ctx, &[a], &ConvPass::ALL, &path).unwrap();
    assert_eq!((again.timed, again.cached), (0, 0), "tuned once per device");
    // An entry the cache holds for this adapter is taken without timing.
    let key = b.tune_key(ConvPass::Forward);
    let mut file = file;
    let pick = ConvTiles::ALL[4];
    file.get_mut(&adapter_key(ctx))
        .unwrap()
        .insert(key_text(&key), pick.to_string());
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    let cached = tune_with_cache(ctx, &[b], &[ConvPass::Forward], &path).unwrap();
    assert_eq!((cached.timed, cached.cached), (0, 1));
    assert_eq!(ctx.tuned_tiles(&key), Some(pick));
    // Without timestamps the wall clock times the candidates.
    let mut wall = ctx.clone();
    wall.timestamps = false;
    let c = shape(2, (5, 5), 8, 8, 3, 2);
    let by_wall = tune_with_cache(&wall, &[c], &[ConvPass::Forward], &path).unwrap();
    assert_eq!((by_wall.timed, by_wall.clock), (1, "wall clock"));
    assert!(wall.tuned_tiles(&c.tune_key(ConvPass::Forward)).is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
