//! Debian's installation guide (`installation-guide-amd64`, bookworm `20230508+deb12u1`): the same manual,
//! human-translated into 19 languages, as the embedded stand-in for XNLI (arXiv 2310.03646 v2 §4.3). The task is
//! chapter classification of paragraphs: train on English, test zero-shot on the 18 other languages.
//!
//! Construction (crates/tram-text/README.md has the measured counts):
//! - paragraphs: the text of each outermost `<p>` element of each HTML file (nested `<p>` flattened into it,
//!   entities decoded, whitespace collapsed);
//! - alignment: paragraph `i` of file `f` in any language is the translation of English paragraph `i` of `f`,
//!   used only where `f` has as many paragraphs as in English (other files are skipped for that language);
//! - label: the chapter of the file (`ch01`–`ch08`, `apa`–`ape`: 13 classes; `index`, `pr01` and `apf`, the GPL
//!   text, left untranslated in several languages, are not used);
//! - filter: at least `min_chars` characters, and for other languages, not identical to any English paragraph:
//!   cs, ru, vi and sv keep hundreds of English paragraphs verbatim, which would inflate zero-shot accuracy;
//! - split: by the English position `f#i`, hashed with [`tram_task::hash_unit`], so a test paragraph's
//!   translations are all in test, never in training, in every language.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, Error, Result};

/// The 19 languages of the package, as its folder names.
pub const LANGUAGES: [&str; 19] = [
    "ca", "cs", "da", "de", "el", "en", "es", "fr", "id", "it", "ja", "ko", "nl", "pt", "ro", "ru", "sv", "vi", "zh_CN",
];

/// The classes: the chapter or appendix a paragraph comes from.
pub const CLASSES: [&str; 13] =
    ["ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "apa", "apb", "apc", "apd", "ape"];

/// The HTML files of each language (index, preface, chapters and appendices with their sections).
pub const FILES_PER_LANGUAGE: usize = 84;

/// `assets/installation-guide` in the cache, or a missing-asset error naming the fetch command.
pub fn default_dir() -> Result<PathBuf> {
    Ok(tram_task::kit::assets::require(
        "the Debian installation guide (`bash tools/assets.sh xlingual`)",
        tram_task::kit::assets::assets_dir().join("installation-guide"),
    )?)
}

/// The class of a file name (`ch03s02.html` → ch03), if it has one.
pub fn class_of(file: &str) -> Option<usize> {
    CLASSES.iter().position(|c| file.starts_with(c))
}

/// Which part of the data an aligned paragraph position falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Train,
    Validation,
    Test,
}

/// Split fractions and seed; the key is the English position `file#index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSpec {
    pub test_fraction: f64,
    pub validation_fraction: f64,
    pub seed: u64,
}

impl SplitSpec {
    pub fn part(&self, key: &str) -> Part {
        let u = tram_task::hash_unit(self.seed, key.as_bytes());
        if u < self.test_fraction {
            Part::Test
        } else if u < self.test_fraction + self.validation_fraction {
            Part::Validation
        } else {
            Part::Train
        }
    }
}

/// One labelled paragraph.
#[derive(Debug, Clone, PartialEq)]
pub struct GuideExample {
    pub lang: String,
    /// The English position, `file#index`: the same for a paragraph and its translations.
    pub key: String,
    pub text: String,
    /// Index into [`CLASSES`].
    pub label: usize,
}

/// What the filters removed, per language.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuideStats {
    /// Paragraphs parsed (all files).
    pub paragraphs: usize,
    /// Files of a class whose paragraph count differs from English (skipped).
    pub misaligned_files: usize,
    /// Paragraphs shorter than the minimum (in aligned files of a class).
    pub short: usize,
    /// Paragraphs identical to some English paragraph (untranslated; other languages only).
    pub untranslated: usize,
    /// Examples kept.
    pub kept: usize,
}

