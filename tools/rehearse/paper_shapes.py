"""Randomly initialised models and random data at the paper's shapes, laid out as the Hugging Face Hub ships them.

The `paper` profiles of experiments/table{3,4,5}.toml read the user's own downloads: ViT-B/16 on an image data set
(Table 3), GPT-2 base and GPT-2 XL on M2D2 (Table 4, Table 10), XLM-R base on MultiNLI and XNLI (Table 5). This
writes stand-ins with the exact configurations and file layouts of those downloads, so that the runner can be
rehearsed at the paper's shapes (memory, step time, loaders) without them:

    python tools/rehearse/paper_shapes.py --out DIR [--check] [NAME ...]

NAME is any of the folders below (default: all); a folder that already exists is skipped, so reruns are cheap.
Each folder is written under `DIR/.<name>.partial` and renamed when complete.

Models (Hub configurations `gpt2`, `gpt2-xl`, `xlm-roberta-base`, `google/vit-base-patch16-224`; float32 weights
drawn with each model's Hugging Face initialisation, seeded per tensor name; the Hub's key names):
- gpt2/                      config.json, model.safetensors (no `transformer.` prefix, `h.N.attn.bias` causal-mask
                             buffers, no lm_head: tied), tokenizer.json, vocab.json, merges.txt, tokenizer_config.json
- gpt2-xl/                   the same at 48 layers × 1600 (25 heads): 6.4 GB
- xlm-roberta-base/          config.json (XLMRobertaForMaskedLM), model.safetensors (`roberta.*`, `lm_head.*` without
                             the tied decoder), tokenizer.json, tokenizer_config.json
- vit-base-patch16-224/      config.json (ViTForImageClassification, 1000 labels `LABEL_i`), model.safetensors,
                             preprocessor_config.json

The tokenizers are SYNTHESISED: the real files cannot be downloaded here. They have the real files' sizes, types
and special tokens, built with the `tokenizers` library, but not their vocabularies:
- GPT-2: a byte-level BPE of 50,257 entries (the 256 byte symbols in GPT-2's order, 50,000 merges trained on the
  pseudo-English text below, `<|endoftext|>` = 50256), the Hub file's pre-tokenizer, decoder and post-processor;
- XLM-R: a Unigram model of 250,002 pieces (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 250001), pieces of
  random words in the 15 XNLI languages' scripts; Metaspace pre-tokenizer, the `<s> A </s></s> B </s>` template;
  NFKC stands in for the real file's Precompiled (sentencepiece nmt_nfkc) normaliser.

Data (random pseudo-words, well-formed; a fixed seed):
- m2d2/                      data/<config>.tar.gz holding <config>/{train,valid,test}.txt (one paragraph a line) for
                             the 22 L1 configurations of the paper's Table 4 (Hub spellings: `General_referece`, ...)
- multi_nli/                 data/{train,validation_matched,validation_mismatched}-00000-of-00001.parquet, the
                             Hub's columns (promptID, pairID, premise, *_parse, hypothesis, genre, label)
- xnli/                      <lang>/{train,validation,test}-00000-of-00001.parquet for the 15 languages
- oxford-flowers/            data/{train-0000{0,1}-of-00002,test-00000-of-00001}.parquet, `image` {bytes, path}
                             (JPEG of varied sizes) and `label` (102 classes, names in the `huggingface` metadata)
- cifar100/                  cifar100/{train,test}-00000-of-00001.parquet: `img` (32×32 PNG), `fine_label`,
                             `coarse_label`

--check loads gpt2, xlm-roberta-base and vit-base-patch16-224 with transformers (no missing or unexpected weights,
finite logits) and reads every tokenizer back; gpt2-xl is checked from its safetensors header only.

Needs torch, transformers, tokenizers, safetensors, numpy, pyarrow and pillow (`pip install pyarrow pillow`).
"""

import argparse
import gzip
import io
import json
import math
import os
import random
import shutil
import struct
import sys
import tarfile
import unicodedata
import zlib

import numpy as np
import torch

