"""Dynamic int8 quantization (``--quantize int8``): the quantized model keeps the seq2seq
interface and the fused loss path, its outputs stay close to float32, the original is untouched.

Reference: the same model in float32 (outputs compared, BLEU change measured on held-out data).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.cli import main
from attnkit.config import TransformerConfig
from attnkit.data.batching import collate
from attnkit.decoding import greedy_decode
from attnkit.evaluation.metrics import corpus_bleu
from attnkit.models import quantize
from attnkit.models.quantize import Int8Linear, check_quantize, is_quantized, quantize_int8
from attnkit.models.transformer import Transformer
from attnkit.training.losses import Seq2SeqObjective
from attnkit.translation.translator import Translator
from tests.pretrained.test_pretrained import needs_minilm, needs_tokenizers


def _count_int8_calls(model: nn.Module, monkeypatch) -> list[int]:
    """Count the calls that reach the int8 kernels (not the small-product float32 path)."""
    calls = [0]
    for layer in model.modules():
        if isinstance(layer, Int8Linear):
            real = layer.quantized.forward

            def counted(x, real=real):
                calls[0] += 1
                return real(x)

            monkeypatch.setattr(layer.quantized, "forward", counted)
    return calls


def test_int8_linear_paths_against_float64(monkeypatch) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    layer = quantize_int8(nn.Sequential(lin))[0]
    assert isinstance(layer, Int8Linear)
    # The float32 path's weights are the int8 ones: within half a step of the originals.
    step = lin.weight.detach().abs().amax(1, keepdim=True) / 127  # (96, 1)
    assert ((layer.weight - lin.weight.detach()).abs() <= step / 2 + 1e-6).all()
    x = torch.randn(2, 5, 64)
    ref = x.double() @ layer.weight.double().T + layer.bias.double()  # (2, 5, 96)
    calls = _count_int8_calls(layer, monkeypatch)
    with torch.no_grad():
        small = layer(x)  # 10 rows x 64 x 96 multiply-adds: float32
        assert calls == [0]
        torch.testing.assert_close(small.double(), ref, rtol=0, atol=1e-5)
        monkeypatch.setattr(quantize, "SMALL_PRODUCT", 0)
        big = layer(x)  # the int8 kernel: activations rounded too
        assert calls == [1] and big.shape == (2, 5, 96)
        assert (big.double() - ref).abs().max() < 0.05 * ref.abs().max()
        assert not torch.equal(big, small)


def test_int8_linear_uses_int8_at_any_size_for_a_large_matrix(monkeypatch) -> None:
    wide = quantize_int8(nn.Sequential(nn.Linear(256, 4096)))[0]  # 2**20 weights
    calls = _count_int8_calls(wide, monkeypatch)
    with torch.no_grad():
        wide(torch.randn(1, 256))
    assert wide.always_int8 and calls == [1]
    assert wide.weight is None  # no float32 copy where the float32 path never runs


@pytest.mark.parametrize("tie", ["none", "decoder", "all"])
def test_quantized_transformer_keeps_interface_and_loss_path(tie: str, monkeypatch) -> None:
    monkeypatch.setattr(quantize, "SMALL_PRODUCT", 0)  # every product on the int8 kernels
    torch.manual_seed(0)
    cfg = TransformerConfig(
        src_vocab_size=50, tgt_vocab_size=50, d_model=64, num_heads=4, ffn_hidden=128,
        num_encoder_layers=2, num_decoder_layers=2, dropout=0.0, tie_embeddings=tie,
    )  # fmt: skip
    model = Transformer(cfg).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_int8(model)
    assert is_quantized(q) and not is_quantized(model)
    for key, value in model.state_dict().items():  # the float model is unchanged
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    linears = [m for m in q.modules() if type(m) is nn.Linear]
    assert linears == ([q.output] if tie == "none" else [])  # the float matrix kept for the loss
    assert isinstance(q.output_weight, torch.Tensor)
    src = torch.randint(4, 50, (3, 9))
    tgt = torch.randint(4, 50, (3, 7))
    with torch.no_grad():
        want, got = model(src, tgt), q(src, tgt)  # (3, 7, V)
        assert (got - want).abs().max() < 0.1 * want.abs().max()
        # The fused output projection + loss still runs on the quantized model.
        loss_q, n = Seq2SeqObjective(q, pad_id=0)(src, tgt, None, tgt)
        loss_f, _ = Seq2SeqObjective(model, pad_id=0)(src, tgt, None, tgt)
        assert n == 21 and abs(float(loss_q) - float(loss_f)) < 0.05 * float(loss_f)
    out = greedy_decode(q, src, max_len=6)  # cached decoding, cross-attention split projections
    assert len(out.tokens) == 3
    assert quantize_int8(q) is q


def test_check_quantize_errors() -> None:
    check_quantize(None, "cuda")
    check_quantize("int8", "auto")
    with pytest.raises(ValueError, match="--quantize must be one of"):
        check_quantize("int4")
    with pytest.raises(ValueError, match="CPU only.*--device cpu"):
        check_quantize("int8", "cuda")


@pytest.mark.parametrize("small_product", [0, quantize.SMALL_PRODUCT])
def test_quantized_translation_close_to_float32(
    dates_run, capsys, monkeypatch, small_product: int
) -> None:
    # 0: every product on the int8 kernels; the default: small ones in float32.
    monkeypatch.setattr(quantize, "SMALL_PRODUCT", small_product)
    run, sources, refs = dates_run
    fp32 = Translator.load(run, device="cpu")
    int8 = Translator.load(run, device="cpu", quantize="int8")
    a, b = fp32.translate(sources, beam_size=1), int8.translate(sources, beam_size=1)
    same = sum(x.tokens == y.tokens for x, y in zip(a, b, strict=True))
    bleu_a = corpus_bleu([x.text for x in a], refs).score
    bleu_b = corpus_bleu([x.text for x in b], refs).score
    assert same >= 0.85 * len(sources)
    assert abs(bleu_b - bleu_a) < 5.0
    # The validation loss path (fused projection + loss) on the quantized model.
    data = [
        (fp32.src_tok.encode(s), fp32.tgt_tok.encode(r[0]))
        for s, r in zip(sources, refs, strict=True)
    ]
    batch = collate(data[:16])
    with torch.no_grad():
        loss_a, n = Seq2SeqObjective(fp32.model, pad_id=0)(
            batch.src, batch.tgt_in, batch.src_mask, batch.tgt_out
        )
        loss_b, _ = Seq2SeqObjective(int8.model, pad_id=0)(
            batch.src, batch.tgt_in, batch.src_mask, batch.tgt_out
        )
    assert abs(float(loss_b) - float(loss_a)) / n < 0.05
    assert main(["translate", "--run", str(run), "--quantize", "int8", "--beam", "1",
                 *sources[:5]]) == 0  # fmt: skip
    # Dynamic quantization scales activations per batch: compare with the same batch.
    assert capsys.readouterr().out.splitlines() == [
        t.text for t in int8.translate(sources[:5], beam_size=1)
    ]
    with capsys.disabled():
        print(
            f"\nint8 (attnkit, dynamic, float32 below {small_product:,} multiply-adds) on "
            f"{len(sources)} held-out dates: {same}/{len(sources)} "
            f"greedy outputs identical; BLEU {bleu_a:.2f} -> {bleu_b:.2f} "
            f"({bleu_b - bleu_a:+.2f})"
        )


@needs_minilm
@needs_tokenizers
def test_quantized_embeddings_close_to_float32(capsys) -> None:
    import json

    import numpy as np

    texts = ["the cat sat on the mat", "a dog ran far away", "attention is all you need"]
    assert main(["embed", *texts]) == 0
    want = np.array(json.loads(capsys.readouterr().out)["embeddings"])
    assert main(["embed", "--quantize", "int8", *texts]) == 0
    got = np.array(json.loads(capsys.readouterr().out)["embeddings"])
    # Cosine similarity of the unit vectors (measured 0.96-0.98 for MiniLM, per-channel int8).
    assert (got * want).sum(1).min() > 0.95


def test_int8_engine_is_onednn_only_with_int8_matrix_instructions(monkeypatch) -> None:
    from attnkit.models import quantize

    if "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("this PyTorch build has no oneDNN quantized engine")
    current = torch.backends.quantized.engine
    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2", "amx_int8"})
    assert quantize.int8_engine() == "onednn"
    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert quantize.int8_engine() == "onednn"
    monkeypatch.setattr(quantize, "cpu_flags", lambda: {"avx2"})
    assert quantize.int8_engine() == current