/// The parsed guide: paragraphs per language and file.
#[derive(Debug, Clone)]
pub struct InstallGuide {
    pub dir: PathBuf,
    /// language → file → paragraphs.
    pub paragraphs: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl InstallGuide {
    /// Reads English and `langs` (every language of the folder when empty) from `dir/<lang>/*.html`.
    pub fn load(dir: &Path, langs: &[String]) -> Result<Self> {
        let mut wanted: Vec<String> = if langs.is_empty() {
            let mut v = vec![];
            for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
                let entry = entry.map_err(io_err(dir))?;
                if entry.path().is_dir() {
                    v.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            v
        } else {
            langs.to_vec()
        };
        if !wanted.iter().any(|l| l == "en") {
            wanted.push("en".into());
        }
        wanted.sort();
        wanted.dedup();
        let mut paragraphs = BTreeMap::new();
        for lang in wanted {
            let ldir = dir.join(&lang);
            let mut files = BTreeMap::new();
            let entries = std::fs::read_dir(&ldir).map_err(|e| Error::Data {
                path: ldir.clone(),
                message: format!("{e}; languages of the guide: {}", LANGUAGES.join(", ")),
            })?;
            for entry in entries {
                let path = entry.map_err(io_err(&ldir))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if !name.ends_with(".html") {
                    continue;
                }
                let html = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                files.insert(name, paragraphs_of(&html));
            }
            if files.is_empty() {
                return Err(Error::Data { path: ldir, message: "no .html files".into() });
            }
            paragraphs.insert(lang, files);
        }
        Ok(Self { dir: dir.to_path_buf(), paragraphs })
    }

    /// The labelled examples of `lang` (aligned files of a class, at least `min_chars` characters, and for other
    /// languages not identical to an English paragraph), in file and paragraph order, with what was removed.
    pub fn examples(&self, lang: &str, min_chars: usize) -> Result<(Vec<GuideExample>, GuideStats)> {
        let en = &self.paragraphs["en"];
        let files = self.paragraphs.get(lang).ok_or_else(|| Error::Data {
            path: self.dir.join(lang),
            message: format!("language `{lang}` was not loaded"),
        })?;
        let english: HashSet<&str> = en.values().flatten().map(String::as_str).collect();
        let mut stats = GuideStats { paragraphs: files.values().map(Vec::len).sum(), ..Default::default() };
        let mut out = vec![];
        for (file, paras) in files {
            let Some(label) = class_of(file) else { continue };
            if en.get(file).map(Vec::len) != Some(paras.len()) {
                stats.misaligned_files += 1;
                continue;
            }
            for (i, text) in paras.iter().enumerate() {
                if text.chars().count() < min_chars {
                    stats.short += 1;
                } else if lang != "en" && english.contains(text.as_str()) {
                    stats.untranslated += 1;
                } else {
                    out.push(GuideExample {
                        lang: lang.to_string(),
                        key: format!("{file}#{i}"),
                        text: text.clone(),
                        label,
                    });
                }
            }
        }
        stats.kept = out.len();
        Ok((out, stats))
    }
}

/// Examples per class.
pub fn class_counts(examples: &[GuideExample]) -> [usize; CLASSES.len()] {
    let mut c = [0; CLASSES.len()];
    for e in examples {
        c[e.label] += 1;
    }
    c
}

/// The text of every outermost `<p>` element of an HTML page: nested `<p>` flattened into the outer one, the
/// other tags dropped, entities decoded, whitespace runs collapsed to one space and trimmed.
pub fn paragraphs_of(html: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0usize;
    let mut buf = String::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        if depth > 0 {
            buf.push_str(&decode_entities(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |e| &after[e + 3..]);
            continue;
        }
        let end = tag_end(rest);
        let tag = &rest[1..end.saturating_sub(1).max(1)];
        rest = &rest[end..];
        let (closing, name) = match tag.strip_prefix('/') {
            Some(t) => (true, t),
            None => (false, tag),
        };
        let name: String = name.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !name.eq_ignore_ascii_case("p") {
            continue;
        }
        if closing {
            if depth > 0 {
                depth -= 1;
                if depth == 0 {
                    out.push(collapse(&buf));
                }
            }
        } else {
            if depth == 0 {
                buf.clear();
            }
            depth += 1;
        }
    }
    out
}

/// Byte length of the tag starting at `s[0] == '<'`, through its `>` (quoted attribute values may hold `>`).
fn tag_end(s: &str) -> usize {
    let mut quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return i + 1,
            _ => {}
        }
    }
    s.len()
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` `&nbsp;` and numeric references; others are kept as written.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&semi| semi <= 10).and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The guide's examples split for the task: English train, and validation and test per language.
#[derive(Debug, Clone)]
pub struct GuideSplit {
    pub train: Vec<GuideExample>,
    /// language → validation examples (English's selects the model; the others are kept for Table 6).
    pub validation: BTreeMap<String, Vec<GuideExample>>,
    /// language → test examples.
    pub test: BTreeMap<String, Vec<GuideExample>>,
    pub stats: BTreeMap<String, GuideStats>,
}

impl GuideSplit {
    /// Loads `langs` (English always) from `dir` and splits them.
    pub fn load(dir: &Path, langs: &[String], min_chars: usize, split: SplitSpec) -> Result<Self> {
        let guide = InstallGuide::load(dir, langs)?;
        let mut out =
            Self { train: vec![], validation: BTreeMap::new(), test: BTreeMap::new(), stats: BTreeMap::new() };
        for lang in guide.paragraphs.keys() {
            let (examples, stats) = guide.examples(lang, min_chars)?;
            out.stats.insert(lang.clone(), stats);
            let (mut val, mut test) = (vec![], vec![]);
            for e in examples {
                match (split.part(&e.key), lang.as_str()) {
                    (Part::Train, "en") => out.train.push(e),
                    (Part::Train, _) => {}
                    (Part::Validation, _) => val.push(e),
                    (Part::Test, _) => test.push(e),
                }
            }
            out.validation.insert(lang.clone(), val);
            out.test.insert(lang.clone(), test);
        }
        Ok(out)
    }

    /// Per language, the examples of each part, as one line.
    pub fn describe(&self) -> String {
        let mut s = format!("train en {}", self.train.len());
        for (lang, t) in &self.test {
            s.push_str(&format!("; {lang} val {} test {}", self.validation[lang].len(), t.len()));
        }
        s
    }
}

/// Keys of `examples`, as a set (for leakage checks).
pub fn keys(examples: &[GuideExample]) -> HashSet<&str> {
    examples.iter().map(|e| e.key.as_str()).collect()
}

/// Per language, how many examples of each class, for the README.
pub fn count_table(split: &GuideSplit) -> HashMap<String, [usize; CLASSES.len()]> {
    let mut out = HashMap::new();
    for (lang, t) in &split.test {
        let mut all: Vec<GuideExample> = t.clone();
        all.extend(split.validation[lang].iter().cloned());
        if lang == "en" {
            all.extend(split.train.iter().cloned());
        }
        out.insert(lang.clone(), class_counts(&all));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outer_paragraphs() {
        let html = "<html><body><p class=\"x\">One &lt;two&gt;\n  <b>three</b>&#233;&amp;</p>\
                    <div><p>Outer <p>inner</p> tail</p></div><!-- <p>no</p> --><pre>x</pre><p>a&nbsp;b</p>";
        assert_eq!(paragraphs_of(html), vec!["One <two> threeé&", "Outer inner tail", "a b"]);
        assert_eq!(class_of("ch03s02.html"), Some(2));
        assert_eq!(class_of("apf.html"), None);
        assert_eq!(class_of("pr01.html"), None);
    }

    #[test]
    fn split_parts_follow_the_fractions() {
        let s = SplitSpec { test_fraction: 0.3, validation_fraction: 0.1, seed: 0 };
        let parts: Vec<Part> = (0..10_000).map(|i| s.part(&format!("ch01.html#{i}"))).collect();
        let test = parts.iter().filter(|&&p| p == Part::Test).count();
        let val = parts.iter().filter(|&&p| p == Part::Validation).count();
        assert!((2800..3200).contains(&test) && (850..1150).contains(&val), "{test} {val}");
    }
}