from synthetic_text import (  # noqa: E402 (the folder of this script is on sys.path)
    SEED,
    XNLI_LANGUAGES,
    Text,
    english_lexicon,
    gpt2_tokenizer,
    lexicon,
    write_json,
    xlmr_tokenizer,
    xnli_lexicon,
)

# ---------------------------------------------------------------------------------------------------------------
# Hub configurations
# ---------------------------------------------------------------------------------------------------------------


def gpt2_config(n_layer, n_embd, n_head):
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_layer": n_layer,
        "n_positions": 1024,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 50257,
    }


XLMR_CONFIG = {
    "architectures": ["XLMRobertaForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 514,
    "model_type": "xlm-roberta",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "output_past": True,
    "pad_token_id": 1,
    "position_embedding_type": "absolute",
    "type_vocab_size": 1,
    "use_cache": True,
    "vocab_size": 250002,
}

VIT_CONFIG = {
    "architectures": ["ViTForImageClassification"],
    "attention_probs_dropout_prob": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 768,
    "id2label": {str(i): f"LABEL_{i}" for i in range(1000)},
    "image_size": 224,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "label2id": {f"LABEL_{i}": i for i in range(1000)},
    "layer_norm_eps": 1e-12,
    "model_type": "vit",
    "num_attention_heads": 12,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "patch_size": 16,
    "qkv_bias": True,
}

VIT_PREPROCESSOR = {
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "ViTImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "size": {"height": 224, "width": 224},
}

# ---------------------------------------------------------------------------------------------------------------
# Weights: (name, shape, init) specs in the Hub's key names, streamed into model.safetensors one tensor at a time
# ---------------------------------------------------------------------------------------------------------------


def gpt2_specs(c):
    """GPT2LMHeadModel as the Hub's gpt2 / gpt2-xl files hold it: no prefix, mask buffers, lm_head tied (absent).
    Conv1D weights are [in, out]. Init: N(0, 0.02), c_proj weights N(0, 0.02/sqrt(2·n_layer)), LayerNorm 1/0."""
    d, n, v, p = c["n_embd"], c["n_layer"], c["vocab_size"], c["n_positions"]
    proj = ("normal", 0.02 / math.sqrt(2 * n))
    specs = [("wte.weight", [v, d], ("normal", 0.02)), ("wpe.weight", [p, d], ("normal", 0.02))]
    for i in range(n):
        h = f"h.{i}."
        specs += [
            (h + "ln_1.weight", [d], "ones"), (h + "ln_1.bias", [d], "zeros"),
            (h + "attn.bias", [1, 1, p, p], "causal"),
            (h + "attn.c_attn.weight", [d, 3 * d], ("normal", 0.02)), (h + "attn.c_attn.bias", [3 * d], "zeros"),
            (h + "attn.c_proj.weight", [d, d], proj), (h + "attn.c_proj.bias", [d], "zeros"),
            (h + "ln_2.weight", [d], "ones"), (h + "ln_2.bias", [d], "zeros"),
            (h + "mlp.c_fc.weight", [d, 4 * d], ("normal", 0.02)), (h + "mlp.c_fc.bias", [4 * d], "zeros"),
            (h + "mlp.c_proj.weight", [4 * d, d], proj), (h + "mlp.c_proj.bias", [d], "zeros"),
        ]
    return specs + [("ln_f.weight", [d], "ones"), ("ln_f.bias", [d], "zeros")]


def xlmr_specs(c):
    """XLMRobertaForMaskedLM: `roberta.embeddings/encoder/pooler`, `lm_head.{dense,layer_norm,bias}` (the decoder
    is tied to the word embeddings and not stored). Init N(0, 0.02), the padding rows zero, LayerNorm 1/0."""
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    normal = ("normal", 0.02)
    pad = ("normal-pad", 0.02, c["pad_token_id"])
    e = "roberta.embeddings."
    specs = [
        (e + "word_embeddings.weight", [v, d], pad),
        (e + "position_embeddings.weight", [c["max_position_embeddings"], d], pad),
        (e + "token_type_embeddings.weight", [c["type_vocab_size"], d], normal),
        (e + "LayerNorm.weight", [d], "ones"), (e + "LayerNorm.bias", [d], "zeros"),
    ]
    for i in range(c["num_hidden_layers"]):
        l = f"roberta.encoder.layer.{i}."
        for name, shape in [
            ("attention.self.query", [d, d]), ("attention.self.key", [d, d]), ("attention.self.value", [d, d]),
            ("attention.output.dense", [d, d]), ("intermediate.dense", [f, d]), ("output.dense", [d, f]),
        ]:
            specs += [(l + name + ".weight", shape, normal), (l + name + ".bias", [shape[0]], "zeros")]
        for name in ["attention.output.LayerNorm", "output.LayerNorm"]:
            specs += [(l + name + ".weight", [d], "ones"), (l + name + ".bias", [d], "zeros")]
    specs += [
        ("roberta.pooler.dense.weight", [d, d], normal), ("roberta.pooler.dense.bias", [d], "zeros"),
        ("lm_head.dense.weight", [d, d], normal), ("lm_head.dense.bias", [d], "zeros"),
        ("lm_head.layer_norm.weight", [d], "ones"), ("lm_head.layer_norm.bias", [d], "zeros"),
        ("lm_head.bias", [v], "zeros"),
    ]
    return specs


def vit_specs(c):
    """ViTForImageClassification with the Hub's (transformers 4) key names; truncated N(0, 0.02) weights."""
    d, f, ps, ch = c["hidden_size"], c["intermediate_size"], c["patch_size"], c["num_channels"]
    tokens = (c["image_size"] // ps) ** 2 + 1
    normal = ("trunc", 0.02)
    e = "vit.embeddings."
    specs = [
        (e + "cls_token", [1, 1, d], normal),
        (e + "position_embeddings", [1, tokens, d], normal),
        (e + "patch_embeddings.projection.weight", [d, ch, ps, ps], normal),
        (e + "patch_embeddings.projection.bias", [d], "zeros"),
    ]
    for i in range(c["num_hidden_layers"]):
        l = f"vit.encoder.layer.{i}."
        for name, shape in [
            ("attention.attention.query", [d, d]), ("attention.attention.key", [d, d]),
            ("attention.attention.value", [d, d]), ("attention.output.dense", [d, d]),
            ("intermediate.dense", [f, d]), ("output.dense", [d, f]),
        ]:
            specs += [(l + name + ".weight", shape, normal), (l + name + ".bias", [shape[0]], "zeros")]
        for name in ["layernorm_before", "layernorm_after"]:
            specs += [(l + name + ".weight", [d], "ones"), (l + name + ".bias", [d], "zeros")]
    n = len(c["id2label"])
    return specs + [
        ("vit.layernorm.weight", [d], "ones"), ("vit.layernorm.bias", [d], "zeros"),
        ("classifier.weight", [n, d], normal), ("classifier.bias", [n], "zeros"),
    ]


def make_tensor(name, shape, init):
    g = torch.Generator().manual_seed(SEED * 1_000_003 + zlib.crc32(name.encode()))
    if init == "zeros":
        return torch.zeros(shape)
    if init == "ones":
        return torch.ones(shape)
    if init == "causal":
        n = shape[-1]
        return torch.tril(torch.ones(n, n)).view(shape)
    kind, std = init[0], init[1]
    t = torch.empty(shape)
    if kind == "trunc":
        # transformers' ViT init: trunc_normal_(std) (cut at ±2, i.e. effectively unclipped at std 0.02)
        t.normal_(0.0, std, generator=g).clamp_(-2.0, 2.0)
    else:
        t.normal_(0.0, std, generator=g)
    if kind == "normal-pad":
        t[init[2]].zero_()
    return t


def write_safetensors(path, specs):
    """safetensors format: u64 header length, JSON header (name → dtype, shape, data_offsets), raw little-endian
    data. Written one tensor at a time, so GPT-2 XL needs no more memory than its largest tensor."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in specs:
        n = 4 * math.prod(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, init in specs:
            t = make_tensor(name, shape, init).contiguous()
            assert t.dtype == torch.float32 and list(t.shape) == shape, name
            f.write(t.numpy().astype("<f4", copy=False).tobytes())
    return offset


# ---------------------------------------------------------------------------------------------------------------
# Writers, one per folder
# ---------------------------------------------------------------------------------------------------------------


def write_gpt2(d, n_layer, n_embd, n_head):
    config = gpt2_config(n_layer, n_embd, n_head)
    write_json(os.path.join(d, "config.json"), config)
    gpt2_tokenizer(d)
    write_safetensors(os.path.join(d, "model.safetensors"), gpt2_specs(config))


def write_xlmr(d):
    write_json(os.path.join(d, "config.json"), XLMR_CONFIG)
    xlmr_tokenizer(d)
    write_safetensors(os.path.join(d, "model.safetensors"), xlmr_specs(XLMR_CONFIG))


def write_vit(d):
    write_json(os.path.join(d, "config.json"), VIT_CONFIG)
    write_json(os.path.join(d, "preprocessor_config.json"), VIT_PREPROCESSOR)
    write_safetensors(os.path.join(d, "model.safetensors"), vit_specs(VIT_CONFIG))


WIKIPEDIA_L1 = [
    "Society_and_social_sciences", "Culture_and_the_arts", "General_referece", "Health_and_fitness",
    "History_and_events", "Human_activites", "Mathematics_and_logic", "Natural_and_physical_sciences",
    "Philosophy_and_thinking", "Religion_and_belief_systems", "Technology_and_applied_sciences",
]
S2ORC_L1 = ["math_l1", "Art", "astro-ph_l1", "cond-mat_l1", "cs_l1", "econ_l1", "nlin_l1", "Philosophy",
            "physics_l1", "q-bio_l1", "stat_l1"]
M2D2_LINES = {"train": 400, "valid": 40, "test": 40}


def write_m2d2(d):
    """Each configuration: its own Zipf order over the shared pseudo-English lexicon (domains differ in which
    words are frequent), paragraphs one a line, a blank line here and there as in the real files."""
    words = english_lexicon()
    os.makedirs(os.path.join(d, "data"))
    for k, config in enumerate(WIKIPEDIA_L1 + S2ORC_L1):
        rng = random.Random(SEED + 100 + k)
        order = words[:]
        head = order[:3000]
        rng.shuffle(head)
        order[:3000] = head  # frequent words shuffled per domain; the tail shared
        text = Text("en", order, rng)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for split, n in M2D2_LINES.items():
                lines = [text.paragraph() for _ in range(n)]
                for i in range(5, n, 97):
                    lines[i] = ""
                data = ("\n".join(lines) + "\n").encode()
                info = tarfile.TarInfo(f"{config}/{split}.txt")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        with open(os.path.join(d, "data", f"{config}.tar.gz"), "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
                gz.write(buf.getvalue())


def nli_pairs(lang, n, seed):
    rng = random.Random(seed)
    text = Text(lang, xnli_lexicon(lang), rng)
    return [(text.paragraph(1, 3), text.sentence(4, 14), rng.randrange(3)) for _ in range(n)]


NLI_LABEL = {"names": ["entailment", "neutral", "contradiction"], "_type": "ClassLabel"}


def write_parquet(path, columns, features):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, path, compression="snappy")


def write_multi_nli(d):
    import pyarrow as pa

    os.makedirs(os.path.join(d, "data"))
    genres = ["fiction", "government", "slate", "telephone", "travel"]
    string = {"dtype": "string", "_type": "Value"}
    features = {
        "promptID": {"dtype": "int32", "_type": "Value"}, "pairID": string, "premise": string,
        "premise_binary_parse": string, "premise_parse": string, "hypothesis": string,
        "hypothesis_binary_parse": string, "hypothesis_parse": string, "genre": string, "label": NLI_LABEL,
    }
    for k, (split, n) in enumerate([("train", 2000), ("validation_matched", 200), ("validation_mismatched", 200)]):
        rows = nli_pairs("en", n, SEED + 200 + k)
        parse = lambda s: "( " + " ".join(s.split()) + " )"
        write_parquet(os.path.join(d, "data", f"{split}-00000-of-00001.parquet"), {
            "promptID": pa.array([10_000 * k + i // 3 for i in range(n)], type=pa.int32()),
            "pairID": pa.array([f"{10_000 * k + i // 3}{'enc'[i % 3]}" for i in range(n)], type=pa.string()),
            "premise": pa.array([r[0] for r in rows], type=pa.string()),
            "premise_binary_parse": pa.array([parse(r[0]) for r in rows], type=pa.string()),
            "premise_parse": pa.array(["(ROOT " + parse(r[0]) + ")" for r in rows], type=pa.string()),
            "hypothesis": pa.array([r[1] for r in rows], type=pa.string()),
            "hypothesis_binary_parse": pa.array([parse(r[1]) for r in rows], type=pa.string()),
            "hypothesis_parse": pa.array(["(ROOT " + parse(r[1]) + ")" for r in rows], type=pa.string()),
            "genre": pa.array([genres[i % len(genres)] for i in range(n)], type=pa.string()),
            "label": pa.array([r[2] for r in rows], type=pa.int64()),
        }, features)


def write_xnli(d):
    import pyarrow as pa

    string = {"dtype": "string", "_type": "Value"}
    features = {"premise": string, "hypothesis": string, "label": NLI_LABEL}
    for i, lang in enumerate(XNLI_LANGUAGES):
        os.makedirs(os.path.join(d, lang))
        for k, (split, n) in enumerate([("train", 100), ("validation", 50), ("test", 100)]):
            rows = nli_pairs(lang, n, SEED + 300 + 10 * i + k)
            write_parquet(os.path.join(d, lang, f"{split}-00000-of-00001.parquet"), {
                "premise": pa.array([r[0] for r in rows], type=pa.string()),
                "hypothesis": pa.array([r[1] for r in rows], type=pa.string()),
                "label": pa.array([r[2] for r in rows], type=pa.int64()),
            }, features)


def random_image(rng, size, colour):
    """A smooth background and a few shapes tinted by the class colour (compresses like a photo, roughly)."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    small = Image.fromarray(np.array([[[rng.randrange(256) for _ in range(3)] for _ in range(4)] for _ in range(4)],
                                     dtype=np.uint8))
    img = small.resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(w // 8, w // 2), y0 + rng.randint(h // 8, h // 2)
        tint = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in colour)
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)([x0, y0, x1, y1], fill=tint)
    return img.filter(ImageFilter.GaussianBlur(1))


