//! Input scaling from u8 pixels to the network's f32 input (REFERENCE.md, "Network").

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How u8 pixels become network inputs. Recorded in every weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum InputScale {
    /// (x - 127.5) / 128, as the AdaMatch paper's code.
    Paper,
    /// x / 255, as the Keras example's Rescaling layer.
    #[cfg_attr(not(target_arch = "wasm32"), value(alias = "keras-example"))]
    Keras,
}

impl InputScale {
    pub fn parse(s: &str) -> Result<InputScale> {
        match s {
            "paper" => Ok(InputScale::Paper),
            "keras" | "keras-example" => Ok(InputScale::Keras),
            _ => bail!("unknown input scale '{s}': expected paper or keras"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            InputScale::Paper => "paper",
            InputScale::Keras => "keras",
        }
    }

    pub fn apply(self, x: u8) -> f32 {
        match self {
            InputScale::Paper => (x as f32 - 127.5) / 128.0,
            InputScale::Keras => x as f32 / 255.0,
        }
    }

    /// Scales a whole u8 NHWC batch.
    pub fn scale(self, pixels: &[u8]) -> Vec<f32> {
        pixels.iter().map(|&x| self.apply(x)).collect()
    }
}
