//! Named hook points in the residual stream, and what a caller asks to capture.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Where in a layer a value can be read or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// The layer's input (for layer 0: the scaled embedding).
    ResidPre,
    /// The attention block's raw output, before any post-norm (Gemma 2/3); for other families
    /// the same as [`HookPoint::AttnOut`].
    AttnRaw,
    /// What the attention block adds to the stream.
    AttnOut,
    /// After the attention add.
    ResidMid,
    /// The MLP's raw output, before any post-norm.
    MlpRaw,
    /// What the MLP adds to the stream.
    MlpOut,
    /// The per-layer block's raw output, before its norm (Gemma 4's E models).
    PerLayerRaw,
    /// What the per-layer block adds to the stream (after the MLP's add).
    PerLayerOut,
    /// The layer's output (= the next layer's `resid_pre`).
    ResidPost,
    /// The final norm's output, which the head reads (layer index: the number of layers).
    FinalNorm,
}

impl HookPoint {
    /// The residual-stream points that probe captures by default.
    pub const STREAMS: [HookPoint; 3] = [HookPoint::ResidPre, HookPoint::ResidMid, HookPoint::ResidPost];

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::ResidPre => "resid_pre",
            HookPoint::AttnRaw => "attn_raw",
            HookPoint::AttnOut => "attn_out",
            HookPoint::ResidMid => "resid_mid",
            HookPoint::MlpRaw => "mlp_raw",
            HookPoint::MlpOut => "mlp_out",
            HookPoint::PerLayerRaw => "ple_raw",
            HookPoint::PerLayerOut => "ple_out",
            HookPoint::ResidPost => "resid_post",
            HookPoint::FinalNorm => "final_norm",
        }
    }

    /// Parse a name (`pre`, `mid`, `post` are accepted for the residual streams).
    pub fn parse(name: &str) -> Option<HookPoint> {
        Some(match name.trim() {
            "resid_pre" | "pre" => HookPoint::ResidPre,
            "attn_raw" => HookPoint::AttnRaw,
            "attn_out" | "attn" => HookPoint::AttnOut,
            "resid_mid" | "mid" => HookPoint::ResidMid,
            "mlp_raw" => HookPoint::MlpRaw,
            "mlp_out" | "mlp" => HookPoint::MlpOut,
            "ple_raw" => HookPoint::PerLayerRaw,
            "ple_out" | "ple" => HookPoint::PerLayerOut,
            "resid_post" | "post" => HookPoint::ResidPost,
            "final_norm" => HookPoint::FinalNorm,
            _ => return None,
        })
    }
}

/// What to capture: which points at which layers, at which token positions counted from the
/// end of each (left-padded) prompt: `1` is the last token, `3` the third from last.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CaptureSpec {
    /// Hook points.
    pub points: Vec<HookPoint>,
    /// Layers.
    pub layers: Vec<usize>,
    /// Positions from the end (1 = last), in the order they are returned.
    pub from_end: Vec<usize>,
    /// Also record, at these layers and positions, the experts each sparse layer's router
    /// chose ([`Captures::routes`]); dense layers record nothing.
    pub routing: bool,
}

impl CaptureSpec {
    /// Whether anything at `layer` is wanted.
    pub fn wants_layer(&self, layer: usize) -> bool {
        self.layers.contains(&layer)
    }

    /// The last layer anyone needs (forward can stop after it).
    pub fn last_layer(&self) -> Option<usize> {
        self.layers.iter().copied().max()
    }
}

/// The experts a sparse layer's router chose for a batch: `[row][position][k]`, each token's
/// top k best first, positions in [`CaptureSpec::from_end`] order.
pub type Routes = Vec<Vec<Vec<usize>>>;

/// Captured values: `[batch, positions, hidden]` f32 tensors by point and layer.
#[derive(Debug, Default)]
pub struct Captures {
    /// The values.
    pub values: HashMap<(HookPoint, usize), Tensor>,
    /// The router's choices by sparse layer, where [`CaptureSpec::routing`] asks for them.
    pub routes: HashMap<usize, Routes>,
}

impl Captures {
    /// The capture at a point and layer.
    pub fn get(&self, point: HookPoint, layer: usize) -> Option<&Tensor> {
        self.values.get(&(point, layer))
    }
}
