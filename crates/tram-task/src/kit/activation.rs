//! The activation a Hugging Face `config.json` names (`hidden_act`, GPT-2's `activation_function`): one enum for
//! every model of the task crates, each spelling transformers accepts for the same function as a serde alias.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// An activation function of a transformer's feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU (erf): `"gelu"` (BERT, XLM-R, ViT).
    Gelu,
    /// GELU's tanh approximation: GPT-2's `"gelu_new"`, also spelled `"gelu_pytorch_tanh"` and `"gelu_fast"`.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    Relu,
    /// SiLU (`"silu"` or `"swish"`): the gate of Llama's SwiGLU.
    #[serde(alias = "swish")]
    Silu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_and_the_canonical_one_is_written() {
        let read = |s: &str| serde_json::from_str::<Activation>(&format!("\"{s}\""));
        for (spelling, act) in [
            ("gelu", Activation::Gelu),
            ("gelu_new", Activation::GeluTanh),
            ("gelu_pytorch_tanh", Activation::GeluTanh),
            ("gelu_fast", Activation::GeluTanh),
            ("relu", Activation::Relu),
            ("silu", Activation::Silu),
            ("swish", Activation::Silu),
        ] {
            assert_eq!(read(spelling).unwrap(), act, "{spelling}");
        }
        assert_eq!(serde_json::to_string(&Activation::GeluTanh).unwrap(), "\"gelu_new\"");
        let err = read("tanh").unwrap_err().to_string();
        assert!(err.contains("unknown variant `tanh`"), "{err}");
    }
}
