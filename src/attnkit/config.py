"""Configuration: frozen, validated dataclasses for the models, training and decoding, stored in
every checkpoint. Each task keeps its own run config next to its code (e.g.
:mod:`attnkit.translation.config`).

Every config is a frozen dataclass checked in ``__post_init__``. Configs load from dicts (TOML or
JSON files) where unknown keys are errors, and take command-line overrides such as
``--set model.num_encoder_layers=2`` through :func:`apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ConfigError",
    "TransformerConfig",
    "BahdanauConfig",
    "TrainConfig",
    "DecodeConfig",
    "ViTConfig",
    "EncoderConfig",
    "DecoderLMConfig",
    "from_dict",
    "section",
    "to_dict",
    "apply_overrides",
    "load_config_file",
    "merge_config_file",
    "require",
    "require_positive",
    "require_probability",
    "require_choice",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def require_positive(obj: Any, *names: str) -> None:
    """Each named field of ``obj`` must be > 0."""
    for name in names:
        value = getattr(obj, name)
        require(value > 0, f"{type(obj).__name__}.{name} must be > 0, got {value}")


def require_probability(obj: Any, *names: str) -> None:
    """Each named field of ``obj`` must be in [0, 1)."""
    for name in names:
        value = getattr(obj, name)
        require(0.0 <= value < 1.0, f"{type(obj).__name__}.{name} must be in [0, 1), got {value}")


def require_choice(obj: Any, name: str, options: tuple[str, ...]) -> None:
    """Field ``name`` of ``obj`` must be one of ``options``."""
    value = getattr(obj, name)
    require(
        value in options, f"{type(obj).__name__}.{name} must be one of {options}, got {value!r}"
    )


@dataclass(frozen=True)
class TransformerConfig:
    """Encoder–decoder Transformer ("Attention Is All You Need"; base model: d_model 512, 8 heads,
    ffn 2048, 6+6 layers, dropout 0.1)."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256
    num_heads: int = 4
    ffn_hidden: int = 1024
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_len: int = 256
    norm_first: bool = False
    positional: str = "sinusoidal"
    activation: str = "relu"
    tie_embeddings: str = "decoder"
    layer_norm_eps: float = 1e-5
    pad_id: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self,
            "src_vocab_size",
            "tgt_vocab_size",
            "d_model",
            "num_heads",
            "ffn_hidden",
            "max_len",
        )
        require(
            self.num_encoder_layers >= 1 and self.num_decoder_layers >= 1,
            "TransformerConfig needs at least one encoder and one decoder layer",
        )
        require_probability(self, "dropout", "attention_dropout")
        require(
            self.d_model % self.num_heads == 0,
            f"TransformerConfig.d_model={self.d_model} is not divisible by "
            f"num_heads={self.num_heads}",
        )
        require_choice(self, "positional", ("sinusoidal", "learned", "rotary"))
        require_choice(self, "activation", ("relu", "gelu"))
        require_choice(self, "tie_embeddings", ("none", "decoder", "all"))
        if self.tie_embeddings == "all":
            require(
                self.src_vocab_size == self.tgt_vocab_size,
                "tie_embeddings='all' needs a shared vocabulary (src_vocab_size == "
                "tgt_vocab_size); use tie_embeddings='decoder' or a shared tokenizer",
            )


