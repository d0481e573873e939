//! `ConfigOverrides`, the one table of settings that `train`'s flags and the page's options both
//! are: the page's camelCase names reach the same fields, and bad values are refused by name.

use adamatch_wgpu::train::config::{Algorithm, TrainConfig, ViewSet};
use adamatch_wgpu::train::overrides::ConfigOverrides;

fn from_page(json: &str) -> Result<ConfigOverrides, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

#[test]
fn page_options_set_the_fields_the_flags_set() {
    let o = from_page(
        r#"{"preset": "tiny", "steps": 7, "algorithm": "source-only", "bnCalibration": 0,
            "invert": "all", "recolor": "strong", "evalLimit": "all", "imageSize": 16, "tau": 0.8}"#,
    )
    .unwrap();
    let c = o.config("paper").unwrap();
    let tiny = TrainConfig::preset("tiny").unwrap();
    assert_eq!(c.preset, "tiny");
    assert_eq!(c.steps, 7);
    assert_eq!(c.algorithm, Algorithm::SourceOnly);
    assert_eq!(c.bn_calibration, 0);
    assert_eq!(c.invert, ViewSet::All);
    assert_eq!(c.recolor, ViewSet::Strong);
    assert_eq!(tiny.recolor, ViewSet::None);
    assert_eq!(c.eval_limit, None);
    assert_eq!(c.network.image_size, 16);
    assert_eq!(c.tau, 0.8);
    // What was not given keeps the preset's value.
    assert_eq!((c.batch, c.uratio, c.lr), (tiny.batch, tiny.uratio, tiny.lr));
    let counted = from_page(r#"{"evalLimit": 50}"#).unwrap().config("tiny").unwrap();
    assert_eq!(counted.eval_limit, Some(50));
}

#[test]
fn unknown_options_and_bad_values_are_refused_by_name() {
    let unknown = from_page(r#"{"stepz": 3}"#).unwrap_err();
    assert!(unknown.contains("unknown field `stepz`"), "{unknown}");
    let flag_spelling = from_page(r#"{"bn_calibration": 3}"#).unwrap_err();
    assert!(
        flag_spelling.contains("unknown field `bn_calibration`"),
        "{flag_spelling}"
    );
    let algorithm = from_page(r#"{"algorithm": "magic"}"#).unwrap_err();
    assert!(algorithm.contains("unknown variant `magic`"), "{algorithm}");
    let limit = from_page(r#"{"evalLimit": "some"}"#).unwrap_err();
    assert!(limit.contains("\"all\""), "{limit}");
    // Values that deserialize but that `train` refuses are refused by the same check.
    let zero = from_page(r#"{"steps": 0}"#).unwrap().config("tiny").unwrap_err();
    assert!(format!("{zero:#}").contains("--steps"), "{zero:#}");
}

#[test]
fn the_source_phase_keeps_the_preset_share_of_the_steps_unless_given() {
    let tiny = TrainConfig::preset("tiny").unwrap();
    assert!(tiny.source_steps > 0 && tiny.source_steps < tiny.steps);
    let page = |json: &str| from_page(json).unwrap().config("tiny");
    // --steps alone: the preset's share (tiny: 600 of 1600), rounded down.
    let scaled = page(r#"{"steps": 800}"#).unwrap();
    assert_eq!(scaled.source_steps, tiny.source_steps * 800 / tiny.steps);
    assert_eq!(page(r#"{"steps": 1}"#).unwrap().source_steps, 0);
    let given = page(r#"{"steps": 800, "sourceSteps": 100}"#).unwrap();
    assert_eq!((given.steps, given.source_steps), (800, 100));
    assert_eq!(page(r#"{"sourceSteps": 0}"#).unwrap().source_steps, 0);
    // The paper's runs adapt from the start.
    assert_eq!(from_page("{}").unwrap().config("paper").unwrap().source_steps, 0);
    let too_many = page(r#"{"steps": 800, "sourceSteps": 800}"#).unwrap_err();
    let text = format!("{too_many:#}");
    assert!(
        text.contains("--source-steps 800") && text.contains("--steps 800"),
        "{text}"
    );
}

#[test]
fn labeled_target_images_join_the_adaptation_phase_only() {
    let mut c = from_page(r#"{"steps": 800}"#).unwrap().config("tiny").unwrap();
    c.labeled_target_batch = c.batch;
    assert!(c.source_steps > 0);
    assert_eq!(c.phase_at(0).cfg.labeled_target_batch, 0);
    assert_eq!(c.phase_at(c.source_steps - 1).cfg.labeled_target_batch, 0);
    assert_eq!(c.phase_at(c.source_steps).cfg.labeled_target_batch, c.batch);
    // Without a source phase the labeled images are there from the first step.
    c.source_steps = 0;
    assert_eq!(c.phase_at(0).cfg.labeled_target_batch, c.batch);
}

#[test]
fn the_source_phase_can_have_its_own_polarity() {
    let c = from_page(r#"{"steps": 800, "sourcePhaseInvert": "all"}"#)
        .unwrap()
        .config("tiny")
        .unwrap();
    assert_eq!(c.phase_at(0).cfg.invert, ViewSet::All);
    assert_eq!(c.phase_at(c.source_steps - 1).cfg.invert, ViewSet::All);
    assert_eq!(c.phase_at(c.source_steps).cfg.invert, ViewSet::None);
    let none = from_page(r#"{"sourceSteps": 0, "sourcePhaseInvert": "all"}"#)
        .unwrap()
        .config("tiny")
        .unwrap_err();
    assert!(format!("{none:#}").contains("--source-phase-invert"), "{none:#}");
}
