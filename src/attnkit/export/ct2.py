"""CTranslate2 export of attnkit's encoder–decoder Transformer, and translation with the result.

:func:`transformer_spec` writes a CTranslate2 ``TransformerSpec`` from a
:class:`~attnkit.models.transformer.Transformer`, for every variant attnkit trains: post-LN and
pre-LN (``norm_first``), ``tie_embeddings`` none/decoder/all, sinusoidal and learned positions,
ReLU and GELU. Positions are always written as an explicit (max_len, D) table (attnkit's
sinusoidal table interleaves sine and cosine, CTranslate2's built-in one does not), so the exported
model computes what attnkit computes. Rotary positions and the Bahdanau GRU model have no
CTranslate2 equivalent and are refused with a one-line error.

Vocabularies are attnkit's ids written as decimal strings (``"0"`` .. ``"V-1"``), so CTranslate2
never tokenizes anything: :class:`CTranslate2Translator` encodes with the run's own tokenizers,
passes the ids as those strings, and decodes the ids it gets back with the run's tokenizers.

An exported folder (default ``RUN/export/ctranslate2``) holds CTranslate2's files (``model.bin``,
``config.json``, vocabularies), ``attnkit.json`` (the run's config sections and what was exported)
and a copy of the run's ``tokenizer/``; it is enough to translate without the run folder.

The output folder is checked first and written beside its place, then swapped in
(:mod:`attnkit.export.folders`).
"""

from __future__ import annotations

import json
import logging
import shutil
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnkit.config import ConfigError
from attnkit.data.text import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from attnkit.decoding import Hypothesis, length_limits
from attnkit.export.folders import ExportLayout, check_out_folder, staged_folder
from attnkit.layers.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from attnkit.models import build_seq2seq
from attnkit.models.transformer import Transformer
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import (
    describe_kind,
    find_checkpoint,
    is_run_folder,
    read_run_config,
)
from attnkit.translation.config import RunConfig, load_run_config, run_config_from_dict
from attnkit.translation.task import load_tokenizers
from attnkit.translation.translator import Translator
from attnkit.version import __version__

__all__ = [
    "CT2_LAYOUT",
    "CT2_QUANTIZATIONS",
    "DEFAULT_SUBDIR",
    "META_FILE",
    "CTranslate2Translator",
    "check_exportable",
    "export_ctranslate2",
    "import_ctranslate2",
    "stale_export_reason",
    "transformer_spec",
    "vocabulary",
]

#: ``--quantization`` choices of ``attnkit export --format ctranslate2``.
CT2_QUANTIZATIONS = ("float32", "int8", "int8_float32")
#: Where an export goes by default, under the run folder.
DEFAULT_SUBDIR = Path("export") / "ctranslate2"
log = logging.getLogger(__name__)

#: attnkit's own description of an exported folder.
META_FILE = "attnkit.json"
META_FORMAT = 1


#: A CTranslate2 export (the vocabularies: ``shared_vocabulary.json`` or source and target ones).
CT2_LAYOUT = ExportLayout(
    "CTranslate2",
    (META_FILE, "model.bin"),
    (META_FILE, "model.bin", "config.json", "*vocabulary*", "tokenizer"),
)


def import_ctranslate2() -> Any:
    """The ``ctranslate2`` module, or an ImportError that says how to install it."""
    try:
        import ctranslate2
    except ImportError as err:
        raise ImportError(
            "the CTranslate2 engine needs the ctranslate2 package; install it with "
            "`pip install 'attnkit[export]'` (or `pip install ctranslate2`)"
        ) from err
    return ctranslate2


def check_exportable(model_type: str, config: dict[str, Any] | None = None) -> None:
    """Raise ConfigError (one line, naming the setting) for a model CTranslate2 cannot express.

    Args:
        model_type: the run's ``model_type`` (``transformer`` or ``bahdanau``).
        config: the run's model section (``positional`` is checked).
    """
    if model_type != "transformer":
        raise ConfigError(
            f"CTranslate2 export supports Transformer runs only; this run's model_type is "
            f"{model_type!r} (a GRU with additive attention has no CTranslate2 spec): translate "
            "it with --engine attnkit"
        )
    positional = (config or {}).get("positional", "sinusoidal")
    if positional not in ("sinusoidal", "learned"):
        raise ConfigError(
            f"CTranslate2 export supports model.positional 'sinusoidal' or 'learned', not "
            f"{positional!r} (attnkit's rotary self-attention has no CTranslate2 encoder-decoder "
            "equivalent): translate this run with --engine attnkit"
        )