@dataclass(frozen=True)
class BahdanauConfig:
    """GRU encoder–decoder with additive attention (the course's Bahdanau baseline)."""

    src_vocab_size: int
    tgt_vocab_size: int
    embed_size: int = 256
    num_hiddens: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    pad_id: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self, "src_vocab_size", "tgt_vocab_size", "embed_size", "num_hiddens", "num_layers"
        )
        require_probability(self, "dropout")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run-control settings shared by every model."""

    epochs: int = 10
    max_tokens: int = 4096
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    schedule: str = "inverse_sqrt"
    warmup_steps: int = 400
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    accum_steps: int = 1
    seed: int = 0
    time_budget: float | None = None
    patience: int | None = None
    keep_best: int = 3
    keep_last: int = 0
    eval_every: int | None = None
    log_every: int = 50
    device: str = "auto"
    amp: bool = True
    #: also use bfloat16 autocast on a CPU with AMX (Intel's bfloat16 matrix unit; ignored
    #: elsewhere; the fused attention kernel still runs in float32 when training, see
    #: attnkit.attention.functional). Measured: the text translation preset's step 1.7x, the
    #: 128-wide language model's 1.35x; presets opt in (text translation, char-small).
    cpu_amp: bool = False
    compile: bool = False
    #: what the cosine or linear decay is planned over: ``steps`` (epochs x batches),
    #: ``time`` (the fraction of ``time_budget`` spent, for runs stopped by their budget), or
    #: ``auto`` (``time`` when there is a budget and a cosine or linear schedule, else ``steps``)
    schedule_horizon: str = "steps"

    @property
    def decays_by_time(self) -> bool:
        """Whether the cosine or linear decay follows the time budget (``schedule_horizon``)."""
        if self.schedule_horizon == "auto":
            return self.time_budget is not None and self.schedule in ("cosine", "linear")
        return self.schedule_horizon == "time"

    def __post_init__(self) -> None:
        require_positive(
            self, "epochs", "max_tokens", "lr", "accum_steps", "keep_best", "log_every"
        )
        require_choice(self, "schedule_horizon", ("steps", "time", "auto"))
        if self.schedule_horizon == "time":
            require(
                self.schedule in ("cosine", "linear"),
                f"TrainConfig.schedule_horizon='time' plans the cosine or linear decay; it "
                f"does nothing for schedule={self.schedule!r}: set schedule='cosine' (or "
                "'linear') or schedule_horizon='steps'",
            )
            require(
                self.time_budget is not None,
                "TrainConfig.schedule_horizon='time' needs a time_budget (--time-budget) "
                "to plan the decay over; set one or use schedule_horizon='steps'",
            )
        require_choice(self, "schedule", ("inverse_sqrt", "cosine", "linear", "constant"))
        require_probability(self, "label_smoothing")
        require(
            self.warmup_steps >= 0,
            f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}",
        )
        require(self.clip_norm >= 0, f"TrainConfig.clip_norm must be >= 0, got {self.clip_norm}")
        require(
            self.time_budget is None or self.time_budget > 0,
            f"TrainConfig.time_budget must be > 0 seconds, got {self.time_budget}",
        )
        require(self.keep_last >= 0, f"TrainConfig.keep_last must be >= 0, got {self.keep_last}")
        require(
            self.eval_every is None or self.eval_every >= 1,
            f"TrainConfig.eval_every must be >= 1 steps (or unset), got {self.eval_every}",
        )
        require(
            self.patience is None or self.patience >= 1,
            f"TrainConfig.patience must be >= 1 validations (or unset), got {self.patience}",
        )


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings. Length penalty: ``gnmt`` is ((5 + |y|) / 6) ** alpha (Wu et al. 2016);
    ``average`` divides the log-probability by |y| ** alpha (alpha = 1: per-token average).

    ``early_stopping``: beam search ends a sentence as soon as it has ``beam_size`` finished
    hypotheses (the rule of fairseq, CTranslate2 and Hugging Face's ``early_stopping=True``;
    faster, and a live hypothesis that could still have won under the length penalty is
    dropped). False (default): only once no live hypothesis can beat the worst finished one.
    """

    beam_size: int = 4
    n_best: int = 1
    length_penalty: float = 0.6
    length_penalty_kind: str = "gnmt"
    max_len_a: float = 1.5
    max_len_b: int = 10
    min_len_a: float = 0.0
    no_repeat_ngram: int = 0
    early_stopping: bool = False

    def __post_init__(self) -> None:
        require_positive(self, "beam_size", "n_best")
        require(
            self.n_best <= self.beam_size,
            f"DecodeConfig.n_best={self.n_best} cannot exceed beam_size={self.beam_size}",
        )
        require_choice(self, "length_penalty_kind", ("gnmt", "average", "none"))
        require(self.no_repeat_ngram >= 0, "DecodeConfig.no_repeat_ngram must be >= 0")


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from a file or ``--set``) fits a field's type hint. Only the simple
    kinds the configs use are checked (bool, int, float, str, tuples, dicts, ``X | None``); an
    int is a valid float, a bool is never a number."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is tuple or typing.get_origin(hint) is tuple:
        return isinstance(value, tuple)
    if hint is dict or typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _not_a_table(name: str, value: Any) -> str:
    return (
        f"{name!r} must be a table of settings ([{name}] in TOML, "
        f'"{name}": {{...}} in JSON), got {type(value).__name__} {value!r}'
    )


