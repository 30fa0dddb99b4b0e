"""Synthetic text for the paper-shape stand-ins (tools/rehearse/paper_shapes.py): pseudo-languages in each XNLI
language's script, a Zipf-ordered pseudo-English lexicon, and byte-level BPE (GPT-2) and Unigram (XLM-R) tokenizers
trained on them with the sizes of the real vocabularies. Deterministic: the same SEED writes the same bytes."""

import json
import math
import os
import random
import sys
import unicodedata

import numpy as np

SEED = 20231004  # fixed: reruns write the same bytes


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")

# ---------------------------------------------------------------------------------------------------------------
# Pseudo-languages: random words in each XNLI language's script
# ---------------------------------------------------------------------------------------------------------------

LATIN_ONSETS = "b c d f g h j k l m n p r s t v w z st tr pl ch sh th br gr kr fl sp".split() + [""]
LATIN_NUCLEI = "a e i o u ai ea ou y io".split()
LATIN_CODAS = [""] * 4 + "n r s l t m ng".split()
EXTRA = {  # letters each Latin-script language adds to the plain set
    "en": "", "es": "ñáéíóú", "fr": "éèêàçù", "de": "äöüß", "sw": "", "tr": "çğıöşü",
    "vi": "ăâđêôơưạảấầẩậắằẳặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
}


def char_range(a, b, skip=""):
    return [chr(c) for c in range(ord(a), ord(b) + 1) if unicodedata.category(chr(c))[0] == "L" and chr(c) not in skip]


def syllables(lang):
    """A few hundred to a few thousand syllables in the language's script (NFKC-stable)."""
    if lang in EXTRA:
        extra = list(EXTRA[lang])
        out = {o + n + c for o in LATIN_ONSETS for n in LATIN_NUCLEI for c in LATIN_CODAS}
        out |= {o + x + c for o in LATIN_ONSETS for x in extra for c in LATIN_CODAS[-4:]}
        return sorted(out)
    if lang in ("ru", "bg"):
        letters = char_range("а", "я") + (["ё"] if lang == "ru" else [])
        vowels = [c for c in letters if c in "аеёиоуыэюя"]
        cons = [c for c in letters if c not in vowels]
        return sorted({c + v for c in cons for v in vowels} | {c + v + k for c in cons[:12] for v in vowels for k in cons[:8]})
    if lang == "el":
        vowels = list("αεηιουωάέήίόύώ")
        cons = list("βγδζθκλμνξπρστφχψ")
        return sorted({c + v for c in cons for v in vowels} | {c + v + "ς" for c in cons for v in vowels[:7]})
    if lang in ("ar", "ur"):
        letters = char_range("ا", "ي", skip="ؠػؼؽؾؿـ")
        if lang == "ur":
            letters += list("ٹڈڑںےہھکگی")
        return sorted({a + b for a in letters for b in letters})
    if lang == "hi":
        cons = char_range("क", "ह")
        signs = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ", "ं"]
        return sorted({c + s for c in cons for s in signs})
    if lang == "th":
        cons = char_range("ก", "ฮ")
        vowels = ["", "ะ", "า", "ิ", "ี", "ึ", "ื", "ุ", "ู"]
        return sorted({c + v for c in cons for v in vowels} | {"เ" + c for c in cons})
    if lang == "zh":
        return sorted({chr(c) for c in random.Random(SEED + 7).sample(range(0x4E00, 0x9FA5), 3000)})
    raise ValueError(lang)


def lexicon(lang, n, rng):
    """n distinct words of 1–4 syllables (1–2 characters for zh), NFKC-normalised."""
    syl = syllables(lang)
    words, lengths = set(), ([1, 2, 2, 3] if lang == "zh" else [1, 2, 2, 3, 3, 4])
    while len(words) < n:
        w = unicodedata.normalize("NFKC", "".join(rng.choice(syl) for _ in range(rng.choice(lengths))))
        words.add(w)
    out = sorted(words)
    rng.shuffle(out)
    return out


class Text:
    """Zipf-distributed sentences over a lexicon, in one language (zh: no spaces between words)."""

    def __init__(self, lang, words, rng, punct="."):
        self.lang, self.words, self.rng, self.punct = lang, words, rng, punct
        ranks = np.arange(1, len(words) + 1, dtype=np.float64)
        w = 1.0 / ranks**1.07
        self.cdf = np.cumsum(w / w.sum())

    def word(self):
        return self.words[min(int(np.searchsorted(self.cdf, self.rng.random())), len(self.words) - 1)]

    def sentence(self, lo=6, hi=22):
        r = self.rng
        ws = [self.word() for _ in range(r.randint(lo, hi))]
        if r.random() < 0.3:
            ws.insert(r.randrange(len(ws)), str(r.choice([r.randint(1, 99), r.randint(1800, 2023), r.randint(100, 99999)])))
        if self.lang == "zh":
            return "".join(ws) + "。"
        if r.random() < 0.4:
            i = r.randrange(1, len(ws))
            ws[i - 1] += ","
        s = " ".join(ws)
        return s[:1].upper() + s[1:] + self.punct

    def paragraph(self, lo=3, hi=9):
        return " ".join(self.sentence() for _ in range(self.rng.randint(lo, hi)))


