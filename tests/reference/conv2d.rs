//! 2D convolution, direct loops in f64. NHWC activations, HWIO weights, no bias, TensorFlow
//! "SAME" padding, computed here from its definition (not with the library's helpers):
//! out = ceil(in / stride), total pad = max((out - 1) * stride + k - in, 0), top = total / 2.

use adamatch_wgpu::kernels::conv2d::Conv2dShape;

/// Output size and padding before (top/left) along one spatial axis.
pub fn same_geometry(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let needed = (out - 1) * stride + kernel;
    let total = needed.saturating_sub(input);
    (out, total / 2)
}

/// Every (output position, tap, input position) triple that carries a weight, as flat indices:
/// calls `f(y_pixel, w_tap, x_pixel)` where y_pixel indexes `[N, Ho, Wo]`, w_tap `[KH, KW]` and
/// x_pixel `[N, H, W]`.
fn for_each_connection(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (ho, pt) = same_geometry(s.in_h, s.kernel, s.stride);
    let (wo, pl) = same_geometry(s.in_w, s.kernel, s.stride);
    for n in 0..s.batch {
        for oh in 0..ho {
            for ow in 0..wo {
                for kh in 0..s.kernel {
                    for kw in 0..s.kernel {
                        let ih = (oh * s.stride + kh) as isize - pt as isize;
                        let iw = (ow * s.stride + kw) as isize - pl as isize;
                        if ih < 0 || iw < 0 || ih >= s.in_h as isize || iw >= s.in_w as isize {
                            continue;
                        }
                        let y_pix = (n * ho + oh) * wo + ow;
                        let tap = kh * s.kernel + kw;
                        let x_pix = (n * s.in_h + ih as usize) * s.in_w + iw as usize;
                        f(y_pix, tap, x_pix);
                    }
                }
            }
        }
    }
}

/// y[n, oh, ow, co] = sum over kh, kw, ci of x[n, oh*s + kh - pt, ow*s + kw - pl, ci] * w[kh, kw, ci, co].
pub fn conv2d_forward(x: &[f64], w: &[f64], s: &Conv2dShape) -> Vec<f64> {
    let (ho, _) = same_geometry(s.in_h, s.kernel, s.stride);
    let (wo, _) = same_geometry(s.in_w, s.kernel, s.stride);
    let (ci_n, co_n) = (s.in_c, s.out_c);
    let mut y = vec![0.0; s.batch * ho * wo * co_n];
    for_each_connection(s, |yp, tap, xp| {
        for ci in 0..ci_n {
            let xv = x[xp * ci_n + ci];
            let wrow = &w[(tap * ci_n + ci) * co_n..][..co_n];
            for (o, wv) in y[yp * co_n..][..co_n].iter_mut().zip(wrow) {
                *o += xv * wv;
            }
        }
    });
    y
}

/// dx = the gradient of sum(y * dy) with respect to x.
pub fn conv2d_backward_data(dy: &[f64], w: &[f64], s: &Conv2dShape) -> Vec<f64> {
    let (ci_n, co_n) = (s.in_c, s.out_c);
    let mut dx = vec![0.0; s.batch * s.in_h * s.in_w * ci_n];
    for_each_connection(s, |yp, tap, xp| {
        let g = &dy[yp * co_n..][..co_n];
        for ci in 0..ci_n {
            let wrow = &w[(tap * ci_n + ci) * co_n..][..co_n];
            dx[xp * ci_n + ci] += g.iter().zip(wrow).map(|(a, b)| a * b).sum::<f64>();
        }
    });
    dx
}

/// dw = the gradient of sum(y * dy) with respect to w.
pub fn conv2d_backward_weights(x: &[f64], dy: &[f64], s: &Conv2dShape) -> Vec<f64> {
    let (ci_n, co_n) = (s.in_c, s.out_c);
    let mut dw = vec![0.0; s.kernel * s.kernel * ci_n * co_n];
    for_each_connection(s, |yp, tap, xp| {
        let g = &dy[yp * co_n..][..co_n];
        for ci in 0..ci_n {
            let xv = x[xp * ci_n + ci];
            for (d, gv) in dw[(tap * ci_n + ci) * co_n..][..co_n].iter_mut().zip(g) {
                *d += xv * gv;
            }
        }
    });
    dw
}

/// The forward output at one flat index of y only (for spot checks on large shapes, where
/// converting all of x to f64 would be wasteful: x may be f32 or f64).
pub fn conv2d_forward_at<T: Copy + Into<f64>>(x: &[T], w: &[f64], s: &Conv2dShape, index: usize) -> f64 {
    let (ho, pt) = same_geometry(s.in_h, s.kernel, s.stride);
    let (wo, pl) = same_geometry(s.in_w, s.kernel, s.stride);
    let co = index % s.out_c;
    let pix = index / s.out_c;
    let (ow, oh, n) = (pix % wo, (pix / wo) % ho, pix / (wo * ho));
    let mut acc = 0.0;
    for kh in 0..s.kernel {
        for kw in 0..s.kernel {
            let ih = (oh * s.stride + kh) as isize - pt as isize;
            let iw = (ow * s.stride + kw) as isize - pl as isize;
            if ih < 0 || iw < 0 || ih >= s.in_h as isize || iw >= s.in_w as isize {
                continue;
            }
            let xp = (n * s.in_h + ih as usize) * s.in_w + iw as usize;
            for ci in 0..s.in_c {
                acc += x[xp * s.in_c + ci].into() * w[((kh * s.kernel + kw) * s.in_c + ci) * s.out_c + co];
            }
        }
    }
    acc
}
