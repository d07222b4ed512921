//! `validation.json`: ONNX Runtime against Candle on held-out images.

use serde::{Deserialize, Serialize};

/// JSON has no infinity or NaN: such a value is written as `null` and read back as
/// infinity (a difference too large to state, which fails any tolerance).
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// `validation.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    /// The ONNX file and the weights it was compared against.
    pub model: String,
    pub weights: String,
    /// Test images compared (the first of the test set).
    pub samples: usize,
    /// Absolute logit differences; `null` in the file when not finite (a runtime gave NaN
    /// or infinite logits), read back as infinity.
    #[serde(with = "finite_or_null")]
    pub max_abs_diff: f64,
    #[serde(with = "finite_or_null")]
    pub mean_abs_diff: f64,
    /// Fraction of images whose top-1 class is the same in both.
    pub top1_agreement: f64,
    pub ort_accuracy: f64,
    pub candle_accuracy: f64,
    /// The pipeline's tolerances.
    pub max_abs_diff_allowed: f64,
    pub min_top1_agreement: f64,
    pub passed: bool,
    pub ort_version: String,
}
