"""Nadaraya–Watson kernel regression against float64 loops written here."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.attention.kernel_regression import (
    NWKernelRegression,
    fit_kernel_regression,
    kernel_regression_truth,
    leave_one_out_keys,
    make_kernel_regression_data,
    nadaraya_watson,
)

NAIVE_KERNELS = {
    "gaussian": lambda u: math.exp(-u * u / 2),
    "boxcar": lambda u: 1.0 if abs(u) < 1 else 0.0,
    "constant": lambda u: 1.0,
    "epanechnikov": lambda u: max(1 - u * u, 0.0),
    "triangular": lambda u: max(1 - abs(u), 0.0),
}


def naive_weights(queries, keys, bandwidth, kernel):
    weights = torch.zeros(len(queries), len(keys), dtype=torch.float64)
    for i, q in enumerate(queries.tolist()):
        row = [NAIVE_KERNELS[kernel]((q - k) / bandwidth) for k in keys.tolist()]
        total = sum(row)
        for j, value in enumerate(row):
            weights[i, j] = value / total
    return weights


@pytest.mark.parametrize("kernel", sorted(NAIVE_KERNELS))
def test_weights_and_output_match_naive_loop(kernel):
    gen = torch.Generator().manual_seed(0)
    keys = torch.sort(torch.rand(15, generator=gen, dtype=torch.float64) * 5).values
    values = torch.randn(15, generator=gen, dtype=torch.float64)
    queries = torch.linspace(0.5, 4.5, 9, dtype=torch.float64)
    bandwidth = 1.3
    out, weights = nadaraya_watson(queries, keys, values, bandwidth=bandwidth, kernel=kernel)
    ref = naive_weights(queries, keys, bandwidth, kernel)
    assert weights.shape == (9, 15) and out.shape == (9,)
    assert torch.allclose(weights, ref, atol=1e-12)
    assert torch.allclose(weights.sum(dim=1), torch.ones(9, dtype=torch.float64))
    ref_out = [sum(ref[i, j].item() * values[j].item() for j in range(15)) for i in range(9)]
    assert torch.allclose(out, torch.tensor(ref_out, dtype=torch.float64), atol=1e-12)


def test_older_course_formula_is_bandwidth_one():
    queries, keys = torch.arange(0, 5, 0.5), torch.rand(20) * 5
    _, weights = nadaraya_watson(queries, keys, torch.randn(20))
    course = torch.softmax(-((queries[:, None] - keys[None, :]) ** 2) / 2, dim=1)
    assert torch.allclose(weights, course, atol=1e-6)


def test_vector_values_pool_each_column():
    keys, queries = torch.rand(10) * 5, torch.rand(4) * 5
    values = torch.randn(10, 3)
    out, weights = nadaraya_watson(queries, keys, values, bandwidth=0.8)
    assert out.shape == (4, 3)
    for c in range(3):
        column, _ = nadaraya_watson(queries, keys, values[:, c], bandwidth=0.8)
        assert torch.allclose(out[:, c], column, atol=1e-6)


def test_tiny_bandwidth_is_nearest_neighbour():
    keys = torch.tensor([0.0, 1.0, 2.5, 4.0], dtype=torch.float64)
    values = torch.tensor([10.0, -1.0, 3.0, 7.0], dtype=torch.float64)
    queries = torch.tensor([0.2, 0.9, 1.9, 3.9, 5.0], dtype=torch.float64)
    out, weights = nadaraya_watson(queries, keys, values, bandwidth=1e-3)
    nearest = (queries[:, None] - keys[None, :]).abs().argmin(dim=1)
    assert torch.allclose(out, values[nearest])
    assert torch.equal(weights.argmax(dim=1), nearest)


def test_huge_bandwidth_is_average_pooling():
    keys, values, queries = torch.rand(30) * 5, torch.randn(30), torch.arange(0, 5, 0.1)
    out, weights = nadaraya_watson(queries, keys, values, bandwidth=1e5)
    assert torch.allclose(out, values.mean().expand(50), atol=1e-5)
    assert torch.allclose(weights, torch.full((50, 30), 1 / 30), atol=1e-6)


def test_compact_kernel_with_empty_window_gives_nan():
    keys, values = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 4.0])
    out, weights = nadaraya_watson(torch.tensor([0.5, 9.0]), keys, values, 1.0, "boxcar")
    assert out[0].item() == pytest.approx(3.0) and math.isnan(out[1].item())
    assert torch.equal(weights[1], torch.zeros(2))


def test_nadaraya_watson_validates():
    q, k = torch.zeros(3), torch.zeros(4)
    with pytest.raises(ValueError, match="kernel"):
        nadaraya_watson(q, k, k, kernel="cosine")
    with pytest.raises(ValueError, match="bandwidth"):
        nadaraya_watson(q, k, k, bandwidth=0.0)
    with pytest.raises(ValueError, match="values"):
        nadaraya_watson(q, k, torch.zeros(5))
    with pytest.raises(ValueError, match="1-D"):
        nadaraya_watson(q[None], k, k)


def test_parametric_model_shared_keys_equals_bandwidth_one_over_w():
    keys, values, queries = torch.rand(12) * 5, torch.randn(12), torch.rand(6) * 5
    model = NWKernelRegression(init_w=2.5)
    out, weights = model(queries, keys, values)
    ref_out, ref_weights = nadaraya_watson(queries, keys, values, bandwidth=1 / 2.5)
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert torch.allclose(weights, ref_weights, atol=1e-6)


def test_parametric_model_per_query_and_batched_keys():
    gen = torch.Generator().manual_seed(3)
    model = NWKernelRegression(init_w=0.7)
    queries = torch.rand(2, 5, generator=gen) * 5
    keys = torch.rand(2, 5, 8, generator=gen) * 5
    values = torch.randn(2, 5, 8, generator=gen)
    out, weights = model(queries, keys, values)  # one row of keys per query
    assert out.shape == (2, 5) and weights.shape == (2, 5, 8)
    for b in range(2):
        for i in range(5):
            ref, _ = nadaraya_watson(queries[b, i : i + 1], keys[b, i], values[b, i], 1 / 0.7)
            assert torch.allclose(out[b, i : i + 1], ref, atol=1e-6)
    shared_out, shared_w = model(queries, keys[:, 0], values[:, 0])  # (B, K) shared per batch row
    assert shared_w.shape == (2, 5, 8)
    for b in range(2):
        ref, _ = nadaraya_watson(queries[b], keys[b, 0], values[b, 0], 1 / 0.7)
        assert torch.allclose(shared_out[b], ref, atol=1e-6)
    with pytest.raises(ValueError, match="keys"):
        model(queries, keys[:, :3], values[:, :3])
    with pytest.raises(ValueError, match="values"):
        model(queries, keys, values[..., :4])


def test_leave_one_out_keys():
    x, y = torch.arange(5.0), torch.arange(5.0) * 10
    keys, values = leave_one_out_keys(x, y)
    assert keys.shape == values.shape == (5, 4)
    for i in range(5):
        assert torch.equal(keys[i], torch.cat([x[:i], x[i + 1 :]]))
        assert torch.equal(values[i], torch.cat([y[:i], y[i + 1 :]]))
    with pytest.raises(ValueError, match="n >= 2"):
        leave_one_out_keys(torch.zeros(1), torch.zeros(1))


def test_data_matches_the_course_recipe():
    state = torch.get_rng_state()
    data = make_kernel_regression_data(n_train=50, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # own generator
    assert data.x_train.shape == data.y_train.shape == (50,)
    assert bool((data.x_train[1:] >= data.x_train[:-1]).all())
    assert 0 <= data.x_train.min() and data.x_train.max() < 5
    assert torch.allclose(data.x_test, torch.arange(0, 5, 0.1)) and data.x_test.shape == (50,)
    expected = 2 * torch.sin(data.x_test) + data.x_test**0.8
    assert torch.allclose(data.y_test, expected)
    again = make_kernel_regression_data(n_train=50, seed=0)
    assert torch.equal(again.y_train, data.y_train)
    assert not torch.equal(make_kernel_regression_data(seed=1).x_train, data.x_train)
    big = make_kernel_regression_data(n_train=4000, seed=5)
    noise = big.y_train - kernel_regression_truth(big.x_train)
    assert abs(noise.std().item() - 0.5) < 0.03 and abs(noise.mean().item()) < 0.03


def test_training_reduces_loss_and_beats_average_pooling():
    data = make_kernel_regression_data(n_train=50, seed=0)
    model = NWKernelRegression(init_w=1.0)
    history = fit_kernel_regression(model, data.x_train, data.y_train, epochs=5, lr=0.5)
    assert len(history) == 5
    assert all(b <= a + 1e-6 for a, b in zip(history, history[1:], strict=False))
    assert history[-1] < 0.8 * history[0]
    with torch.no_grad():
        pred, weights = model(data.x_test, data.x_train, data.y_train)
    assert torch.allclose(weights.sum(dim=1), torch.ones(50))
    model_mse = ((pred - data.y_test) ** 2).mean()
    pooling_mse = ((data.y_train.mean() - data.y_test) ** 2).mean()
    assert model_mse < 0.5 * pooling_mse
    again = fit_kernel_regression(NWKernelRegression(1.0), data.x_train, data.y_train)
    assert again == history  # deterministic
