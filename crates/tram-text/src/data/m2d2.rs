//! M2D2 (Reid et al., 2022; `machelreid/m2d2` on the Hugging Face Hub), read from a folder as downloaded: the
//! Hub stores each configuration as `data/<config>.tar.gz`, holding `<config>/{train,valid,test}.txt` with one
//! example per line (the data set's script yields `line.strip()`). The archives are read as shipped, or their
//! extracted folders (`<config>/` or `data/<config>/`). The domains are the L1 configurations of the paper's
//! Table 7 (arXiv 2310.03646 v2 App. A), with the Hub's spellings (`General_referece`, `Human_activites`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};

/// Wikipedia L1 configurations and the paper's column labels, in Table 4's order (training domain first).
pub const WIKIPEDIA_L1: [(&str, &str); 11] = [
    ("Society_and_social_sciences", "Soc."),
    ("Culture_and_the_arts", "Cult."),
    ("General_referece", "Gen."),
    ("Health_and_fitness", "Health."),
    ("History_and_events", "Hist."),
    ("Human_activites", "Human."),
    ("Mathematics_and_logic", "Math."),
    ("Natural_and_physical_sciences", "Nat."),
    ("Philosophy_and_thinking", "Phil."),
    ("Religion_and_belief_systems", "Rel"),
    ("Technology_and_applied_sciences", "Tech."),
];

/// S2ORC L1 configurations and the paper's labels, in Table 4's order. The paper's "Art" and "Phil." are taken
/// to be the configurations `Art` and `Philosophy` (an inference: the paper names no configuration).
pub const S2ORC_L1: [(&str, &str); 11] = [
    ("math_l1", "Math"),
    ("Art", "Art"),
    ("astro-ph_l1", "Astro"),
    ("cond-mat_l1", "CondM."),
    ("cs_l1", "CS"),
    ("econ_l1", "Econ."),
    ("nlin_l1", "NLin."),
    ("Philosophy", "Phil."),
    ("physics_l1", "Phys."),
    ("q-bio_l1", "QBio"),
    ("stat_l1", "Stat"),
];

/// The paper's zero-shot domains for a training configuration: the other ten L1 domains of its split.
pub fn paper_zero_shot(train: &str) -> Option<Vec<String>> {
    [&WIKIPEDIA_L1, &S2ORC_L1]
        .into_iter()
        .find(|split| split.iter().any(|(c, _)| *c == train))
        .map(|split| split.iter().filter(|(c, _)| *c != train).map(|(c, _)| c.to_string()).collect())
}

/// The paper's label of a configuration (`Soc.`, `Math`, ...), if it is one of Table 4's.
pub fn paper_label(config: &str) -> Option<&'static str> {
    WIKIPEDIA_L1.iter().chain(&S2ORC_L1).find(|(c, _)| *c == config).map(|(_, l)| *l)
}

/// A split file of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum M2d2Split {
    Train,
    Valid,
    Test,
}

impl M2d2Split {
    fn file(self) -> &'static str {
        match self {
            M2d2Split::Train => "train.txt",
            M2d2Split::Valid => "valid.txt",
            M2d2Split::Test => "test.txt",
        }
    }
}

/// Calls `f` on every non-empty example (line, trimmed) of `config`'s `split` under `root`, in file order, until
/// it returns `false`. Looks for `<config>/<split>.txt`, `data/<config>/<split>.txt`, then the archive
/// `data/<config>.tar.gz` (or `<config>.tar.gz`).
pub fn for_each_example(root: &Path, config: &str, split: M2d2Split, mut f: impl FnMut(&str) -> bool) -> Result<()> {
    let file = split.file();
    let plain = [root.join(config).join(file), root.join("data").join(config).join(file)];
    if let Some(path) = plain.iter().find(|p| p.is_file()) {
        let reader = std::fs::File::open(path).map_err(io_err(path))?;
        return read_lines(BufReader::new(reader), path, &mut f);
    }
    let archives = [root.join("data").join(format!("{config}.tar.gz")), root.join(format!("{config}.tar.gz"))];
    let Some(archive) = archives.iter().find(|p| p.is_file()) else {
        return Err(Error::Data {
            path: root.to_path_buf(),
            message: format!(
                "M2D2 configuration `{config}` not found: looked for {}, {} and {} (download machelreid/m2d2's \
                 data/{config}.tar.gz into this folder)",
                plain[0].display(),
                plain[1].display(),
                archives[0].display()
            ),
        });
    };
    let gz = std::fs::File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(gz)));
    let data_err = |e: std::io::Error| Error::Data { path: archive.clone(), message: e.to_string() };
    for entry in tar.entries().map_err(data_err)? {
        let entry = entry.map_err(data_err)?;
        let name: PathBuf = entry.path().map_err(data_err)?.into_owned();
        if name.file_name().is_some_and(|n| n == file) {
            let member = archive.join(&name);
            return read_lines(BufReader::new(entry), &member, &mut f);
        }
    }
    Err(Error::Data { path: archive.clone(), message: format!("the archive has no {file}") })
}

fn read_lines(mut reader: impl BufRead, path: &Path, f: &mut impl FnMut(&str) -> bool) -> Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io_err(path))?;
        if n == 0 {
            return Ok(());
        }
        let example = line.trim();
        if !example.is_empty() && !f(example) {
            return Ok(());
        }
    }
}

/// Every non-empty example of a split.
pub fn read_examples(root: &Path, config: &str, split: M2d2Split) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for_each_example(root, config, split, |s| {
        out.push(s.to_string());
        true
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_domains() {
        let zs = paper_zero_shot("Society_and_social_sciences").unwrap();
        assert_eq!(zs.len(), 10);
        assert!(zs.contains(&"General_referece".to_string()) && !zs.contains(&"Society_and_social_sciences".into()));
        assert_eq!(paper_zero_shot("math_l1").unwrap()[0], "Art");
        assert!(paper_zero_shot("cs.CL").is_none());
        assert_eq!(paper_label("Philosophy"), Some("Phil."));
    }
}
