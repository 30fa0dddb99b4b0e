//! What a task's model is, from its configuration alone (no data, no weights loaded): the sizes and per-example
//! costs `tram plan` sizes a run by. The task crates fill it in from a `config.json` (or a built-in copy of the
//! Hugging Face configuration a paper profile names); [`Stack`] holds the arithmetic of the transformer layers
//! GPT-2, BERT/XLM-R and ViT share.

/// A model's parameter counts and one example's costs, for one profile's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// The architecture and where its configuration came from.
    pub description: String,
    pub total_params: u64,
    pub trained_params: u64,
    /// Elements of the largest trained tensor (the embedding table when it trains): the step's temporaries of
    /// one tensor's size (a fresh gradient added to the kept one, the optimizer's update) are this big.
    pub largest_trained: u64,
    /// When the counts depend on the data (a vocabulary pruned to the tokens the data uses), what they assume.
    pub caveat: Option<String>,
    /// One example's costs, where the crate models its architecture's (`None`: not modelled).
    pub costs: Option<ExampleCosts>,
}

/// One example's compute and memory in a training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExampleCosts {
    /// FLOPs (2 per multiply-add) of one example's forward pass through what a training step runs.
    pub forward_flops: f64,
    /// FLOPs of one example's backward pass: the weight and input gradients of the trained part.
    pub backward_flops: f64,
    /// Elements autograd keeps for one example's backward (per forward with gradient), besides the attention
    /// matrices, the dropout masks and the output.
    pub activation_elements: f64,
    /// Elements of the dropout masks outside attention (residual dropouts) one example's forward keeps: a byte
    /// each on CUDA (a fused kernel's mask), an element of the activations' type on the CPU (libtorch's CPU
    /// dropout keeps its scaled noise as a tensor like its input).
    pub mask_elements: f64,
    /// Elements of one T×T attention matrix over every head and trained layer, for one example.
    pub attention_elements: f64,
    /// How the model computes attention: how many such matrices a forward keeps.
    pub attention: Attention,
    /// Elements of one example's output (the logits).
    pub output_elements: f64,
}

/// How a model computes attention, which decides how many T×T matrices autograd keeps per forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Softmax(Q·Kᵀ)·V written out: the softmax's output is kept, and with dropout its mask and output (the mask
    /// a byte per element on CUDA, a full element on the CPU).
    Unfused { dropout: bool },
    /// libtorch's `scaled_dot_product_attention`: fused kernels keep no T×T matrix on CUDA (and on the CPU without
    /// dropout); with dropout the CPU runs the unfused math.
    Sdpa { dropout: bool },
}

impl Attention {
    /// T×T matrices (in elements of the matrix) kept per forward with gradient. Measured on the CPU with
    /// `torch.autograd.graph.saved_tensors_hooks` for GPT-2's layer (`tools/plan_saved.py`): with dropout 3.0.
    pub fn kept_matrices(self, cuda: bool) -> f64 {
        let unfused = |dropout: bool| match (dropout, cuda) {
            (false, _) => 1.0,
            (true, true) => 2.25,
            (true, false) => 3.0,
        };
        match self {
            Attention::Unfused { dropout } => unfused(dropout),
            Attention::Sdpa { dropout } if dropout && !cuda => unfused(true),
            Attention::Sdpa { .. } => 0.0,
        }
    }
}

/// A stack of transformer layers with biased q, k, v, o projections, two LayerNorms and a two-matrix MLP
/// (GPT-2, BERT/XLM-R, ViT): `layers` of them, `trained` of which (the top ones) train, over `tokens` positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stack {
    pub layers: u64,
    pub trained: u64,
    pub hidden: u64,
    pub inner: u64,
    pub heads: u64,
    pub tokens: u64,
}

impl Stack {
    /// Parameters of one layer: q, k, v, o (d² + d each), the MLP (2·d·I + I + d) and two LayerNorms (2·d each).
    pub fn layer_params(&self) -> u64 {
        let (d, i) = (self.hidden, self.inner);
        4 * (d * d + d) + 2 * d * i + i + d + 4 * d
    }

    /// Layers a training step runs forward (with a cached frozen prefix only the trained ones).
    fn run(&self, cached_prefix: bool) -> u64 {
        if cached_prefix {
            self.trained
        } else {
            self.layers
        }
    }

