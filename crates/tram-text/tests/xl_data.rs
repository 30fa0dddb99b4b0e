//! The installation-guide task data (needs `bash tools/assets.sh xlingual`), checked against counts from an
//! independent parse with Python's html.parser (reference/xl_fixtures.py's `Paragraphs`), and the NLI readers on
//! tiny Hub-layout fixtures.

use std::collections::HashSet;
use std::path::PathBuf;

use tram_text::data::install_guide::{
    class_counts, default_dir, keys, GuideSplit, InstallGuide, SplitSpec, CLASSES, FILES_PER_LANGUAGE, LANGUAGES,
};

const SPLIT: SplitSpec = SplitSpec { test_fraction: 0.3, validation_fraction: 0.1, seed: 0 };

#[test]
fn guide_parses_as_pythons_html_parser_does() {
    let guide = InstallGuide::load(&default_dir().unwrap(), &[]).unwrap();
    let langs: Vec<&str> = guide.paragraphs.keys().map(String::as_str).collect();
    assert_eq!(langs, LANGUAGES);
    for (lang, files) in &guide.paragraphs {
        assert_eq!(files.len(), FILES_PER_LANGUAGE, "{lang}");
    }
    let count = |l: &str| guide.paragraphs[l].values().map(Vec::len).sum::<usize>();
    // Paragraph counts of html.parser (outermost <p>, whitespace collapsed).
    assert_eq!((count("en"), count("de"), count("vi")), (1284, 1287, 1295));

    let (en, en_stats) = guide.examples("en", 40).unwrap();
    assert_eq!(en.len(), 1064);
    assert_eq!(class_counts(&en), [55, 54, 90, 53, 142, 294, 25, 55, 32, 111, 43, 97, 13]);
    assert_eq!((en_stats.untranslated, en_stats.misaligned_files), (0, 0));
    // Untranslated paragraphs (identical to an English one, in aligned files of a class) are dropped.
    for (lang, untranslated, kept) in [("cs", 131, 654), ("ru", 122, 901), ("vi", 261, 518), ("sv", 98, 930)] {
        let (ex, stats) = guide.examples(lang, 40).unwrap();
        println!("{lang}: {stats:?}");
        assert_eq!(stats.untranslated, untranslated, "{lang}");
        assert_eq!(ex.len(), kept, "{lang}");
        let english: HashSet<&str> = guide.paragraphs["en"].values().flatten().map(String::as_str).collect();
        assert!(ex.iter().all(|e| !english.contains(e.text.as_str())));
    }
}

#[test]
fn split_keeps_every_translation_of_a_test_paragraph_out_of_training() {
    let split = GuideSplit::load(&default_dir().unwrap(), &[], 40, SPLIT).unwrap();
    println!("{}", split.describe());
    println!("class counts (all parts):");
    let table = tram_text::data::install_guide::count_table(&split);
    println!("lang  total  {}", CLASSES.join(" "));
    for lang in LANGUAGES {
        let c = table[lang];
        println!("{lang:5} {:5}  {c:?}", c.iter().sum::<usize>());
    }
    assert!(split.train.iter().all(|e| e.lang == "en"));
    let train = keys(&split.train);
    let en_total = split.train.len() + split.validation["en"].len() + split.test["en"].len();
    assert_eq!(en_total, 1064);
    assert!((0.25..0.35).contains(&(split.test["en"].len() as f64 / en_total as f64)));
    assert!((0.06..0.14).contains(&(split.validation["en"].len() as f64 / en_total as f64)));
    for lang in LANGUAGES {
        for part in [&split.test[lang], &split.validation[lang]] {
            assert!(
                part.iter().all(|e| !train.contains(e.key.as_str())),
                "{lang}: a translation of a training paragraph"
            );
        }
        assert!(split.test[lang].len() >= 100, "{lang}: {} test paragraphs", split.test[lang].len());
        // Every class is in English training.
        assert!(class_counts(&split.train).iter().all(|&c| c > 0));
    }
    let val_keys = keys(&split.validation["de"]);
    assert!(split.test["de"].iter().all(|e| !val_keys.contains(e.key.as_str())));
}

#[allow(dead_code)]
fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xl")
}
