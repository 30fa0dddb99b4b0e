//! The embedded model, SmolLM2-135M-Instruct from its Q4_1 GGUF (needs `bash tools/assets.sh lm`), against
//! transformers 5.24 loading the same GGUF (fixture from `reference/lm_fixtures.py --smollm2`): token ids of
//! the tokenizer built from the GGUF metadata, and the float32 forward on three sentences.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};
use tram_text::causal_lm::{ModelSource, PretrainedLm};

/// Two float32 implementations of the same weights differ by summation order at most: measured here (2-core
/// x86 CPU, libtorch 2.11) max |Δ| = 0 (bit-identical) on logits of magnitude ~20. 1e-4 leaves room for other
/// CPUs' kernels and still fails on any real mistake (a wrong permutation or norm moves logits by whole units).
const LOGIT_TOL: f64 = 1e-4;

#[test]
fn smollm2_matches_transformers_on_the_same_gguf() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm");
    let start = Instant::now();
    let lm = PretrainedLm::load(&ModelSource::Smollm2, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    println!("loaded and dequantized in {:.2} s: {}", start.elapsed().as_secs_f64(), lm.description);
    assert_eq!((lm.decoder.num_layers(), lm.decoder.hidden_size(), lm.decoder.vocab_size()), (30, 576, 49152));
    assert_eq!(lm.separator, 0, "<|endoftext|> separates documents");

    // Token ids: punctuation, digits, whitespace runs, Unicode, code, ChatML specials.
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("smollm2-tokens.json")).unwrap()).unwrap();
    let sentences = tokens["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 6);
    for (s, ids) in sentences.iter().zip(tokens["ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(lm.tokenizer.encode(s.as_str().unwrap(), false).unwrap(), want, "{s}");
    }

    let e: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixtures.join("smollm2-expected.safetensors")).unwrap().into_iter().collect();
    let probe = &e["probe_ids"];
    let (mut worst_logit, mut worst_nll) = (0f64, 0f64);
    for k in 0..3 {
        let ids = e[&format!("s{k}.ids")].unsqueeze(0);
        let logits = tch::no_grad(|| lm.decoder.forward(&ids, false)).get(0);
        let lse = logits.logsumexp([-1], false);
        let t = ids.size()[1];
        let next = ids.get(0).narrow(0, 1, t - 1).unsqueeze(1);
        let nll = lse.narrow(0, 0, t - 1) - logits.narrow(0, 0, t - 1).gather(1, &next, false).squeeze_dim(1);
        let d = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        worst_logit = worst_logit
            .max(d(&logits.index_select(1, probe), &e[&format!("s{k}.probe_logits")]))
            .max(d(&lse, &e[&format!("s{k}.logsumexp")]));
        worst_nll = worst_nll.max(d(&nll, &e[&format!("s{k}.nll")]));
        let argmax = logits.argmax(-1, false);
        let agree = argmax.eq_tensor(&e[&format!("s{k}.argmax")]).to_kind(Kind::Float).mean(Kind::Float);
        assert_eq!(agree.double_value(&[]), 1.0, "sentence {k}: greedy next tokens differ");
        let mean_nll = nll.mean(Kind::Float).double_value(&[]);
        println!("sentence {k}: {t} tokens, mean NLL {mean_nll:.4} (perplexity {:.1})", mean_nll.exp());
        assert!(mean_nll < 7.0, "a working LM is far below ln(49152) = 10.8");
    }
    println!("max |Δ| vs transformers: logits {worst_logit:.2e}, token NLL {worst_nll:.2e}");
    assert!(worst_logit < LOGIT_TOL && worst_nll < LOGIT_TOL, "{worst_logit} {worst_nll}");
}