def section(data: dict[str, Any], name: str) -> dict[str, Any]:
    """``data[name]`` (``{}`` when absent) as a table; a one-line ConfigError when it is a value.

    The config readers of every task take their sections through this, so that ``model = 3``
    in a config file (or ``--set model=3``) is an error naming the section, not a traceback.
    """
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config section {_not_a_table(name, value)}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a config dataclass from a dict; unknown keys and wrong nesting are errors."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where or cls.__name__}: expected a table/dict, got {type(data).__name__}"
        )
    renamed = getattr(cls, "RENAMED_FIELDS", {})
    if renamed:  # runs and config files written with an earlier field name still load
        for old, new in renamed.items():
            if old in data:
                if new in data:
                    raise ConfigError(
                        f"{where or cls.__name__}: both {old!r} and its new name "
                        f"{new!r} are given; keep only {new!r}"
                    )
                data = {**{k: v for k, v in data.items() if k != old}, new: data[old]}
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(names)}"
        )
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}".lstrip("."))
        elif key == "betas" and isinstance(value, list):
            value = tuple(value)
        if not _matches(value, hint):
            name = f"{where}.{key}" if where else f"{cls.__name__}.{key}"
            raise ConfigError(f"{name}: expected {_type_name(hint)}, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None
    except ConfigError as err:  # a __post_init__ check: name the key as a config file has it
        if not where:
            raise
        raise ConfigError(str(err).replace(f"{cls.__name__}.", f"{where}.")) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (a copy is returned).

    Values are parsed as JSON where possible (numbers, lists, true/false, null), else kept as text.
    """
    result = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value, e.g. model.num_encoder_layers=2"
            )
        path, value = item.split("=", 1)
        parts = path.strip().split(".")
        node = result
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(
                f"--set {item!r}: {path.strip()!r} is a section; set one of its keys, "
                f"e.g. {path.strip()}.KEY=VALUE"
            )
        node[parts[-1]] = _parse_value(value.strip())
    return result


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: config files must be .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot parse: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f'{path}: expected sections such as {{"model": {{...}}, "train": {{...}}}}, '
            f"got a {type(data).__name__}"
        )
    return data


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder-only Transformer (BERT family): word + learned position + token-type embeddings,
    an embedding LayerNorm, then ``num_layers`` encoder blocks (post-LN as BERT, or pre-LN with a
    final LayerNorm). MiniLM-L6-H384: vocab 30522, d_model 384, 12 heads, ffn 1536, 6 layers,
    max_len 512, layer_norm_eps 1e-12."""

    vocab_size: int
    d_model: int = 256
    num_heads: int = 4
    ffn_hidden: int = 1024
    num_layers: int = 4
    max_len: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = False
    layer_norm_eps: float = 1e-12
    pad_id: int = 0

    def __post_init__(self) -> None:
        require_positive(
            self,
            "vocab_size",
            "d_model",
            "num_heads",
            "ffn_hidden",
            "num_layers",
            "max_len",
            "type_vocab_size",
            "layer_norm_eps",
        )
        require_probability(self, "dropout", "attention_dropout")
        require_choice(self, "activation", ("relu", "gelu", "gelu_tanh"))
        require(
            self.d_model % self.num_heads == 0,
            f"EncoderConfig.d_model={self.d_model} is not divisible by num_heads={self.num_heads}",
        )
        require(
            0 <= self.pad_id < self.vocab_size,
            f"EncoderConfig.pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id}",
        )


@dataclass(frozen=True)
class ViTConfig:
    """Vision Transformer (Dosovitskiy et al., 2021). ViT-B/16: image 224, patch 16, d_model 768,
    num_layers 12, num_heads 12, ffn_hidden 3072 (the paper's hidden size D, layers, heads and
    MLP size). Runs written with the paper's names (dim, depth, heads, mlp_dim) still load.
    Defaults suit the 8x8 scikit-learn digits.

    ``pos_embedding``: ``learned1d`` (one learned row per token, class token included),
    ``learned2d`` (a learned (row, col) grid for the patches), ``sincos2d`` (fixed 2-D sine-cosine
    table for the patches); the 2-D kinds give the class token its own learned vector.
    ``pool``: ``cls`` (class token) or ``mean`` (average of the patch tokens).
    """

    image_size: int = 8
    patch_size: int = 2
    in_channels: int = 1
    num_classes: int = 10
    d_model: int = 64
    num_layers: int = 4
    num_heads: int = 4
    ffn_hidden: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.0
    pos_embedding: str = "learned1d"
    pool: str = "cls"
    layer_norm_eps: float = 1e-6

    #: Names used by attnkit 0.1.0 (and the ViT paper) that load as the current ones.
    RENAMED_FIELDS: typing.ClassVar[dict[str, str]] = {
        "dim": "d_model",
        "depth": "num_layers",
        "heads": "num_heads",
        "mlp_dim": "ffn_hidden",
    }

    def __post_init__(self) -> None:
        require_positive(
            self,
            "image_size",
            "patch_size",
            "in_channels",
            "num_classes",
            "d_model",
            "num_layers",
            "num_heads",
            "ffn_hidden",
            "layer_norm_eps",
        )
        require_probability(self, "dropout", "attention_dropout")
        require(
            self.image_size % self.patch_size == 0,
            f"ViTConfig.image_size={self.image_size} is not divisible by "
            f"patch_size={self.patch_size}; choose a patch_size that divides the image size",
        )
        require(
            self.d_model % self.num_heads == 0,
            f"ViTConfig.d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
            "choose num_heads among the divisors of d_model",
        )
        require_choice(self, "pos_embedding", ("learned1d", "learned2d", "sincos2d"))
        require_choice(self, "pool", ("cls", "mean"))
        require(
            self.pos_embedding != "sincos2d" or self.d_model % 4 == 0,
            f"ViTConfig.d_model={self.d_model} must be divisible by 4 for pos_embedding='sincos2d'",
        )


def merge_config_file(base: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Merge a config file's sections into ``base`` (in place; tables update, values replace).

    A table where ``base`` has a value, or a value where it has a table, is an error naming the
    file and the section.
    """
    for name, values in load_config_file(path).items():
        current = base.get(name)
        if isinstance(values, dict) and current is not None and not isinstance(current, dict):
            raise ConfigError(f"{path}: {name!r} is a setting, not a table; write {name} = VALUE")
        if not isinstance(values, dict) and isinstance(current, dict):
            raise ConfigError(f"{path}: {_not_a_table(name, values)}")
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return base


@dataclass(frozen=True)
class DecoderLMConfig:
    """Decoder-only (GPT-style) language model: token embedding, positions, ``num_layers`` pre-LN
    causal self-attention blocks, a final LayerNorm and an output projection tied to the token
    embedding. ``max_len`` is the context (block) size. ``positional``: ``learned`` (GPT-2),
    ``rotary`` (RoFormer) or ``alibi`` (Press et al.). ``vocab_size`` comes from the tokenizer.
    ``pad_id`` is the padding id (its embedding starts at zero, the loss ignores it); None when
    the tokenizer has no padding."""

    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    ffn_hidden: int = 512
    num_layers: int = 4
    max_len: int = 256
    dropout: float = 0.0
    attention_dropout: float = 0.0
    positional: str = "learned"
    activation: str = "gelu"
    bias: bool = True
    layer_norm_eps: float = 1e-5
    pad_id: int | None = 0

    def __post_init__(self) -> None:
        require_positive(
            self,
            "vocab_size",
            "d_model",
            "num_heads",
            "ffn_hidden",
            "num_layers",
            "max_len",
            "layer_norm_eps",
        )
        require_probability(self, "dropout", "attention_dropout")
        require_choice(self, "positional", ("learned", "rotary", "alibi"))
        require_choice(self, "activation", ("relu", "gelu", "gelu_tanh"))
        require(
            self.d_model % self.num_heads == 0,
            f"DecoderLMConfig.d_model={self.d_model} is not divisible by "
            f"num_heads={self.num_heads}; choose num_heads among the divisors of d_model",
        )
        require(
            self.positional != "rotary" or (self.d_model // self.num_heads) % 2 == 0,
            f"DecoderLMConfig: positional='rotary' needs an even head size, got "
            f"d_model // num_heads = {self.d_model // self.num_heads}",
        )
        require(
            self.pad_id is None or 0 <= self.pad_id < self.vocab_size,
            f"DecoderLMConfig.pad_id must be in [0, vocab_size={self.vocab_size}) or None, "
            f"got {self.pad_id}",
        )
