//! The ImageFolder layout: `root/<class>/<image>.{png,jpg,jpeg}`, classes in sorted order (torchvision's
//! convention), for a user's own data set at paper scale.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Dataset, Rgb, Source};
use crate::error::{io_err, Error, Result};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    items: Vec<(PathBuf, i64)>,
}

impl Source for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn label(&self, i: usize) -> i64 {
        self.items[i].1
    }
    fn location(&self, i: usize) -> String {
        self.items[i].0.display().to_string()
    }
    fn load(&self, i: usize) -> std::result::Result<Rgb, String> {
        let bytes = std::fs::read(&self.items[i].0).map_err(|e| e.to_string())?;
        super::decode(&bytes)
    }
}

impl ImageFolder {
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The images under `root`. With `classes` given (e.g. the training set's), every sub-folder must be one of
/// them and labels follow that order; otherwise the sorted sub-folder names are the classes.
pub fn open(name: &str, root: &Path, classes: Option<Arc<Vec<String>>>) -> Result<Dataset> {
    let err = |message: String| Error::Data { path: root.to_path_buf(), message };
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(err("no class sub-folders (expected root/<class>/<image>)".into()));
    }
    let classes = match classes {
        Some(c) => {
            if let Some(d) = dirs.iter().find(|d| !c.contains(d)) {
                return Err(err(format!("class folder `{d}` is not one of the {} training classes", c.len())));
            }
            c
        }
        None => Arc::new(dirs.clone()),
    };
    let mut items = vec![];
    for d in &dirs {
        let label = classes.iter().position(|c| c == d).expect("checked above") as i64;
        let dir = root.join(d);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|f| (f, label)));
    }
    if items.is_empty() {
        return Err(err(format!("no images with extension {EXTENSIONS:?} in the class folders")));
    }
    let source = Arc::new(ImageFolder { root: root.to_path_buf(), items });
    Ok(Dataset::all(name, source, classes))
}

/// Train and test ImageFolder roots of one domain, plus out-of-domain roots with the same class folders.
pub fn transfer_data(train: &Path, test: &Path, ood: &[(&str, &Path)]) -> Result<super::TransferData> {
    let train = open("train", train, None)?;
    let classes = train.classes.clone();
    let test = open("test", test, Some(classes.clone()))?;
    let ood = ood.iter().map(|(name, root)| open(name, root, Some(classes.clone()))).collect::<Result<Vec<_>>>()?;
    Ok(super::TransferData { classes, train, test, ood })
}
