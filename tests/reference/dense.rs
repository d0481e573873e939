//! Fully connected layer, Keras layout: x [rows, in_f], w [in_f, out_f], b [out_f].

/// y = x w + b.
pub fn dense_forward(x: &[f64], w: &[f64], b: &[f64], rows: usize, in_f: usize, out_f: usize) -> Vec<f64> {
    assert_eq!(x.len(), rows * in_f);
    assert_eq!(w.len(), in_f * out_f);
    assert_eq!(b.len(), out_f);
    let mut y = vec![0.0; rows * out_f];
    for r in 0..rows {
        for o in 0..out_f {
            let mut acc = b[o];
            for i in 0..in_f {
                acc += x[r * in_f + i] * w[i * out_f + o];
            }
            y[r * out_f + o] = acc;
        }
    }
    y
}

/// (dx, dw, db) = (dy w^T, x^T dy, column sums of dy).
pub fn dense_backward(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    rows: usize,
    in_f: usize,
    out_f: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(x.len(), rows * in_f);
    assert_eq!(w.len(), in_f * out_f);
    assert_eq!(dy.len(), rows * out_f);
    let mut dx = vec![0.0; rows * in_f];
    let mut dw = vec![0.0; in_f * out_f];
    let mut db = vec![0.0; out_f];
    for r in 0..rows {
        for o in 0..out_f {
            let g = dy[r * out_f + o];
            db[o] += g;
            for i in 0..in_f {
                dx[r * in_f + i] += g * w[i * out_f + o];
                dw[i * out_f + o] += x[r * in_f + i] * g;
            }
        }
    }
    (dx, dw, db)
}
