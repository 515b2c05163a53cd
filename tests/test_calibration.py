"""Calibration from measured runs: the per-iteration model an engine with a fixed step cost needs."""

import pytest

from halo import calibration
from halo.cost import _per_iteration


def _rows(factor, step, points):
    return [{"kind": "llm_steps", "model": "m", "device": "H100-SXM", "base_s": b, "iterations": i,
             "seconds": factor * b + step * i} for b, i in points]


def test_two_term_fit_recovers_factor_and_step_cost():
    cal = calibration.fit(_rows(1.5, 0.03, [(0.1, 100), (0.4, 120), (0.05, 300), (1.0, 50)]))
    got = cal.llm_steps["m@H100-SXM"]
    assert got["factor"] == pytest.approx(1.5, rel=1e-6) and got["step_s"] == pytest.approx(0.03, rel=1e-6)


def test_a_step_cost_alone_is_fitted_when_the_roofline_part_does_not_help():
    cal = calibration.fit(_rows(0.0, 0.029, [(0.1, 97)]))
    assert cal.llm_steps["m@H100-SXM"] == {"factor": 0.0, "step_s": pytest.approx(0.029)}


def test_fitted_model_prices_a_bigger_batch_like_an_engine_with_fixed_step_cost():
    fitted = {"factor": 0.0, "step_s": 0.03}
    small = {"waves": 1, "prefill_s": 0.01, "decode_s": 0.05, "prefill": {"iterations": 1, "overhead_s": 2e-4},
             "decode": {"steps": 96, "overhead_s": 0.0192}}
    big = {**small, "decode_s": 0.09}          # more requests in the same wave: same number of iterations
    two_waves = {**small, "waves": 2}
    assert sum(_per_iteration(small, fitted)) == pytest.approx(97 * 0.03)
    assert sum(_per_iteration(big, fitted)) == pytest.approx(sum(_per_iteration(small, fitted)))
    assert sum(_per_iteration(two_waves, fitted)) == pytest.approx(2 * 97 * 0.03)


def test_round_trip_through_the_file(tmp_path):
    path = tmp_path / "cal.json"
    calibration.save(calibration.fit(_rows(1.0, 0.01, [(0.2, 10), (0.3, 40)])), path)
    again = calibration.load(path)
    assert again.llm_steps["m@H100-SXM"]["step_s"] == pytest.approx(0.01)