def encode(img, fmt):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_oxford_flowers(d):
    """102 classes; train 10 a class in two shards, test 4 a class; JPEGs of 160–500 px a side."""
    import pyarrow as pa

    os.makedirs(os.path.join(d, "data"))
    rng = random.Random(SEED + 400)
    classes = [f"flower_{i:03d}" for i in range(102)]
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in classes]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
    for split, per_class, shards in [("train", 10, 2), ("test", 4, 1)]:
        labels = [c for c in range(len(classes)) for _ in range(per_class)]
        rng.shuffle(labels)
        images = []
        for i, c in enumerate(labels):
            size = (rng.randint(160, 500), rng.randint(160, 500))
            images.append({"bytes": encode(random_image(rng, size, colours[c]), "JPEG"), "path": f"{split}_{i:05d}.jpg"})
        for s in range(shards):
            part = slice(s * len(labels) // shards, (s + 1) * len(labels) // shards)
            write_parquet(os.path.join(d, "data", f"{split}-{s:05d}-of-{shards:05d}.parquet"), {
                "image": pa.array(images[part], type=image_type),
                "label": pa.array(labels[part], type=pa.int64()),
            }, features)


def write_cifar100(d):
    """CIFAR-100's Hub layout (a `cifar100` configuration folder): `img` 32×32 PNG, `fine_label`, `coarse_label`."""
    import pyarrow as pa

    os.makedirs(os.path.join(d, "cifar100"))
    rng = random.Random(SEED + 500)
    fine = [f"fine_{i:02d}" for i in range(100)]
    coarse = [f"coarse_{i:02d}" for i in range(20)]
    colours = [tuple(rng.randrange(256) for _ in range(3)) for _ in fine]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"img": {"_type": "Image"}, "fine_label": {"names": fine, "_type": "ClassLabel"},
                "coarse_label": {"names": coarse, "_type": "ClassLabel"}}
    for split, per_class in [("train", 10), ("test", 2)]:
        labels = [c for c in range(100) for _ in range(per_class)]
        rng.shuffle(labels)
        images = [{"bytes": encode(random_image(rng, (32, 32), colours[c]), "PNG"), "path": None} for c in labels]
        write_parquet(os.path.join(d, "cifar100", f"{split}-00000-of-00001.parquet"), {
            "img": pa.array(images, type=image_type),
            "fine_label": pa.array(labels, type=pa.int64()),
            "coarse_label": pa.array([c // 5 for c in labels], type=pa.int64()),
        }, features)


WRITERS = {
    "gpt2": lambda d: write_gpt2(d, 12, 768, 12),
    "gpt2-xl": lambda d: write_gpt2(d, 48, 1600, 25),
    "xlm-roberta-base": write_xlmr,
    "vit-base-patch16-224": write_vit,
    "m2d2": write_m2d2,
    "multi_nli": write_multi_nli,
    "xnli": write_xnli,
    "oxford-flowers": write_oxford_flowers,
    "cifar100": write_cifar100,
}

# ---------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------


def check(out, names):
    from safetensors import safe_open
    from tokenizers import Tokenizer

    def loads_cleanly(cls, d, **inputs):
        model, info = cls.from_pretrained(d, output_loading_info=True)
        # The GPT-2 mask buffers and the XLM-R pooler may come back as unexpected keys: the Hub's files hold them.
        fine = lambda k: k.endswith(".attn.bias") or ".pooler." in k
        bad = {k: [x for x in info.get(k, []) if not fine(x)] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        bad = {k: v for k, v in bad.items() if v}
        assert not bad, f"{d}: {bad}"
        with torch.no_grad():
            logits = model.eval()(**inputs).logits
        assert torch.isfinite(logits).all()
        print(f"check {os.path.basename(d)}: {cls.__name__} loads, logits {tuple(logits.shape)}")

    from transformers import GPT2LMHeadModel, ViTForImageClassification, XLMRobertaForMaskedLM

    if "gpt2" in names:
        d = os.path.join(out, "gpt2")
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        ids = tok.encode("Hello world, 1961.<|endoftext|>").ids
        assert tok.get_vocab_size() == 50_257 and ids[-1] == 50_256
        loads_cleanly(GPT2LMHeadModel, d, input_ids=torch.tensor([ids]))
    if "gpt2-xl" in names:
        d = os.path.join(out, "gpt2-xl")
        with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
            n = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith(".attn.bias"))
        print(f"check gpt2-xl: {n / 1e6:.1f} M parameters")
    if "xlm-roberta-base" in names:
        d = os.path.join(out, "xlm-roberta-base")
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        enc = tok.encode(*nli_pairs("de", 1, 0)[0][:2])
        assert enc.ids[0] == 0 and 3 not in enc.ids, enc.tokens
        loads_cleanly(XLMRobertaForMaskedLM, d, input_ids=torch.tensor([enc.ids]))
    if "vit-base-patch16-224" in names:
        d = os.path.join(out, "vit-base-patch16-224")
        loads_cleanly(ViTForImageClassification, d, pixel_values=torch.randn(1, 3, 224, 224))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write into (created)")
    ap.add_argument("--check", action="store_true", help="load the written models back (transformers)")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"folders to write (default: all): {', '.join(WRITERS)}")
    args = ap.parse_args()
    names = args.names or list(WRITERS)
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        ap.error(f"unknown folder(s) {unknown}; expected some of {list(WRITERS)}")
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        final = os.path.join(args.out, name)
        if os.path.exists(final):
            print(f"{name}: exists, skipped")
            continue
        partial = os.path.join(args.out, f".{name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        WRITERS[name](partial)
        os.rename(partial, final)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(final) for f in fs)
        print(f"{name}: wrote {final} ({size / 1e6:.1f} MB)")
    if args.check:
        check(args.out, names)


if __name__ == "__main__":
    main()