    /// Forward FLOPs of one example through the layers a step runs: the projections' and the MLP's matrices,
    /// and the two attention products (Q·Kᵀ and A·V, counted whole even when causal).
    pub fn forward_flops(&self, cached_prefix: bool) -> f64 {
        let (d, i, t) = (self.hidden as f64, self.inner as f64, self.tokens as f64);
        self.run(cached_prefix) as f64 * (2.0 * t * (4.0 * d * d + 2.0 * d * i) + 4.0 * t * t * d)
    }

    /// Backward FLOPs of one example: twice the forward's for each trained layer (weight and input gradients).
    pub fn backward_flops(&self) -> f64 {
        let d = self.hidden as f64;
        let t = self.tokens as f64;
        let i = self.inner as f64;
        2.0 * self.trained as f64 * (2.0 * t * (4.0 * d * d + 2.0 * d * i) + 4.0 * t * t * d)
    }

    /// Elements autograd keeps per trained layer and token: each LayerNorm's input and output, q, k, v and the
    /// scaled q, the attention's output, the MLP's input to the activation and its output (an I-wide pair).
    pub fn activation_elements(&self) -> f64 {
        let (d, i) = (self.hidden as f64, self.inner as f64);
        self.trained as f64 * self.tokens as f64 * (9.0 * d + 2.0 * i)
    }

    /// Elements under the two residual dropouts' masks per trained layer and token (with hidden dropout).
    pub fn mask_elements(&self) -> f64 {
        self.trained as f64 * self.tokens as f64 * 2.0 * self.hidden as f64
    }

    /// One T×T matrix per head and trained layer.
    pub fn attention_elements(&self) -> f64 {
        (self.trained * self.heads * self.tokens * self.tokens) as f64
    }
}

/// A model's `config.json`: the folder's own when it has one, else the built-in copy of the Hugging Face
/// configuration whose name the folder's name is (a paper profile's placeholder such as `/path/to/gpt2-xl`), with
/// a phrase saying which was used.
pub fn config_json(dir: &std::path::Path, builtin: &[(&str, &str)]) -> crate::Result<(serde_json::Value, String)> {
    let path = dir.join("config.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let value =
            serde_json::from_str(&text).map_err(|e| crate::Error::Config(format!("{}: {e}", path.display())))?;
        return Ok((value, format!("config.json of {}", dir.display())));
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match builtin.iter().find(|(n, _)| *n == name) {
        Some((n, json)) => Ok((
            serde_json::from_str(json).expect("the built-in configurations are JSON"),
            format!("built-in Hugging Face configuration of {n} ({} has no config.json)", dir.display()),
        )),
        None => Err(crate::Error::Config(format!(
            "{} has no config.json, and its name is none of the built-in configurations ({})",
            dir.display(),
            builtin.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpt2_base_layer_has_its_published_size() {
        // 124,439,808 parameters in all (the Hub's gpt2): 12 layers, 50,257 × 768 tied embeddings, 1,024
        // positions, the final LayerNorm.
        let s = Stack { layers: 12, trained: 12, hidden: 768, inner: 3072, heads: 12, tokens: 1024 };
        assert_eq!(12 * s.layer_params() + 50_257 * 768 + 1024 * 768 + 2 * 768, 124_439_808);
    }

    #[test]
    fn a_gpt2_layer_keeps_what_autograd_was_measured_to_keep_on_the_cpu() {
        // tools/plan_saved.py: one GPT-2 base layer at 1,024 tokens saves 213.9 MB with dropout 0.1, 50.4 MB
        // without (PyTorch 2.11's CPU kernels, as tram's).
        let s = Stack { layers: 12, trained: 1, hidden: 768, inner: 3072, heads: 12, tokens: 1024 };
        let with = |dropout: bool| {
            let kept = Attention::Sdpa { dropout }.kept_matrices(false);
            let masks = if dropout { s.mask_elements() } else { 0.0 };
            4.0 * (s.activation_elements() + masks + kept * s.attention_elements()) / 1e6
        };
        assert!((with(true) / 213.9 - 1.0).abs() < 0.02, "{}", with(true));
        assert!((with(false) / 50.4 - 1.0).abs() < 0.07, "{}", with(false));
        // CUDA's fused attention keeps no T×T matrix; its unfused dropout a byte mask.
        assert_eq!(Attention::Sdpa { dropout: true }.kept_matrices(true), 0.0);
        assert_eq!(Attention::Unfused { dropout: true }.kept_matrices(true), 2.25);
    }
}
