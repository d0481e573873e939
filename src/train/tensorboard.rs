//! TensorBoard event files: every scalar of `metrics.jsonl` as it is written, and the run's
//! resolved configuration as text, in the run directory's [`EVENTS_FILE`], so that
//! `tensorboard --logdir runs/` compares runs.
//!
//! The file is TFRecord framing (length, masked CRC-32C of the length, the record, masked
//! CRC-32C of the record) around `tensorflow.Event` protobufs (`tensorflow/core/util/event.proto`
//! and `summary.proto`; prost writes the wire format). A resumed run keeps the records of the
//! steps its checkpoint holds and drops the rest (and a record torn by a kill), as
//! `metrics.jsonl` is cut back, so no step is logged twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;
use serde_json::Value;

pub use super::record::EVENTS_FILE;

/// The tag of the configuration's text summary.
pub const CONFIG_TAG: &str = "config";

/// The scalars of one `metrics.jsonl` record, tagged by their path: `train/<field>` for a train
/// line's numbers (its `metrics` flattened, and `images_per_s`), `eval/source/<field>` and
/// `eval/target/<field>` for an evaluation's. Lists (per-class accuracies, confusion matrices,
/// histograms), strings and flags are not scalars; `step` is the event's step.
pub fn scalars(record: &Value) -> Vec<(String, f32)> {
    let kind = record["kind"].as_str().unwrap_or("record");
    let mut out = Vec::new();
    if let Some(fields) = record.as_object() {
        for (key, value) in fields {
            if key == "step" || key == "kind" {
                continue;
            }
            // A train line's metrics sit under `metrics`; their tags leave that level out.
            let prefix = if kind == "train" && key == "metrics" {
                kind.to_string()
            } else {
                format!("{kind}/{key}")
            };
            flatten(&prefix, value, &mut out);
        }
    }
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, f32)>) {
    match value {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x as f32));
            }
        }
        Value::Object(fields) => {
            for (key, v) in fields {
                if key != "step" {
                    flatten(&format!("{prefix}/{key}"), v, out);
                }
            }
        }
        _ => {}
    }
}

/// A run's event file, appended as the run goes.
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// The event file of the run in `dir`: for a new run, a fresh file with the version record
    /// and `config` (the resolved configuration) as text; for a run resumed at `step`, the
    /// existing file with only the records of steps up to `step` kept (a fresh one when there is
    /// none).
    pub fn open(dir: &Path, resumed_at: Option<u64>, config: &str) -> Result<EventLog> {
        let path = dir.join(EVENTS_FILE);
        let kept = match resumed_at {
            Some(step) if path.exists() => {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let events: Vec<Vec<u8>> = read_records(&bytes)
                    .into_iter()
                    .filter(|r| Event::decode(r.as_slice()).is_ok_and(|e| e.step as u64 <= step))
                    .collect();
                Some(events)
            }
            _ => None,
        };
        let records = kept.unwrap_or_else(|| {
            vec![
                Event {
                    wall_time: wall_time(),
                    file_version: Some("brain.Event:2".into()),
                    ..Default::default()
                }
                .encode_to_vec(),
                text_event(CONFIG_TAG, config).encode_to_vec(),
            ]
        });
        let bytes: Vec<u8> = records.iter().flat_map(|r| frame(r)).collect();
        crate::files::write_atomically(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(EventLog { path })
    }

    /// Appends the scalars of a `metrics.jsonl` record at its step.
    pub fn append(&self, record: &Value) -> Result<()> {
        let step = record["step"].as_u64().unwrap_or(0) as i64;
        let value = scalars(record)
            .into_iter()
            .map(|(tag, v)| SummaryValue {
                tag,
                simple_value: Some(v),
                ..Default::default()
            })
            .collect();
        let event = Event {
            wall_time: wall_time(),
            step,
            summary: Some(Summary { value }),
            ..Default::default()
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&frame(&event.encode_to_vec()))
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Seconds since the Unix epoch (the events' `wall_time`).
fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A text summary at step 0 (TensorBoard's text plugin: a string tensor).
fn text_event(tag: &str, text: &str) -> Event {
    // Markdown: a code block keeps the JSON's layout.
    let markdown = format!("```\n{text}\n```");
    let value = SummaryValue {
        tag: tag.into(),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "text".into(),
                content: Vec::new(),
            }),
        }),
        tensor: Some(TfTensor {
            dtype: DT_STRING,
            tensor_shape: Some(TfTensorShape {}),
            string_val: vec![markdown.into_bytes()],
        }),
        ..Default::default()
    };
    Event {
        wall_time: wall_time(),
        summary: Some(Summary { value: vec![value] }),
        ..Default::default()
    }
}

