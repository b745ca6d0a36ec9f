"""cDPO, rDPO and per-pair weights in CurationDPOTrainer, checked against the spec's formulas (§10)."""

from __future__ import annotations

import math

import pytest

BETA_H, EPS = 0.7, 0.1


def ell(u: float) -> float:
    """-log σ(u), by hand."""
    return math.log1p(math.exp(-u))


def test_cdpo_loss_matches_the_spec_formula_by_hand():
    import torch

    from curation.train.dpo import cdpo_loss

    got = float(cdpo_loss(torch.tensor(BETA_H), EPS))
    assert got == pytest.approx(0.9 * ell(0.7) + 0.1 * ell(-0.7), abs=1e-6)
    assert got == pytest.approx(0.47319, abs=1e-5)
    # ε = 0 is plain DPO, and the optimum of the smoothed loss is finite at log((1-ε)/ε) = ln 9
    assert float(cdpo_loss(torch.tensor(BETA_H), 0.0)) == pytest.approx(ell(0.7), abs=1e-6)
    grid = torch.linspace(0.0, 5.0, 50001)
    assert float(grid[cdpo_loss(grid, EPS).argmin()]) == pytest.approx(math.log(9), abs=1e-3)
    g = torch.tensor([-50.0, 50.0], requires_grad=True)
    cdpo_loss(g, EPS).sum().backward()
    assert torch.isfinite(g.grad).all()


@pytest.fixture(scope="module")
def one_batch(tiny_chat, hh_rows):
    """A CurationDPOTrainer on two real pairs and a collated batch whose βh is set to 0.7 exactly."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig

    from curation.train.config import TrainConfig
    from curation.train.data import to_trl
    from curation.train.dpo import dpo_trainer_class

    def build(method: str, loss: str, weights, epsilons, tmp):
        uses_epsilon = method == "cdpo" or loss == "robust"  # any other loss refuses a global epsilon
        cfg = TrainConfig(method=method, loss=loss, epsilon=EPS if uses_epsilon else None)
        ds = to_trl(hh_rows.head(2), cfg)[0].to_dict()
        ds["weight"], ds["epsilon"] = weights, epsilons
        ds["ref_chosen_logps"], ds["ref_rejected_logps"] = [0.0, 0.0], [0.0, 0.0]  # replaced per batch below
        args = DPOConfig(output_dir=str(tmp), loss_type=loss, beta=0.1, label_smoothing=EPS, precompute_ref_log_probs=True,
                         report_to="none", bf16=False, max_length=256, per_device_train_batch_size=2)
        tok = AutoTokenizer.from_pretrained(tiny_chat)
        trainer = dpo_trainer_class()(model=str(tiny_chat), args=args, train_dataset=Dataset.from_dict(ds),
                                      processing_class=tok, cdpo=method == "cdpo")
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
        trainer.model.eval()
        chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
        # reference chosen log-prob 7 nats below the policy's: h = 7, βh = 0.7 for both pairs
        batch["ref_chosen_logps"], batch["ref_rejected_logps"] = chosen - BETA_H / 0.1, rejected.clone()
        return float(trainer.compute_loss(trainer.model, batch).detach())

    return build


def test_cdpo_trainer_loss_equals_formula(one_batch, tmp_path):
    assert one_batch("cdpo", "sigmoid", [1.0, 1.0], [EPS, EPS], tmp_path) == pytest.approx(0.9 * ell(0.7) + 0.1 * ell(-0.7), abs=1e-4)


def test_trl_robust_matches_rdpo_formula_and_is_unbiased(one_batch, tmp_path):
    rdpo = (0.9 * ell(0.7) - 0.1 * ell(-0.7)) / 0.8
    assert one_batch("dpo", "robust", [1.0, 1.0], [EPS, EPS], tmp_path) == pytest.approx(rdpo, abs=1e-4)
    flipped = (0.9 * ell(-0.7) - 0.1 * ell(0.7)) / 0.8
    assert 0.9 * rdpo + 0.1 * flipped == pytest.approx(ell(0.7), abs=1e-9)  # spec sanity test 2: 0.40319
    assert ell(0.7) == pytest.approx(0.40319, abs=1e-5)


def test_per_pair_epsilon_and_weights_reach_the_loss(one_batch, tmp_path):
    rdpo = lambda e: ((1 - e) * ell(0.7) - e * ell(-0.7)) / (1 - 2 * e)  # noqa: E731
    # per-pair ε through TRL's own robust loss: mean of the two pairs' losses
    got = one_batch("dpo", "robust", [1.0, 1.0], [0.0, 0.2], tmp_path)
    assert got == pytest.approx((rdpo(0.0) + rdpo(0.2)) / 2, abs=1e-4)
    # weights: Σ w_i L_i / n, so weights (2, 0) count the first pair twice and drop the second
    assert one_batch("dpo", "sigmoid", [2.0, 0.0], [0.0, 0.0], tmp_path) == pytest.approx(ell(0.7), abs=1e-4)
    assert one_batch("cdpo", "sigmoid", [0.0, 1.0], [EPS, 0.3], tmp_path) == pytest.approx(
        (0.7 * ell(0.7) + 0.3 * ell(-0.7)) / 2, abs=1e-4)
