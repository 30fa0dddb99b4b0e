"""Fixtures of the causal-LM parity tests (crates/tram-text/tests/lm_*.rs), written with transformers.

    python crates/tram-text/reference/lm_fixtures.py            # tiny fixtures only (seconds)
    python crates/tram-text/reference/lm_fixtures.py --smollm2  # also the real SmolLM2 checks (needs
                                                                # `bash tools/assets.sh lm`; ~2 min)

Needs torch 2.11, transformers==5.24.0, tokenizers==0.23.3, gguf==0.19.0, accelerate==1.15.0, safetensors.
Writes under crates/tram-text/tests/fixtures/lm/:

- tokenizer.json                a tiny byte-level BPE (trained here on the text below), <|endoftext|> special
- gpt2-tiny/                    GPT2LMHeadModel, save_pretrained as transformers 5 writes it (`transformer.` prefix,
                                no attn.bias buffers), plus tokenizer.json
- gpt2-tiny-hub/                the same weights laid out as the Hub's files: no prefix, `h.N.attn.bias` buffers
- gpt2-tiny-expected.safetensors   ids, mask, logits (eval mode), loss (transformers' labels loss, -100 at padding)
- llama-tiny/                   LlamaForCausalLM (GQA 4/2, tied head), save_pretrained, plus tokenizer.json
- llama-tiny-expected.safetensors  the same quantities
- llama-tiny.gguf               the tiny Llama as llama.cpp's converter writes it (Q/K rows permuted), with
                                Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16 and F32 tensors and the BPE vocabulary
- llama-tiny-gguf-expected.safetensors  every tensor as gguf.quants.dequantize gives it, un-permuted, under its
                                Hugging Face name; and logits of transformers loading the GGUF itself
- m2d2-tiny/                    a tiny M2D2 folder as the Hub lays it out: data/<config>.tar.gz, each holding
                                <config>/{train,valid,test}.txt (one example per line); one config extracted
- smollm2-tokens.json           (--smollm2) ids of transformers' GGUF tokenizer on test sentences
- smollm2-expected.safetensors  (--smollm2) transformers on the real GGUF: per position logsumexp, next-token NLL,
                                argmax, and the logits at 64 fixed vocabulary ids
"""

import argparse
import gzip
import io
import json
import os
import shutil
import sys
import tarfile

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "lm")

# ---- text: three small "domains" with their own words, so a model can tell them apart ----
DOMAINS = {
    "Society_and_social_sciences": (
        "the council voted on the new law . citizens asked the court about taxes . "
        "the union met the mayor and the police . voters chose a party in the election . "
    ),
    "Culture_and_the_arts": (
        "the painter showed a portrait in the gallery . the band played a song at the theatre . "
        "the poet read a novel to the audience . the museum opened a sculpture exhibit . "
    ),
    "Mathematics_and_logic": (
        "let x be a prime number greater than 2 . the sum of 3 and 4 is 7 . "
        "every group has an identity element . the proof uses induction on n . "
    ),
}


def domain_lines(name, n, seed):
    rng = np.random.default_rng(seed)
    sentences = [s.strip() + " ." for s in DOMAINS[name].split(" . ") if s.strip(" .")]
    lines = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        lines.append(" ".join(sentences[int(i)] for i in rng.integers(0, len(sentences), size=k)))
    return lines


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [line for name in DOMAINS for line in domain_lines(name, 50, 1)]
    corpus += ["Punctuation, digits 0123456789; café naïve — “quotes” 東京 🙂 tabs\tand  spaces\n"]
    tok.train_from_iterator(corpus, trainer)
    return tok