def vocabulary(size: int) -> list[str]:
    """The CTranslate2 vocabulary of an attnkit model: id ``i`` is the token string ``str(i)``."""
    return [str(i) for i in range(size)]


def _array(t: torch.Tensor) -> Any:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _linear(spec: Any, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    spec.weight = _array(weight)
    if bias is not None:
        spec.bias = _array(bias)


def _norm(spec: Any, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _array(norm.weight)
    if norm.bias is None:
        spec.beta = _array(torch.zeros_like(norm.weight))
    else:
        spec.beta = _array(norm.bias)


def _self_attention(spec: Any, mha: Any, norm: torch.nn.LayerNorm) -> None:
    if not mha.packed:
        raise ConfigError("CTranslate2 export: attention with kdim/vdim != d_model is unsupported")
    _linear(spec.linear[0], mha.in_proj.weight, mha.in_proj.bias)  # (3D, D): q, k, v
    _linear(spec.linear[1], mha.out_proj.weight, mha.out_proj.bias)
    _norm(spec.layer_norm, norm)


def _cross_attention(spec: Any, mha: Any, norm: torch.nn.LayerNorm) -> None:
    d = mha.d_model
    w, b = mha.in_proj.weight, mha.in_proj.bias
    _linear(spec.linear[0], w[:d], None if b is None else b[:d])  # queries (D, D)
    _linear(spec.linear[1], w[d:], None if b is None else b[d:])  # keys and values (2D, D)
    _linear(spec.linear[2], mha.out_proj.weight, mha.out_proj.bias)
    _norm(spec.layer_norm, norm)


def _ffn(spec: Any, ffn: Any, norm: torch.nn.LayerNorm) -> None:
    _linear(spec.linear_0, ffn.dense1.weight, ffn.dense1.bias)
    _linear(spec.linear_1, ffn.dense2.weight, ffn.dense2.bias)
    _norm(spec.layer_norm, norm)


def _position_table(model: Transformer) -> torch.Tensor:
    """The (max_len, D) table attnkit adds to the scaled embeddings."""
    positions = model.positions
    if isinstance(positions, SinusoidalPositionalEncoding):
        return positions.table
    if isinstance(positions, LearnedPositionalEmbedding):
        return positions.table
    raise ConfigError(  # rotary: check_exportable names the setting
        f"CTranslate2 export: positional {model.config.positional!r} is unsupported"
    )


def transformer_spec(model: Transformer) -> Any:
    """A CTranslate2 ``TransformerSpec`` holding ``model``'s weights and vocabularies.

    The spec's special tokens are attnkit's (``"1"`` UNK, ``"2"`` BOS = decoder start, ``"3"``
    EOS); source and target vocabularies are :func:`vocabulary` of the two sizes.

    Args:
        model: an attnkit :class:`~attnkit.models.transformer.Transformer` (any device).

    Returns:
        the spec, ready for ``validate()`` / ``optimize()`` / ``save()``.
    """
    if not isinstance(model, Transformer):
        raise ConfigError(
            f"CTranslate2 export needs an attnkit Transformer, got {type(model).__name__}"
        )
    c = model.config
    check_exportable("transformer", {"positional": c.positional})
    ct2 = import_ctranslate2()
    common, ts = ct2.specs.common_spec, ct2.specs.transformer_spec
    activation = {"relu": common.Activation.RELU, "gelu": common.Activation.GELU}[c.activation]
    encoder = ts.TransformerEncoderSpec(
        c.num_encoder_layers, c.num_heads, pre_norm=c.norm_first, activation=activation
    )
    decoder = ts.TransformerDecoderSpec(
        c.num_decoder_layers, c.num_heads, pre_norm=c.norm_first, activation=activation
    )
    spec = ts.TransformerSpec(encoder, decoder)
    table = _position_table(model)  # (max_len, D)
    encoder.embeddings[0].weight = _array(model.src_embed.weight)
    encoder.position_encodings.encodings = _array(table)
    for layer, block in zip(encoder.layer, model.encoder, strict=True):
        _self_attention(layer.self_attention, block.self_attn, block.attn_res.norm)
        _ffn(layer.ffn, block.ffn, block.ffn_res.norm)
    decoder.embeddings.weight = _array(model.tgt_embed.weight)
    decoder.position_encodings.encodings = _array(table)
    for layer, block in zip(decoder.layer, model.decoder, strict=True):
        _self_attention(layer.self_attention, block.self_attn, block.self_res.norm)
        _cross_attention(layer.attention, block.cross_attn, block.cross_res.norm)
        _ffn(layer.ffn, block.ffn, block.ffn_res.norm)
    if c.norm_first:
        assert model.encoder_norm is not None and model.decoder_norm is not None
        _norm(encoder.layer_norm, model.encoder_norm)
        _norm(decoder.layer_norm, model.decoder_norm)
    decoder.projection.weight = _array(model.output_weight)  # (V, D), no bias
    spec.config.unk_token = str(UNK_ID)
    spec.config.bos_token = str(BOS_ID)
    spec.config.eos_token = str(EOS_ID)
    spec.config.decoder_start_token = str(BOS_ID)
    spec.config.layer_norm_epsilon = float(c.layer_norm_eps)
    spec.register_source_vocabulary(vocabulary(c.src_vocab_size))
    spec.register_target_vocabulary(vocabulary(c.tgt_vocab_size))
    return spec


def export_ctranslate2(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    quantization: str = "float32",
    *,
    checkpoint: str = "best",
) -> Path:
    """Export a translation run to a CTranslate2 model folder.

    Args:
        run_dir: the run folder (``config.json``, ``tokenizer/``, checkpoints).
        out_dir: the folder to write; default ``RUN/export/ctranslate2``. An existing one must
            be empty or an earlier CTranslate2 export, which is replaced (see
            :func:`check_out_folder`).
        quantization: weight type stored in ``model.bin``: ``float32``, ``int8`` or
            ``int8_float32`` (int8 weights; ``int8`` may compute in int8 on the CPU).
        checkpoint: ``best``, ``last``, a checkpoint name or folder.

    Returns:
        the written folder.
    """
    if quantization not in CT2_QUANTIZATIONS:
        raise ConfigError(
            f"--quantization must be one of {', '.join(CT2_QUANTIZATIONS)}, got {quantization!r}"
        )
    run_dir = Path(run_dir)
    raw = read_run_config(run_dir)
    if raw.get("task", "translation") != "translation":
        raise ConfigError(
            f"{run_dir} is {describe_kind(raw['task'])}; --format ctranslate2 exports "
            "translation runs (--format onnx exports ViT runs and pretrained encoders)"
        )
    check_exportable(raw.get("model_type", "transformer"), raw.get("model"))
    import_ctranslate2()
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_SUBDIR
    check_out_folder(out, CT2_LAYOUT, sources=[run_dir])
    cfg = load_run_config(run_dir)
    model = build_seq2seq(cfg.model_type, cfg.model)
    path = find_checkpoint(run_dir, checkpoint, cfg.train.keep_best)
    load_checkpoint(path, model, with_state=False)
    spec = transformer_spec(model.eval())
    spec.validate()
    spec.optimize(quantization=quantization)
    meta = {
        "format": META_FORMAT,
        "attnkit_version": __version__,
        "engine": "ctranslate2",
        "quantization": quantization,
        "checkpoint": str(path),
        "requested": checkpoint,
        "run": str(run_dir),
        "config": raw,
    }
    with staged_folder(out, CT2_LAYOUT, sources=[run_dir]) as tmp:
        spec.save(str(tmp))
        shutil.copytree(run_dir / "tokenizer", tmp / "tokenizer")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _refuse_unexportable_run(path: Path) -> None:
    """Raise :func:`check_exportable`'s error, naming ``path``, when ``path`` is a translation
    run CTranslate2 cannot express (so no export of it can exist)."""
    if not is_run_folder(path):
        return
    try:
        raw = read_run_config(path)
    except ConfigError:
        return  # not a readable run: the caller's "no export found" says what to do
    if raw.get("task", "translation") != "translation":
        return
    try:
        check_exportable(raw.get("model_type", "transformer"), raw.get("model"))
    except ConfigError as err:
        raise ConfigError(f"{path}: the CTranslate2 engine cannot run this model; {err}") from None


def _export_folder(path: str | Path) -> Path:
    """An export folder from itself or from the run folder that holds it."""
    path = Path(path)
    for candidate in (path, path / DEFAULT_SUBDIR):
        if (candidate / META_FILE).is_file() and (candidate / "model.bin").is_file():
            return candidate
    _refuse_unexportable_run(path)
    raise ConfigError(
        f"{path}: no CTranslate2 export found (looked for {META_FILE} and model.bin in it and in "
        f"{path / DEFAULT_SUBDIR}); make one with `attnkit export --run RUN --format ctranslate2`"
    )


def stale_export_reason(folder: Path, meta: dict[str, Any], keep_best: int) -> str | None:
    """Why an export no longer holds what its run would export now, or None.

    Args:
        folder: the export folder.
        meta: its ``attnkit.json``.
        keep_best: the run's ``train.keep_best`` (to find its best checkpoint).

    Only while the run is where the export was made from (an export copied elsewhere is
    assumed to be kept on purpose): the checkpoint it was made from is gone or was written
    after the export, or (for ``--checkpoint best``) the run's best checkpoint is now another.
    """
    run, source = meta.get("run"), meta.get("checkpoint")
    if not run or not source or not is_run_folder(run):
        return None
    made, source_path = (folder / META_FILE).stat().st_mtime, Path(source)
    if not source_path.is_dir():
        return f"it was made from {source}, which the run no longer has (it trained on since)"
    if max((f.stat().st_mtime for f in source_path.iterdir()), default=0.0) > made:
        return f"{source} was written after this export was made"
    if meta.get("requested") == "best":
        try:
            best = find_checkpoint(run, "best", keep_best)
        except (OSError, ValueError):
            return None
        if best.resolve() != source_path.resolve():
            return f"it holds {source_path.name}, and the run's best checkpoint is now {best.name}"
    return None


class CTranslate2Translator(Translator):
    """A :class:`~attnkit.translation.translator.Translator` whose decoding runs in CTranslate2.

    Tokenization, sentence splitting, length limits, the n-best lists and the result type are
    attnkit's; only the model runs in CTranslate2. Greedy search (``beam_size=1``) bans PAD and
    BOS and uses the same per-sentence length limits as attnkit, so a float32 export gives
    attnkit's greedy translations. Beam search uses CTranslate2's length normalisation
    (``score / |y| ** alpha``, attnkit's ``average`` kind) with the run's alpha. Attention weights
    are not available (``need_weights`` is an error).

    Args:
        translator: the ``ctranslate2.Translator``.
        src_tok: the run's source tokenizer.
        tgt_tok: the run's target tokenizer.
        config: the run's :class:`~attnkit.translation.config.RunConfig`.
    """

    engine = "ctranslate2"

    def __init__(self, translator: Any, src_tok: Any, tgt_tok: Any, *, config: RunConfig) -> None:
        self.ct2, self.src_tok, self.tgt_tok, self.config = translator, src_tok, tgt_tok, config
        self.model = None  # type: ignore[assignment]
        self._warned_penalty = False  # (once per translator)

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | Path,
        checkpoint: str = "best",
        device: str = "cpu",
        *,
        compute_type: str = "default",
        intra_threads: int = 0,
        inter_threads: int = 1,
    ) -> CTranslate2Translator:
        """Load an export folder, or a run folder holding ``export/ctranslate2``.

        Args:
            path: the export folder or the run folder.
            checkpoint: ignored (the export holds one checkpoint; kept for the common signature).
            device: ``cpu`` (``auto`` means cpu) or ``cuda``.
            compute_type: CTranslate2's compute type (``default``: what the export stored).
            intra_threads: threads per translation (0: CTranslate2's default).
            inter_threads: translations run in parallel.
        """
        ct2 = import_ctranslate2()
        folder = _export_folder(path)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        cfg = run_config_from_dict(meta["config"], derived=True)
        src_tok, tgt_tok = load_tokenizers(folder / "tokenizer")
        stale = stale_export_reason(folder, meta, cfg.train.keep_best)
        if stale:
            log.warning(
                "%s: %s; re-export it: attnkit export --run %s --format ctranslate2",
                folder,
                stale,
                meta.get("run", "RUN"),
            )
        dev = "cpu" if device == "auto" else device
        try:
            translator = ct2.Translator(
                str(folder),
                device=dev,
                compute_type=compute_type,
                intra_threads=intra_threads,
                inter_threads=inter_threads,
            )
        except (RuntimeError, ValueError) as err:
            if dev == "cuda" and "CUDA" in str(err):
                raise ConfigError(
                    f"--device cuda: CTranslate2 cannot use a GPU here ({str(err).splitlines()[0]}"
                    "); use --device cpu"
                ) from None
            raise
        return cls(translator, src_tok, tgt_tok, config=cfg)

    def decode_ids(
        self,
        sources: Sequence[list[int]],
        *,
        beam_size: int,
        max_tokens: int = 8192,
        need_weights: bool = False,
        n_best: int | None = None,
    ) -> list[Any]:
        """Decode id sequences with CTranslate2; per source a :class:`Hypothesis` (greedy) or
        an n-best list of them (beam search), as :func:`attnkit.translation.task.decode_corpus`.
        """
        if need_weights:
            raise ConfigError(
                "attention weights are not available from the CTranslate2 engine; use "
                "--engine attnkit to get them"
            )
        if not sources:
            return []
        decode = self.config.decode
        cap = types.SimpleNamespace(config=types.SimpleNamespace(max_len=self._max_len()))
        lens = torch.tensor([max(len(s), 1) for s in sources])
        max_lens, min_lens = (x.tolist() for x in length_limits(cap, lens, decode))
        # One CTranslate2 call per minimum length (one in all unless min_len_a > 0), decoding
        # to the longest limit of the group; the few sentences whose output runs past their own
        # limit are decoded again with it, so every sentence gets attnkit's per-sentence limit.
        groups: dict[int, list[int]] = {}
        for i, low in enumerate(min_lens):
            groups.setdefault(low, []).append(i)
        keep = decode.n_best if n_best is None else n_best
        keep = max(1, min(keep, beam_size))
        if beam_size > 1 and decode.length_penalty_kind == "gnmt" and not self._warned_penalty:
            self._warned_penalty = True
            log.warning(
                "this run ranks beams with the GNMT length penalty, which CTranslate2 does not "
                "have: it divides by |y| ** %g instead, so beam-search results and scores may "
                "differ from --engine attnkit (greedy search is the same)",
                decode.length_penalty,
            )
        # CTranslate2 divides scores by |y| ** length_penalty, in greedy search too: 0 there
        # keeps the summed log-probability that attnkit's greedy search reports.
        none = beam_size == 1 or decode.length_penalty_kind == "none"
        options: dict[str, Any] = {
            "beam_size": beam_size,
            "num_hypotheses": keep if beam_size > 1 else 1,
            "return_scores": True,
            "max_batch_size": max_tokens,
            "batch_type": "tokens",
            "suppress_sequences": [[str(PAD_ID)], [str(BOS_ID)]],
            "no_repeat_ngram_size": decode.no_repeat_ngram,
            "length_penalty": 0.0 if none else decode.length_penalty,
        }
        results: list[Any] = [None] * len(sources)
        over: dict[tuple[int, int], list[int]] = {}  # sentences that ran past their own limit

        def run(index: list[int], max_len: int, min_len: int) -> None:
            batch = [[str(t) for t in sources[i]] or [str(EOS_ID)] for i in index]
            out = self.ct2.translate_batch(
                batch, max_decoding_length=max_len, min_decoding_length=min_len, **options
            )
            for i, result in zip(index, out, strict=True):
                if any(len(h) > max_lens[i] for h in result.hypotheses):
                    over.setdefault((max_lens[i], min_len), []).append(i)
                    continue
                hyps = [
                    _hypothesis(tokens, score, max_lens[i], beam_size, decode)
                    for tokens, score in zip(result.hypotheses, result.scores, strict=True)
                ]
                results[i] = hyps if beam_size > 1 else hyps[0]

        for min_len, index in groups.items():
            run(index, max(max_lens[i] for i in index), min_len)
        # Rare: decoded again with their own limit, so tokens and scores are exactly theirs.
        for (max_len, min_len), index in list(over.items()):
            run(index, max_len, min_len)
        return results

    def _max_len(self) -> int:
        return int(self.config.model.get("max_len", self.config.data.max_len))


def _hypothesis(
    tokens: list[str], score: float, max_len: int, beam_size: int, decode: Any
) -> Hypothesis:
    """One CTranslate2 hypothesis as attnkit's (``score`` as CTranslate2 reports it: the summed
    log-probability, divided by ``|y| ** alpha`` in beam search)."""
    ids = [int(t) for t in tokens]
    eos = len(ids) < max_len
    logprob = float(score)
    if beam_size > 1 and decode.length_penalty_kind != "none":
        logprob = float(score) * (len(ids) + int(eos)) ** decode.length_penalty
    return Hypothesis(ids, float(score), logprob, eos)
