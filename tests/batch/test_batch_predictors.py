"""Oracle and noisy-oracle length predictors."""

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES
from llmplan.predict.oracle import NoisyOraclePredictor, OraclePredictor, parse_predictor
from llmplan.workload.types import RequestSpec


def _specs(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return [RequestSpec(i, 0.0, 10, int(x)) for i, x in enumerate(rng.integers(1, 3000, n))]


def _true_buckets(specs):
    lengths = [s.output_tokens for s in specs]
    return np.searchsorted(np.asarray(DEFAULT_BUCKET_EDGES), lengths, side="right") - 1


def test_oracle_returns_truth_and_its_bucket():
    specs = [RequestSpec(0, 0, 1, 7), RequestSpec(1, 0, 1, 8), RequestSpec(2, 0, 1, 5000)]
    out = OraclePredictor().predict(specs)
    assert out.lengths == [7, 8, 5000]
    assert out.buckets == [0, 1, len(DEFAULT_BUCKET_EDGES) - 1]


@pytest.mark.parametrize("acc", [0.0, 0.5, 0.8, 1.0])
def test_noisy_oracle_hits_the_true_bucket_at_the_set_rate(acc):
    specs = _specs()
    out = NoisyOraclePredictor(acc, seed=3).predict(specs)
    hit = np.mean(np.asarray(out.buckets) == _true_buckets(specs))
    assert abs(hit - acc) < 0.03
    nb = len(DEFAULT_BUCKET_EDGES)
    assert all(0 <= b < nb for b in out.buckets)


def test_noisy_oracle_errors_are_mostly_neighbours_and_lengths_are_bucket_representatives():
    specs = _specs()
    p = NoisyOraclePredictor(0.0, seed=1, neighbour_share=1.0)
    out = p.predict(specs)
    diff = np.abs(np.asarray(out.buckets) - _true_buckets(specs))
    assert np.all(diff == 1)
    assert out.lengths == [p.representatives[b] for b in out.buckets]
    assert p.representatives[5] == 255  # bucket [128, 256) -> its upper edge


def test_noisy_oracle_is_deterministic_per_seed():
    specs = _specs(500)
    a = NoisyOraclePredictor(0.6, seed=7).predict(specs).buckets
    b = NoisyOraclePredictor(0.6, seed=7).predict(specs).buckets
    c = NoisyOraclePredictor(0.6, seed=8).predict(specs).buckets
    assert a == b and a != c


def test_bad_inputs_have_clear_errors():
    with pytest.raises(LlmplanError, match=r"accuracy must be in \[0, 1\]"):
        NoisyOraclePredictor(1.5)
    with pytest.raises(LlmplanError, match="RequestSpec"):
        OraclePredictor().predict(["a prompt"])
    with pytest.raises(LlmplanError, match="noisy:<accuracy>"):
        parse_predictor("noisy:abc")
    with pytest.raises(LlmplanError, match="unknown predictor"):
        parse_predictor("magic")
    assert parse_predictor("noisy:0.7").accuracy == 0.7
    assert parse_predictor(None) is None
