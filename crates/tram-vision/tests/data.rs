//! Data sets, preprocessing and the batch stream. The emoji tests need `bash tools/assets.sh`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use tram_vision::data::emoji::{self, EmojiConfig, OodSubset, Style};
use tram_vision::data::{image_folder, Loader, LoaderConfig, Normalization, OnCorrupt, Transform};
use tram_vision::Error;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tram-vision-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `root/{cat,dog}/k.png` with solid colours, plus one file that is not a PNG.
fn tiny_folder(tag: &str) -> PathBuf {
    let root = temp_dir(tag);
    for (c, colour) in [("cat", [200u8, 30, 30]), ("dog", [30, 30, 200])] {
        std::fs::create_dir_all(root.join(c)).unwrap();
        for k in 0..5 {
            let img = image::RgbImage::from_pixel(20 + k, 16, image::Rgb(colour));
            img.save(root.join(c).join(format!("{k}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("dog/zz-corrupt.png"), b"not a png at all").unwrap();
    root
}

#[test]
fn emoji_splits_are_deterministic_and_share_labels() {
    let data = emoji::load(&EmojiConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.classes.len(), 9);
    assert!(!data.classes.iter().any(|c| c == "Component"));
    let n = data.train.len() + data.test.len();
    assert_eq!(n, 1906, "Google style has 1906 non-component emoji");
    let frac = data.test.len() as f64 / n as f64;
    assert!((0.15..0.25).contains(&frac), "held-out fraction {frac}");
    let train: HashSet<usize> = data.train.indices.iter().copied().collect();
    assert!(data.test.indices.iter().all(|i| !train.contains(i)));
    let counts = data.test.class_counts();
    println!(
        "held-out class counts {counts:?}: majority share {:.3}",
        *counts.iter().max().unwrap() as f64 / data.test.len() as f64
    );
    // Every class is in both splits.
    assert!(data.train.class_counts().iter().chain(&data.test.class_counts()).all(|&c| c > 0));
    let again = emoji::load(&EmojiConfig::default()).unwrap();
    assert_eq!(again.test.indices, data.test.indices);
    let other_seed = emoji::load(&EmojiConfig { split_seed: 1, ..Default::default() }).unwrap();
    assert_ne!(other_seed.test.indices, data.test.indices);
    let names: Vec<&str> = data.ood.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["twitter", "facebook", "apple"]);
    for d in &data.ood {
        assert!(Arc::ptr_eq(&d.classes, &data.classes));
        // The held-out OOD sets hold about as many emoji as the in-domain test split.
        assert!(
            (d.len() as f64 - data.test.len() as f64).abs() < 0.1 * data.test.len() as f64,
            "{}: {}",
            d.name,
            d.len()
        );
    }
    let all = emoji::load(&EmojiConfig { train_style: Style::Apple, ood_subset: OodSubset::All, ..Default::default() })
        .unwrap();
    assert_eq!(all.ood[0].name, "google");
    assert_eq!(all.ood[0].len(), 1906);
}

#[test]
fn emoji_batches_stream_with_labels_in_range() {
    let data = emoji::load(&EmojiConfig::default()).unwrap();
    let t = Transform::eval(32, Normalization::MINUS_ONE_ONE);
    let loader = Loader::new(&data.test, t, &LoaderConfig::eval(64), 0).unwrap();
    let expected = data.test.len().div_ceil(64);
    assert_eq!(loader.batches(), expected);
    let mut seen = 0;
    for b in loader {
        let b = b.unwrap();
        assert!(b.skipped.is_empty());
        assert!(b.labels.iter().all(|&l| (0..9).contains(&l)));
        assert_eq!(b.pixels.len(), b.len() * 3 * 32 * 32);
        assert!(b.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
        seen += b.len();
    }
    assert_eq!(seen, data.test.len());
}

#[test]
fn batches_do_not_depend_on_the_number_of_workers() {
    let data = emoji::load(&EmojiConfig::default()).unwrap();
    let ds = data.train.clone().take(100);
    let t = Transform::train(24, Normalization::MINUS_ONE_ONE, Default::default());
    let run = |workers, epoch| -> Vec<(Vec<f32>, Vec<i64>)> {
        let cfg = LoaderConfig { workers, ..LoaderConfig::train(16, 5) };
        Loader::new(&ds, t, &cfg, epoch).unwrap().map(|b| b.map(|b| (b.pixels, b.labels)).unwrap()).collect()
    };
    let one = run(1, 0);
    assert_eq!(one.len(), 6, "100 / 16 with drop_last");
    assert_eq!(one, run(3, 0));
    assert_ne!(one, run(1, 1), "a new epoch reshuffles and re-augments");
}

#[test]
fn image_folder_reads_classes_and_reports_corrupt_files() {
    let root = tiny_folder("folder");
    let ds = image_folder::open("tiny", &root, None).unwrap();
    assert_eq!(*ds.classes, ["cat", "dog"]);
    assert_eq!(ds.len(), 11);
    assert_eq!(ds.class_counts(), [5, 6]);
    let t = Transform::eval(8, Normalization::MINUS_ONE_ONE);
    // Skip: the batch leaves the file out and names it.
    let batches: Vec<_> = Loader::new(&ds, t, &LoaderConfig::eval(32), 0).unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 10);
    assert_eq!(batches[0].skipped.len(), 1);
    assert!(batches[0].skipped[0].ends_with("dog/zz-corrupt.png"));
    // The first cat pixel is red: (200/255 - .5)/.5.
    assert!((batches[0].pixels[0] - (200.0 / 127.5 - 1.0)).abs() < 1e-6);
    // Fail: an error with the path, and the stream ends.
    let cfg = LoaderConfig { on_corrupt: OnCorrupt::Fail, ..LoaderConfig::eval(4) };
    let results: Vec<_> = Loader::new(&ds, t, &cfg, 0).unwrap().collect();
    let err = results.iter().find_map(|r| r.as_ref().err()).expect("an error");
    assert!(matches!(err, Error::CorruptImage { .. }));
    assert!(err.to_string().contains("zz-corrupt.png"), "{err}");
    assert!(results.last().unwrap().is_err());
    let data = image_folder::transfer_data(&root, &root, &[("again", &root)]).unwrap();
    assert_eq!((data.train.len(), data.test.len(), data.ood[0].len()), (11, 11, 11));
    // A test folder must use the training classes.
    let err = image_folder::open("x", &root, Some(Arc::new(vec!["cat".into()]))).unwrap_err().to_string();
    assert!(err.contains("`dog`"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_missing_asset_names_the_fetch_command() {
    let cfg = EmojiConfig { root: Some("/nonexistent/tram-emoji".into()), ..Default::default() };
    let err = emoji::load(&cfg).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tram-emoji") && err.contains("bash tools/assets.sh"), "{err}");
}
