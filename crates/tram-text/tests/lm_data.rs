//! The causal-LM data: the Brown corpus as fetched by `bash tools/assets.sh lm` (counts that could fail), and a
//! tiny M2D2 folder laid out as the Hub lays it out (`tests/fixtures/lm/m2d2-tiny`, from `reference/lm_fixtures.py`).

use std::collections::BTreeMap;
use std::path::Path;

use tram_text::data::brown::{Brown, GENRES};
use tram_text::data::m2d2::{read_examples, M2d2Split};
use tram_text::tokenizer::TextTokenizer;

#[test]
fn brown_has_500_files_in_15_genres_and_its_documented_size() {
    let brown = Brown::embedded().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(brown.docs.len(), 500);
    let mut per_genre: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &brown.docs {
        *per_genre.entry(d.genre.as_str()).or_default() += 1;
        assert!(!d.text.contains("/at ") && !d.text.contains("``"), "{}: tags or Brown quotes left", d.id);
    }
    assert_eq!(per_genre.len(), 15);
    for (g, _) in GENRES {
        assert!(per_genre.contains_key(g), "{g}");
    }
    // cats.txt's counts (categories A–R of the Brown manual).
    let want = [("news", 44), ("learned", 80), ("belles_lettres", 75), ("science_fiction", 6), ("humor", 9)];
    for (g, n) in want {
        assert_eq!(per_genre[g], n, "{g}");
    }
    let first = &brown.docs[0];
    assert_eq!((first.id.as_str(), first.genre.as_str()), ("ca01", "news"));
    assert!(
        first.text.starts_with(
            "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary \
         election produced \"no evidence\" that any irregularities took place."
        ),
        "{}",
        &first.text[..200]
    );

    // Token totals with the SmolLM2 tokenizer (built from the GGUF metadata).
    let file = tram_text::gguf::GgufFile::open(tram_text::causal_lm::smollm2_gguf().unwrap()).unwrap();
    let tok = TextTokenizer::from_json(&file.tokenizer_json().unwrap(), &file.path).unwrap();
    let mut tokens: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &brown.docs {
        *tokens.entry(d.genre.as_str()).or_default() += tok.encode(&d.text, false).unwrap().len();
    }
    let total: usize = tokens.values().sum();
    println!("Brown with the SmolLM2 tokenizer: {total} tokens; per genre {tokens:?}");
    // SmolLM2's tokenizer in Python (transformers) gave 1,323,537 tokens (16 k science_fiction … 206 k learned) with
    // the same detokenization rules; joins between sentences and paragraphs may differ by a token here and there.
    assert!((total as f64 / 1_323_537.0 - 1.0).abs() < 0.02, "{total}");
    assert!((tokens["learned"] as f64 / 205_000.0 - 1.0).abs() < 0.03, "{}", tokens["learned"]);
    assert!((tokens["science_fiction"] as f64 / 16_000.0 - 1.0).abs() < 0.1, "{}", tokens["science_fiction"]);
}

#[test]
fn m2d2_reads_archives_and_extracted_folders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm/m2d2-tiny");
    // Society: data/<config>.tar.gz as on the Hub; Mathematics: an extracted folder.
    assert!(root.join("data/Society_and_social_sciences.tar.gz").is_file());
    assert!(root.join("Mathematics_and_logic/test.txt").is_file());
    let train = read_examples(&root, "Society_and_social_sciences", M2d2Split::Train).unwrap();
    assert_eq!(train.len(), 120);
    assert!(train.iter().all(|l| !l.is_empty() && l.ends_with('.')));
    // The test files hold one blank line, which is not an example.
    assert_eq!(read_examples(&root, "Culture_and_the_arts", M2d2Split::Test).unwrap().len(), 12);
    assert_eq!(read_examples(&root, "Mathematics_and_logic", M2d2Split::Test).unwrap().len(), 12);
    assert_eq!(read_examples(&root, "Mathematics_and_logic", M2d2Split::Valid).unwrap().len(), 12);
    let err = read_examples(&root, "cs_l1", M2d2Split::Test).unwrap_err().to_string();
    assert!(err.contains("cs_l1") && err.contains("data/cs_l1.tar.gz"), "{err}");
}
