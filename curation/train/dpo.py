"""TRL's DPOTrainer, extended with what curated data carries: per-pair weights, soft labels, cDPO.

- cDPO (conservative DPO, label smoothing): L = (1-ε)·ℓ(βh) + ε·ℓ(-βh), ℓ(u) = -log σ(u)
  (specs/algorithms.md §10). TRL removed it from its sigmoid loss in v0.29, so it is an explicit loss
  here, with ε global or per pair (the `epsilon` column written by the noise filter).
- Per-pair `weight` (and per-pair ε for rDPO, TRL's "robust" loss): when a batch is not uniform, the
  loss is Σ_i w_i·L_TRL(pair i; ε_i) / n, each L_TRL computed by TRL's own code on that one pair, so
  every TRL loss variant stays TRL's. Uniform batches go through TRL unchanged.
- Reference log-probs precomputed by TRL are handed to a `ref_store` callback (which saves them next
  to the dataset version) and, when the dataset already carries them, not recomputed.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable


def cdpo_loss(beta_h: Any, epsilon: Any) -> Any:
    """Per-pair cDPO loss from βh (tensor) and ε (float or tensor): cross-entropy to soft label 1-ε."""
    import torch.nn.functional as F

    return -(1 - epsilon) * F.logsigmoid(beta_h) - epsilon * F.logsigmoid(-beta_h)


PAIR_COLUMNS = ("weight", "epsilon")


@cache
def dpo_trainer_class() -> type:
    """CurationDPOTrainer, built on first use so that importing this module stays light."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class PairCollator(DataCollatorForPreference):
        """TRL's preference collator, also batching the per-pair weight and epsilon."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            for col in PAIR_COLUMNS:
                if col in examples[0]:
                    out[col] = torch.tensor([float(e[col]) for e in examples], dtype=torch.float32)
            return out

    class CurationDPOTrainer(DPOTrainer):
        def __init__(
            self,
            *args: Any,
            cdpo: bool = False,
            ref_store: Callable[[Any], None] | None = None,
            **kwargs: Any,
        ) -> None:
            self.cdpo = cdpo
            self.ref_store = ref_store
            dpo_args = kwargs["args"]
            tok = kwargs["processing_class"]
            kwargs.setdefault(
                "data_collator",
                PairCollator(
                    pad_token_id=tok.pad_token_id,
                    max_length=dpo_args.max_length,
                    truncation_mode=dpo_args.truncation_mode,
                    pad_to_multiple_of=dpo_args.pad_to_multiple_of,
                ),
            )
            super().__init__(*args, **kwargs)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, *PAIR_COLUMNS]

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            if "ref_chosen_logps" in dataset.column_names:  # loaded from the version's ref_logps store
                return dataset
            dataset = super()._precompute_ref_logps(dataset, name, batch_size)
            if name == "train" and self.ref_store is not None:
                self.ref_store(dataset)
            return dataset

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            weight = inputs.pop("weight", None)
            epsilon = inputs.pop("epsilon", None)
            if self.cdpo:
                loss = self._cdpo_loss(model, inputs, weight, epsilon)
                return (loss, None) if return_outputs else loss
            robust = "robust" in self.loss_types
            uniform_eps = epsilon is None or not robust or bool(torch.all(epsilon == epsilon[0]))
            if (weight is None or bool(torch.all(weight == 1))) and uniform_eps:
                if robust and epsilon is not None:
                    self.label_smoothing = float(epsilon[0])
                return super()._compute_loss(model, inputs, return_outputs)
            n = inputs["input_ids"].shape[0] // 2
            total = 0.0
            for i in range(n):
                if robust and epsilon is not None:
                    self.label_smoothing = float(epsilon[i])
                w = 1.0 if weight is None else weight[i]
                total = total + w * super()._compute_loss(model, _one_pair(inputs, i, n), False)
            loss = total / n
            return (loss, None) if return_outputs else loss

        def _cdpo_loss(self, model: Any, inputs: dict[str, Any], weight: Any, epsilon: Any) -> Any:
            mode = "train" if self.model.training else "eval"
            mask = inputs["completion_mask"]
            labels = inputs["input_ids"].masked_fill(mask == 0, -100)
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                labels=labels,
                use_cache=False,
                fused_lm_head=True,
            )
            seq_len = mask.size(1) - 1
            chosen_logps, rejected_logps = outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
            beta_h = self.beta * ((chosen_logps - ref_chosen) - (rejected_logps - ref_rejected))
            eps = epsilon if epsilon is not None else torch.zeros_like(beta_h)
            per_pair = cdpo_loss(beta_h, eps.to(beta_h.dtype))
            if weight is not None:
                per_pair = per_pair * weight.to(per_pair.dtype)
            loss = per_pair.mean()
            margins = self.accelerator.gather(beta_h.detach())
            self._metrics[mode]["rewards/margins"].append(margins.mean().item())
            self._metrics[mode]["rewards/accuracies"].append((margins > 0).float().mean().item())
            self._metrics[mode]["logps/chosen"].append(self.accelerator.gather(chosen_logps.detach()).mean().item())
            self._metrics[mode]["logps/rejected"].append(
                self.accelerator.gather(rejected_logps.detach()).mean().item()
            )
            return loss

    def _one_pair(inputs: dict[str, Any], i: int, n: int) -> dict[str, Any]:
        rows = [i, n + i]
        out: dict[str, Any] = {}
        width = int(inputs["attention_mask"][rows].sum(dim=1).max())
        for key in ("input_ids", "attention_mask", "completion_mask"):
            out[key] = inputs[key][rows, :width]
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in inputs:
                out[key] = inputs[key][i : i + 1]
        return out

    return CurationDPOTrainer
