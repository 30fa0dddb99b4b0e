//! Tokenizers from `tokenizer.json` through the Hugging Face `tokenizers` crate (no hand-written BPE or Unigram).

use std::path::{Path, PathBuf};

use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// A `tokenizer.json` loaded with the `tokenizers` crate, and where it came from (for errors).
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pub path: PathBuf,
}

impl TextTokenizer {
    /// A tokenizer built in memory (e.g. from a model file's pieces); `path` names that file in errors.
    pub(crate) fn new(inner: tokenizers::Tokenizer, path: PathBuf) -> Self {
        Self { inner, path }
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        Ok(Self { inner, path })
    }

    /// A tokenizer from the text of a `tokenizer.json` (e.g. one built from GGUF metadata); `origin` names the
    /// file it was built from in errors.
    pub fn from_json(json: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let path = origin.as_ref().to_path_buf();
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| Error::Tokenizer { path: path.clone(), message: e.to_string() })?;
        Ok(Self { inner, path })
    }

    /// The id of a token of the vocabulary (added tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`; `special` adds the post-processor's special tokens (e.g. `<s> … </s>`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, special).map_err(|e| self.error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of each of `texts` (encoded in parallel); `special` as for [`TextTokenizer::encode`].
    pub fn encode_batch(&self, texts: &[&str], special: bool) -> Result<Vec<Vec<u32>>> {
        let encodings = self.inner.encode_batch(texts.to_vec(), special).map_err(|e| self.error(e))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Token ids of a sentence pair (`<s> A </s></s> B </s>` for XLM-R).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode((a, b), true).map_err(|e| self.error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The same tokenizer cutting every input to at most `max_len` tokens, specials included; a pair loses tokens
    /// from its longer side first.
    pub fn with_truncation(mut self, max_len: usize) -> Result<Self> {
        let params = TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        };
        match self.inner.with_truncation(Some(params)) {
            Ok(_) => Ok(self),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: tokenizers::Error) -> Error {
        Error::Tokenizer { path: self.path.clone(), message: e.to_string() }
    }
}