def randomise(model, seed):
    """Default init gives near-uniform logits; larger random weights (norms included) test every path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def batch(vocab, eos):
    """Two blocks of 12 tokens; the second right-padded after 8 (labels -100 there)."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, vocab, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    ids[1, 8:] = eos
    mask[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def expected(model, path, vocab, eos):
    model.eval()
    ids, mask, labels = batch(vocab, eos)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    save_file(
        {"ids": ids, "mask": mask.float(), "logits": out.logits.float().contiguous(), "loss": out.loss.reshape(1)},
        path,
    )
    print(f"{os.path.basename(path)}: loss {out.loss.item():.6f}")


def gpt2(tok_path, vocab, eos):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=32, n_layer=3, n_head=4, bos_token_id=eos, eos_token_id=eos
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    randomise(model, 1)
    d = os.path.join(OUT, "gpt2-tiny")
    model.save_pretrained(d)
    shutil.copy(tok_path, d)
    # The Hub layout: keys without `transformer.`, causal-mask buffers, no lm_head (tied).
    hub = os.path.join(OUT, "gpt2-tiny-hub")
    os.makedirs(hub, exist_ok=True)
    sd = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    for i in range(config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    save_file(sd, os.path.join(hub, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(d, "config.json"), hub)
    shutil.copy(tok_path, hub)
    expected(model, os.path.join(OUT, "gpt2-tiny-expected.safetensors"), vocab, eos)


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    parts = hf.split(".")
    i, module = parts[2], ".".join(parts[3:-1])
    return f"blk.{i}.{GGUF_NAMES[module]}.{parts[-1]}"


def llama(tok, tok_path, vocab, eos):
    import gguf
    from gguf import GGMLQuantizationType as Q
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    randomise(model, 2)
    d = os.path.join(OUT, "llama-tiny")
    model.save_pretrained(d)
    shutil.copy(tok_path, d)
    expected(model, os.path.join(OUT, "llama-tiny-expected.safetensors"), vocab, eos)

    # ---- the same model as a GGUF, quantized as llama.cpp would, one type per tensor kind ----
    path = os.path.join(OUT, "llama-tiny.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tram tiny llama")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    vocab_items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    w.add_token_list([t for t, _ in vocab_items])
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t, _ in vocab_items])
    w.add_token_merges([" ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]])
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    qtype = {
        "model.embed_tokens.weight": Q.Q8_0,
        "self_attn.q_proj": Q.Q4_0,
        "self_attn.k_proj": Q.Q4_1,
        "self_attn.v_proj": Q.F16,
        "self_attn.o_proj": Q.Q5_0,
        "mlp.gate_proj": Q.Q5_1,
        "mlp.up_proj": Q.BF16,
        "mlp.down_proj": Q.Q8_0,
    }
    expect = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        a = t.float().numpy()
        if ".q_proj." in name:
            a = permute(a, config.num_attention_heads)
        elif ".k_proj." in name:
            a = permute(a, config.num_key_value_heads)
        kind = next((q for k, q in qtype.items() if k in name), Q.F32)
        data = gguf.quants.quantize(a, kind) if kind != Q.F32 else a
        w.add_tensor(gguf_name(name), data, raw_dtype=kind if kind != Q.F32 else None)
        back = gguf.quants.dequantize(data, kind).reshape(a.shape) if kind != Q.F32 else a
        if ".q_proj." in name:
            back = unpermute(back, config.num_attention_heads)
        elif ".k_proj." in name:
            back = unpermute(back, config.num_key_value_heads)
        expect[name] = torch.from_numpy(np.ascontiguousarray(back, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # transformers loading the GGUF itself: the logits our GGUF loader must reproduce.
    from transformers import AutoModelForCausalLM

    m2 = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="llama-tiny.gguf", dtype=torch.float32)
    m2.eval()
    sd2 = m2.state_dict()
    for k, v in expect.items():
        assert torch.equal(sd2[k], v), f"transformers' GGUF loading differs from gguf.quants.dequantize on {k}"
    ids, mask, labels = batch(vocab, eos)
    with torch.no_grad():
        out = m2(input_ids=ids, attention_mask=mask, labels=labels)
    expect.update({"ids": ids, "mask": mask.float(), "logits": out.logits.float().contiguous(), "loss": out.loss.reshape(1)})
    save_file(expect, os.path.join(OUT, "llama-tiny-gguf-expected.safetensors"))
    print(f"llama-tiny.gguf: {os.path.getsize(path)} bytes, transformers loss {out.loss.item():.6f}")


def add_file(tar, name, text):
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def m2d2():
    root = os.path.join(OUT, "m2d2-tiny")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "data"))
    sizes = {"train": 120, "valid": 12, "test": 12}
    for k, name in enumerate(DOMAINS):
        files = {s: "\n".join(domain_lines(name, n, 100 * k + j)) + "\n" for j, (s, n) in enumerate(sizes.items())}
        # A blank line, as the real files have; the reader skips it.
        files["test"] = files["test"].replace("\n", "\n\n", 1)
        if name == "Mathematics_and_logic":
            # Extracted, as `tar -xzf` leaves it (the reader takes either).
            os.makedirs(os.path.join(root, name))
            for s, text in files.items():
                with open(os.path.join(root, name, f"{s}.txt"), "w") as f:
                    f.write(text)
            continue
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for s, text in files.items():
                add_file(tar, f"{name}/{s}.txt", text)
        with open(os.path.join(root, "data", f"{name}.tar.gz"), "wb") as f:
            with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
                gz.write(buf.getvalue())
    print(f"m2d2-tiny: {sorted(os.listdir(root))}")


SENTENCES = [
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced "
    '"no evidence" that any irregularities took place.',
    "Prices rose 3.5% to $12.75 in 1961; 2,048 units (approx.) were sold -- or so they said!",
    "  Leading spaces,\ttabs,\n\nnewlines   and    runs of     spaces.  ",
    "Unicode: café naïve façade — “quotes” ‘single’ 東京 Москва Ἀθῆναι 🙂👍🏽 e\u0301",
    "def f(x):\n    return x ** 2  # squares\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
]


def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = os.environ.get("TRAM_CACHE", os.path.expanduser("~/.cache/tram"))
    d = os.path.join(cache, "assets", "smollm2")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.exists(os.path.join(d, name)):
        sys.exit(f"{d}/{name} is missing: run `bash tools/assets.sh lm` first")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]
    with open(os.path.join(OUT, "smollm2-tokens.json"), "w") as f:
        json.dump({"sentences": SENTENCES, "ids": ids}, f, ensure_ascii=False, indent=1)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    probe = torch.from_numpy(np.random.default_rng(3).choice(model.config.vocab_size, 64, replace=False))
    out = {"probe_ids": probe}
    for k, s in enumerate(SENTENCES[:3]):
        x = torch.tensor([ids[k]])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0].float()
        lse = logits.logsumexp(-1)
        nll = lse[:-1] - logits[:-1].gather(1, x[0, 1:, None])[:, 0]
        out[f"s{k}.ids"] = x[0]
        out[f"s{k}.logsumexp"] = lse.contiguous()
        out[f"s{k}.nll"] = nll.contiguous()
        out[f"s{k}.argmax"] = logits.argmax(-1)
        out[f"s{k}.probe_logits"] = logits[:, probe].contiguous()
        print(f"smollm2 sentence {k}: {x.shape[1]} tokens, mean NLL {nll.mean().item():.4f}")
    save_file(out, os.path.join(OUT, "smollm2-expected.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", action="store_true", help="also the real SmolLM2 checks (needs the lm assets)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    tok = train_tokenizer()
    tok_path = os.path.join(OUT, "tokenizer.json")
    tok.save(tok_path)
    vocab, eos = tok.get_vocab_size(), tok.token_to_id("<|endoftext|>")
    print(f"tokenizer: {vocab} tokens, <|endoftext|> = {eos}")
    gpt2(tok_path, vocab, eos)
    llama(tok, tok_path, vocab, eos)
    m2d2()
    if args.smollm2:
        smollm2()


if __name__ == "__main__":
    main()
