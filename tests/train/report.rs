//! What a run reports about its target without labels.

use adamatch_wgpu::train::eval::EvalResult;

fn unlabeled(classes: &[&str], predicted: Vec<u64>) -> EvalResult {
    EvalResult {
        images: predicted.iter().sum::<u64>() as usize,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        labeled: false,
        accuracy: None,
        per_class: None,
        confusion: None,
        predicted,
        mean_confidence: 0.5,
        threshold: None,
        mask_rate: None,
    }
}

#[test]
fn predicted_share_distance_is_the_total_variation_of_the_class_shares() {
    let abc = ["a", "b", "c"];
    let d = |x: Vec<u64>, y: Vec<u64>| unlabeled(&abc, x).predicted_share_distance(&unlabeled(&abc, y));
    // Shares (1/2, 1/2, 0) against (0, 1/2, 1/2): half of 1/2 + 0 + 1/2.
    assert_eq!(d(vec![1, 1, 0], vec![0, 1, 1]), Some(0.5));
    // Shares, not counts: twice the images in the same proportions are no distance.
    assert_eq!(d(vec![4, 2, 2], vec![2, 1, 1]), Some(0.0));
    // Disjoint predictions are as far apart as can be; symmetric in its arguments.
    assert_eq!(d(vec![3, 0, 0], vec![0, 5, 2]), Some(1.0));
    let (x, y) = (vec![7, 2, 1], vec![3, 3, 4]);
    let want = 0.5 * ((0.7f64 - 0.3).abs() + (0.2f64 - 0.3).abs() + (0.1f64 - 0.4).abs());
    let got = d(x.clone(), y.clone()).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} against {want}");
    assert_eq!(d(y, x), Some(got));
    // No distance between results that predicted nothing or name other classes.
    assert_eq!(d(vec![0, 0, 0], vec![1, 0, 0]), None);
    let other = unlabeled(&["a", "b", "d"], vec![1, 1, 1]);
    assert_eq!(unlabeled(&abc, vec![1, 1, 1]).predicted_share_distance(&other), None);
}
