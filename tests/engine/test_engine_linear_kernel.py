"""The compiled linear kernel (decode-sized products over a packed weight) against a float64
reference: ragged rows, columns and K (every register block, masked tail panel and K chunk),
bias, strided rows, one and two threads; and which path the model's ``linear`` takes."""

from __future__ import annotations

import pytest
import torch

from llmplan.runtime.engine import model as m
from llmplan.runtime.engine import native

native_only = pytest.mark.parametrize("decode_kernel", ["native"], indirect=True)


def _check(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    got = native.linear(x, native.pack_linear(w), w.shape[0], b)
    ref = x.double() @ w.double().T + (0 if b is None else b.double())
    # fp32 accumulation in any order stays within K ulps of the sum of magnitudes.
    bound = (x.double().abs() @ w.double().abs().T) * x.shape[1] * 2**-23 + 1e-30
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert ((got.double() - ref).abs() <= bound + (0 if b is None else b.double().abs() * 2**-23)).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 12, 13, 25, 37, 128])
@native_only
def test_linear_matches_float64(decode_kernel, rows, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(rows)
        for n, k in [(1, 7), (31, 255), (33, 256), (96, 300), (100, 600), (300, 64)]:
            x = torch.randn(rows, k, generator=g)
            w = torch.randn(n, k, generator=g)
            _check(x, w, None)
            _check(x, w, torch.randn(n, generator=g))
            wide = torch.randn(rows, k + 9, generator=g)
            _check(wide[:, 3 : 3 + k], w, None)  # rows k + 9 floats apart
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("rows", [2, 4, 13])  # the few-rows path (4- and 3-panel groups), the blocks
@native_only
def test_linear_values_do_not_leak_between_rows_or_columns(decode_kernel, rows):
    """One nonzero input row and weight column: exactly one output is nonzero."""
    x = torch.zeros(rows, 300)
    w = torch.zeros(170, 300)  # 6 panels: a group of 4 side by side, then 2, the last masked
    x[rows - 1, 299] = 3.0
    w[165, 299] = 2.0
    y = native.linear(x, native.pack_linear(w), 170, None)
    assert y[rows - 1, 165] == 6.0 and torch.count_nonzero(y) == 1


@native_only
def test_model_linear_takes_the_kernel_for_decode_batches_only(decode_kernel):
    g = torch.Generator().manual_seed(3)
    for rows, kernel_path in ((1, True), (128, True), (129, False)):
        w = torch.randn(64, 48, generator=g)
        x = torch.randn(rows, 48, generator=g)
        torch.testing.assert_close(m.linear(x, w), x @ w.T, rtol=1e-5, atol=1e-5)
        assert ((id(w), "native") in m._packed) == kernel_path, rows
    bf = torch.randn(64, 48, generator=g).to(torch.bfloat16)  # not fp32: not the kernel
    m.linear(torch.randn(8, 48, generator=g).to(torch.bfloat16), bf)
    assert (id(bf), "native") not in m._packed


def test_portable_build_gives_the_same_values(portable_build):
    """Built without -march=native (the fallback flag set, no AVX-512 intrinsics), the linear
    kernel still matches the float64 reference, bias and masked last panel included."""
    assert portable_build.linear is not None
    g = torch.Generator().manual_seed(5)
    for rows in (1, 4, 13, 40):
        x = torch.randn(rows, 300, generator=g)
        w = torch.randn(45, 300, generator=g)
        _check(x, w, torch.randn(45, generator=g))


@native_only
def test_empty_products_do_not_reach_the_kernel(decode_kernel):
    """No rows, no columns or K = 0 (which the kernel divides by) give the empty or bias result."""
    for rows, n, k in ((0, 5, 8), (3, 0, 8), (3, 5, 0)):
        w = torch.randn(n, k)
        b = torch.randn(n)
        got = native.linear(torch.randn(rows, k), native.pack_linear(w), n, b)
        torch.testing.assert_close(got, torch.zeros(rows, n) + b)