/// CRC-32C as TFRecord stores it: rotated and offset ("masked").
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, the data's masked CRC.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of a TFRecord file, up to the first one that is torn or fails its checksums.
pub fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 12 {
        let len_bytes = &bytes[at..at + 8];
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        if crc != masked_crc(len_bytes) {
            break;
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let start = at + 12;
        let Some(end) = start.checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            break;
        };
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
        if crc != masked_crc(&bytes[start..end]) {
            break;
        }
        out.push(bytes[start..end].to_vec());
        at = end + 4;
    }
    out
}

/// The events of a file written by [`EventLog`] (for tests and tools).
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_records(&bytes)
        .iter()
        .map(|r| Event::decode(r.as_slice()).with_context(|| format!("{}: not an Event record", path.display())))
        .collect()
}

// The messages of event.proto and summary.proto this file writes, with their field numbers.

const DT_STRING: i32 = 7;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TfTensor>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorflow.TensorProto`, as far as a string scalar needs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfTensor {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TfTensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` with no dimensions: a scalar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfTensorShape {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_or_corrupt_one_ends_the_file() {
        let records: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]];
        let mut bytes: Vec<u8> = records.iter().flat_map(|r| frame(r)).collect();
        assert_eq!(read_records(&bytes), records);
        let whole = bytes.len();
        bytes.extend_from_slice(&frame(b"torn")[..10]);
        assert_eq!(read_records(&bytes), records, "a torn last record is dropped");
        bytes.truncate(whole);
        bytes[whole - 5] ^= 1;
        assert_eq!(
            read_records(&bytes),
            records[..2].to_vec(),
            "a record failing its CRC ends the file"
        );
    }

    #[test]
    #[allow(clippy::manual_rotate)] // TensorFlow's formula, as it writes it
    fn the_masked_crc_is_tensorflows() {
        // CRC-32C("123456789") = 0xE3069283 (the check value); masked as TensorFlow's
        // crc32c::Mask does: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
        let crc: u32 = 0xE306_9283;
        let masked = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"123456789"), masked);
    }

    #[test]
    fn scalars_are_the_numbers_of_a_record_by_path() {
        let train = serde_json::json!({"kind": "train", "step": 5, "images_per_s": 12.5, "phase": "adamatch",
            "metrics": {"step": 5, "total_loss": 1.5, "lr": 0.03, "non_finite": false, "align_ratio_min": null}});
        let mut s = scalars(&train);
        s.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            s,
            vec![
                ("train/images_per_s".to_string(), 12.5),
                ("train/lr".to_string(), 0.03),
                ("train/total_loss".to_string(), 1.5)
            ]
        );
        let eval = serde_json::json!({"kind": "eval", "step": 10, "phase": "adamatch",
            "source": {"accuracy": 0.9, "per_class": [0.8, 1.0], "labeled": true, "mean_confidence": 0.7},
            "target": {"mean_confidence": 0.6, "mask_rate": 0.4, "predicted": [3, 4]}});
        let mut s = scalars(&eval);
        s.sort_by(|a, b| a.0.cmp(&b.0));
        let tags: Vec<&str> = s.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            [
                "eval/source/accuracy",
                "eval/source/mean_confidence",
                "eval/target/mask_rate",
                "eval/target/mean_confidence"
            ]
        );
    }
}