XNLI_LANGUAGES = ["en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"]
ENGLISH_WORDS = 60_000


def english_lexicon():
    return lexicon("en", ENGLISH_WORDS, random.Random(SEED + 1))


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers (synthesised; see the module docstring)
# ---------------------------------------------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2's map of the 256 bytes to printable characters, in the order of the first 256 ids of its vocab."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def gpt2_tokenizer(out_dir):
    """A byte-level BPE of GPT-2's size: 256 byte symbols, 50,000 merges, <|endoftext|> at 50256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    words = english_lexicon()
    rng = random.Random(SEED + 2)
    text = Text("en", words, rng)

    def corpus():
        for i in range(0, len(words), 200):  # every word at least once, with and without a leading space
            chunk = words[i:i + 200]
            yield " ".join(chunk)
            yield " ".join(w.capitalize() for w in chunk)
        for _ in range(30_000):
            yield text.paragraph()

    trainer = trainers.BpeTrainer(
        vocab_size=256 + 50_000 + 4_000,  # headroom: merges whose result already exists are dropped below
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.train_from_iterator(corpus(), trainer)
    merges = json.loads(raw.to_str())["model"]["merges"]
    alphabet = bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(alphabet)}
    kept = []
    for m in merges:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a + b in vocab:
            continue
        assert a in vocab and b in vocab, (a, b)
        vocab[a + b] = len(vocab)
        kept.append((a, b))
        if len(kept) == 50_000:
            break
    if len(kept) < 50_000:
        sys.exit(f"the BPE trainer gave only {len(kept)} distinct merges; enlarge the corpus")
    vocab["<|endoftext|>"] = 50_256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=kept, dropout=None, unk_token=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens(["<|endoftext|>"])
    assert tok.get_vocab_size() == 50_257 and tok.token_to_id("<|endoftext|>") == 50_256
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok.model.save(out_dir)  # vocab.json, merges.txt
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {"model_max_length": 1024})
    return tok


def xlmr_tokenizer(out_dir):
    """A Unigram tokenizer of XLM-R's size and layout: 250,002 pieces, specials at 0..3 and <mask> last."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    rng = random.Random(SEED + 3)
    pieces, seen = [], {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}

    def add(p):
        p = unicodedata.normalize("NFKC", p)
        if p and p not in seen:
            seen.add(p)
            pieces.append(p)

    # In order of decreasing score: words of the data's lexicons, then syllables, then single characters.
    lexicons = {lang: xnli_lexicon(lang) for lang in XNLI_LANGUAGES}
    for rank in range(0, 6000, 50):
        for lang in XNLI_LANGUAGES:
            for w in lexicons[lang][rank:rank + 50]:
                add("▁" + w)
    sylls = {lang: syllables(lang) for lang in XNLI_LANGUAGES}
    for lang in XNLI_LANGUAGES:
        for s in sylls[lang]:
            add("▁" + s)
            add(s)
    letters = {c for ws in lexicons.values() for w in ws for c in w}
    chars = {unicodedata.normalize("NFKC", c) for c in letters | {c.upper() for c in letters}}
    chars = sorted(c for c in chars | set("0123456789.,;:!?'\"()-%/。") if len(c) == 1)
    tail = [p for p in dict.fromkeys(["▁" + c for c in chars] + chars) if p not in seen]
    target = 250_002 - 5
    while len(pieces) < target - len(tail):  # syllable pairs, with and without the word-start mark
        lang = rng.choice(XNLI_LANGUAGES)
        s = rng.choice(sylls[lang]) + rng.choice(sylls[lang])
        s = ("▁" if rng.random() < 0.5 else "") + s
        if unicodedata.normalize("NFKC", s) not in tail:
            add(s)
    for p in tail:
        add(p)
    assert len(pieces) == target, len(pieces)
    assert all(c in seen for c in chars), "every character of the data is a piece (no <unk>)"
    n = len(pieces)
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, round(-3.0 - 14.0 * i / n, 5)) for i, p in enumerate(pieces)]
    vocab += [("<mask>", 0.0)]
    assert len(vocab) == 250_002
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    assert tok.get_vocab_size() == 250_002 and tok.token_to_id("<mask>") == 250_001
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {"model_max_length": 512})
    return tok

def xnli_lexicon(lang):
    return lexicon(lang, 6000, random.Random(SEED + 1000 + XNLI_LANGUAGES.index(lang)))
