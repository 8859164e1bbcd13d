"""Tiny stand-ins for the tests of tests/textclass: a random BERT checkpoint folder in the Hugging
Face layout (config.json, model.safetensors, tokenizer.json), and a synthetic sentiment task
whose label is decided by which kind of word a sentence holds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors.torch import save_file

POSITIVE = ["good", "great", "fine", "happy", "nice", "superb", "lovely", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "nasty", "dull", "ugly", "grim"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "and", "story", "cast", "so"]
WORDS = POSITIVE + NEGATIVE + FILLER
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
D, H, FF, LAYERS, MAX = 16, 2, 32, 2, 40
V = len(SPECIALS) + len(WORDS)


def hf_config() -> dict:
    return {
        "model_type": "bert",
        "vocab_size": V,
        "hidden_size": D,
        "num_attention_heads": H,
        "intermediate_size": FF,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": MAX,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
    }


def hf_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as in a Hugging Face BertModel checkpoint."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    t = {
        "embeddings.word_embeddings.weight": r(V, D, scale=1.0),
        "embeddings.position_embeddings.weight": r(MAX, D),
        "embeddings.token_type_embeddings.weight": r(2, D),
        "embeddings.LayerNorm.weight": torch.ones(D),
        "embeddings.LayerNorm.bias": torch.zeros(D),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[f"{p}attention.self.{name}.weight"] = r(D, D)
            t[f"{p}attention.self.{name}.bias"] = torch.zeros(D)
        t[f"{p}attention.output.dense.weight"] = r(D, D)
        t[f"{p}attention.output.dense.bias"] = torch.zeros(D)
        t[f"{p}intermediate.dense.weight"] = r(FF, D)
        t[f"{p}intermediate.dense.bias"] = torch.zeros(FF)
        t[f"{p}output.dense.weight"] = r(D, FF)
        t[f"{p}output.dense.bias"] = torch.zeros(D)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"{p}{ln}.weight"] = torch.ones(D)
            t[f"{p}{ln}.bias"] = torch.zeros(D)
    return t


def write_tiny_bert(folder: Path, sentence_encoder: bool = False) -> Path:
    """A random tiny BERT folder with a WordPiece tokenizer.json over :data:`WORDS`;
    ``sentence_encoder`` adds a sentence-transformers ``1_Pooling`` (mean) config."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config()))
    save_file(hf_tensors(), str(folder / "model.safetensors"))
    vocab = {w: i for i, w in enumerate([*SPECIALS, *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(folder / "tokenizer.json"))
    if sentence_encoder:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
        )
    return folder


def sentiment_rows(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """``n`` sentences of 3-12 words with their share of positive sentiment words in [0, 1]
    (every sentence holds at least one sentiment word)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        pos = rng.randint(0, 3)
        neg = rng.randint(0 if pos else 1, 3)
        words += [rng.choice(POSITIVE) for _ in range(pos)]
        words += [rng.choice(NEGATIVE) for _ in range(neg)]
        rng.shuffle(words)
        rows.append((" ".join(words), pos / (pos + neg)))
    return rows


def write_sentiment(path: Path, n: int, seed: int = 0, regression: bool = False) -> Path:
    """A TSV ``label<TAB>sentence`` file: ``pos``/``neg`` by the majority of sentiment words
    (ties dropped), or the positive share as a float (``regression``)."""
    lines = ["label\tsentence"]
    for text, share in sentiment_rows(n, seed):
        if regression:
            lines.append(f"{share:.4f}\t{text}")
        elif share != 0.5:
            lines.append(f"{'pos' if share > 0.5 else 'neg'}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: ``--set`` overrides that make a fine-tuning run of the tiny model take seconds.
TINY_SETS = [
    'train.device="cpu"',
    "train.warmup_steps=5",
    "train.lr=0.003",
    "train.log_every=5",
    "train.eval_every=null",
    "data.batch_size=16",
]


def tiny_argv(model: Path, train: Path, valid: Path, run: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY_SETS for a in ("--set", s)]
    return [
        "finetune",
        "--model",
        str(model),
        "--data",
        str(train),
        "--valid",
        str(valid),
        "--run",
        str(run),
        "--no-progress",
        *sets,
        *extra,
    ]
