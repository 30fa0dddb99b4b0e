//! Hugging Face parquet image data sets (fixture from reference/parquet_fixture.py).

use std::path::PathBuf;
use std::sync::Arc;

use tram_vision::data::parquet::{self, ParquetColumns};
use tram_vision::data::{Loader, LoaderConfig, Normalization, OnCorrupt, Transform};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn reads_the_hub_layout_with_class_names_and_skips_the_corrupt_row() {
    let ds = parquet::open("tiny", &[fixture("tiny-images.parquet")], &ParquetColumns::default(), None).unwrap();
    assert_eq!(*ds.classes, ["red", "blue"]);
    assert_eq!(ds.len(), 6);
    assert_eq!(ds.class_counts(), [3, 3]);
    let t = Transform::eval(4, Normalization::MINUS_ONE_ONE);
    let b = Loader::new(&ds, t, &LoaderConfig::eval(8), 0).unwrap().next().unwrap().unwrap();
    assert_eq!(b.labels, [0, 1, 0, 0, 1]);
    assert_eq!(b.skipped.len(), 1);
    assert!(b.skipped[0].ends_with("tiny-images.parquet row 3"), "{:?}", b.skipped);
    // Red images are red, blue ones blue: (220/255 − .5)/.5 in the first channel of the first image.
    assert!((b.pixels[0] - (220.0 / 127.5 - 1.0)).abs() < 1e-6);
    let second = &b.pixels[3 * 16..];
    assert!(second[2 * 16] > 0.5 && second[0] < -0.5);
    let cfg = LoaderConfig { on_corrupt: OnCorrupt::Fail, ..LoaderConfig::eval(8) };
    let err = Loader::new(&ds, t, &cfg, 0).unwrap().next().unwrap().unwrap_err().to_string();
    assert!(err.contains("tiny-images.parquet row 3"), "{err}");
}

#[test]
fn plain_binary_columns_with_other_names() {
    let cols = ParquetColumns { image: "img".into(), label: "fine_label".into() };
    let ds = parquet::open("plain", &[fixture("tiny-images-plain.parquet")], &cols, None).unwrap();
    assert_eq!(*ds.classes, ["0", "1"]);
    assert_eq!(ds.len(), 6);
    let given = Arc::new(vec!["red".to_string(), "blue".to_string(), "green".to_string()]);
    let ds = parquet::open("plain", &[fixture("tiny-images-plain.parquet")], &cols, Some(given)).unwrap();
    assert_eq!(ds.classes.len(), 3);
    let err = parquet::open("x", &[fixture("tiny-images-plain.parquet")], &ParquetColumns::default(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column `image`") && err.contains("img, fine_label"), "{err}");
}

#[test]
fn finds_split_files_in_a_snapshot_folder() {
    let dir = std::env::temp_dir().join(format!("tram-vision-pq-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for f in
        ["data/train-00001-of-00002.parquet", "data/train-00000-of-00002.parquet", "data/test-00000-of-00001.parquet"]
    {
        std::fs::copy(fixture("tiny-images.parquet"), dir.join(f)).unwrap();
    }
    let files = parquet::split_files(&dir, "train").unwrap();
    assert_eq!(files.len(), 2);
    assert!(files[0].ends_with("data/train-00000-of-00002.parquet"));
    let ds = parquet::open("train", &files, &ParquetColumns::default(), None).unwrap();
    assert_eq!(ds.len(), 12);
    assert!(parquet::split_files(&dir, "validation").unwrap_err().to_string().contains("validation"));
    let data = parquet::transfer_data(&dir, &ParquetColumns::default(), "train", "test").unwrap();
    assert_eq!((data.train.len(), data.test.len(), data.ood.len()), (12, 6, 0));
    assert!(Arc::ptr_eq(&data.classes, &data.test.classes));
    std::fs::remove_dir_all(&dir).ok();
}
