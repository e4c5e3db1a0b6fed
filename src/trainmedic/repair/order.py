"""Which remedies answer which finding, in which order: data, in one place.

The order follows the troubleshooting guide: the most likely and cheapest remedy first. A
finding not listed in ``ORDER`` (data leakage, label problems, a wrong custom backward...) is
reported and never repaired in place. ``PRIORITY`` decides which finding is answered first when
several are active: a cause before its symptoms (uncleared gradients make the loss diverge, not
the other way round). ``trainmedic fix`` tries the same lists, from step 0.
"""

from __future__ import annotations

from typing import Callable

from trainmedic.repair import input_remedies as I
from trainmedic.repair import loss_remedies as L
from trainmedic.repair import model_remedies as M
from trainmedic.repair import remedies as R

# Remedies by id: factories, so every attempt gets a fresh object.
REMEDIES: dict[str, Callable[[], R.Remedy]] = {
    "lr_scale_0.1": lambda: R.ScaleLearningRate(0.1),
    "lr_scale_0.01": lambda: R.ScaleLearningRate(0.01),
    "lr_scale_10": lambda: R.ScaleLearningRate(10.0),
    "lr_to_healthy_updates": lambda: R.ScaleLearningRate(None),
    "warmup": R.Warmup,
    "clip_grad_norm": lambda: R.ClipGradNorm(1.0),
    "zero_grad_each_step": R.ZeroGradEachStep,
    "add_missing_params": R.AddMissingParams,
    "weight_decay_0.1": lambda: R.ScaleWeightDecay(0.1),
    "weight_decay_up": R.RaiseWeightDecay,
    "sgd_to_adam": R.SgdToAdam,
    "early_stopping": R.EarlyStopping,
    "reinit_layers": M.ReinitLayers,
    "reinit_all_layers": lambda: M.ReinitLayers(only_symmetric=False),
    "leaky_relu": M.LeakyRelu,
    "dropout_up": M.RaiseDropout,
    "augment_inputs": I.AugmentInputs,
    "eval_mode_for_evaluation": M.EvalModeForEvaluation,
    "train_mode_for_training": M.TrainModeForTraining,
    "normalize_inputs": M.NormalizeInputs,
    "class_weights": L.ClassWeights,
    "loss_gets_logits": L.LossGetsLogits,
}

ORDER: dict[str, list[str]] = {
    # optimisation
    "learning_rate_too_high": ["lr_scale_0.1", "lr_scale_0.01", "clip_grad_norm"],
    "loss_diverging": ["lr_scale_0.1", "lr_scale_0.01", "warmup"],
    "nonfinite_loss": ["lr_scale_0.1", "lr_scale_0.01", "clip_grad_norm"],
    "nonfinite_gradient": ["clip_grad_norm", "lr_scale_0.1", "lr_scale_0.01"],
    "exploding_gradient": ["clip_grad_norm", "lr_scale_0.1", "warmup"],
    "learning_rate_too_low": ["lr_to_healthy_updates", "sgd_to_adam"],
    "regularization_dominates": ["weight_decay_0.1"],
    # wiring
    "grads_not_cleared": ["zero_grad_each_step"],
    "params_not_in_optimizer": ["add_missing_params"],
    "loss_input_mismatch": ["loss_gets_logits"],
    "eval_in_train_mode": ["eval_mode_for_evaluation"],
    "train_in_eval_mode": ["train_mode_for_training"],
    # initialisation and activations
    "symmetric_weights": ["reinit_layers"],
    "dead_relu": ["leaky_relu", "lr_scale_0.1", "reinit_all_layers"],
    "saturated_activation": ["reinit_all_layers", "normalize_inputs", "lr_scale_0.1"],
    "vanishing_gradient": ["reinit_all_layers", "sgd_to_adam"],
    # data
    "input_not_normalized": ["normalize_inputs"],
    "class_imbalance": ["class_weights"],
    # generalisation
    # more data first, as the troubleshooting guide puts it (images only: the others skip it)
    "overfitting": ["augment_inputs", "weight_decay_up", "dropout_up", "early_stopping"],
}

# Remedies that go first, wherever ORDER lists them, when the finding is answered within the
# first EARLY_STEPS optimizer steps of the run and the optimizer is adaptive (Adam and kin): an
# adaptive optimizer's first steps are full-size (about lr per weight, whatever the gradient's
# scale) while its second-moment estimates are still poor, which is what a warmup is for. A
# smaller learning rate would also calm those first steps, but for the whole run: later on,
# the run would learn at a tenth of its rate. EARLY_STEPS is Warmup's default length: a fault
# after the span a warmup covers is not an early-training fault.
EARLY_FIRST = ["warmup"]
EARLY_STEPS = 200

PRIORITY = ["grads_not_cleared", "params_not_in_optimizer", "loss_input_mismatch",
            "symmetric_weights", "train_in_eval_mode", "input_not_normalized",
            "regularization_dominates", "learning_rate_too_high", "exploding_gradient",
            "nonfinite_gradient", "nonfinite_loss", "loss_diverging", "dead_relu",
            "saturated_activation", "vanishing_gradient", "learning_rate_too_low",
            "class_imbalance", "eval_in_train_mode", "overfitting"]


def arranged(ids: list[str], *, step: int, adaptive: bool) -> list[str]:
    """A finding's list of remedies (from ORDER) in the order to try them: the EARLY_FIRST ones
    it lists move to the front when the finding is answered at monitor step ``step`` <=
    EARLY_STEPS under an adaptive optimizer; otherwise the list as it is."""
    if step > EARLY_STEPS or not adaptive:
        return list(ids)
    return [r for r in ids if r in EARLY_FIRST] + [r for r in ids if r not in EARLY_FIRST]


def make(remedy_id: str) -> R.Remedy:
    """A fresh remedy object for ``remedy_id``; ``lr_scale_<factor>`` and
    ``weight_decay_<factor>`` take any positive factor."""
    for prefix, cls in (("lr_scale_", R.ScaleLearningRate), ("weight_decay_", R.ScaleWeightDecay)):
        if remedy_id.startswith(prefix) and remedy_id not in REMEDIES:
            try:
                factor = float(remedy_id[len(prefix):])
            except ValueError:
                factor = -1.0
            if factor > 0:
                remedy = cls(factor)
                remedy.id = remedy_id
                return remedy
    if remedy_id not in REMEDIES:
        raise ValueError(f"remedy={remedy_id!r} is not a remedy; expected one of {sorted(REMEDIES)}")
    remedy = REMEDIES[remedy_id]()
    remedy.id = remedy_id
    return remedy
