"""The findings taxonomy: every id trainmedic can report, with its title, default severity and
the fixes in the order an expert tries them (most common cause first, easiest fix first).

Ids are a public contract (users gate CI on them): never change an id's meaning; add new ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FindingType:
    id: str
    category: str
    severity: str
    title: str
    why: str
    fixes: tuple[str, ...]


_TYPES = [
    # -- data and inputs -------------------------------------------------------------------
    FindingType("nonfinite_input", "data", "error", "NaN or Inf in the input data",
                "A single NaN in a batch turns the loss and every gradient into NaN.",
                ("Find the samples with NaN/Inf (missing values, division by zero in preprocessing) "
                 "and fix or drop them.",
                 "Impute missing values before building tensors.")),
    FindingType("input_not_normalized", "data", "warning", "Inputs are not normalised",
                "Inputs far from unit scale make the first layer's gradients huge or tiny, so "
                "one learning rate cannot suit all features.",
                ("Standardise inputs: subtract the training mean and divide by the training std "
                 "(per feature or per channel).",
                 "For images, scale raw 0..255 pixels to 0..1 and then standardise.")),
    FindingType("target_not_normalized", "data", "warning", "Regression targets are on a large scale",
                "Targets far from the output's initial scale make the loss and gradients huge at "
                "the start and stall training.",
                ("Standardise the targets (and invert the transform at prediction time).",
                 "Or initialise the output bias at the target mean.")),
    FindingType("label_out_of_range", "data", "error", "Labels outside the valid range",
                "Class labels must lie in [0, C-1] (BCE targets in [0, 1]); out-of-range labels "
                "crash on GPU or silently train on garbage.",
                ("Remap labels to 0..C-1 (e.g. subtract 1 from 1-based labels).",
                 "Check the number of output units matches the number of classes.")),
    FindingType("class_imbalance", "data", "warning", "One class dominates the data",
                "With a dominant class, accuracy is high even for a model that ignores the input "
                "(the accuracy paradox).",
                ("Report per-class recall, F1 or PR curves instead of accuracy.",
                 "Weight the loss by inverse class frequency or resample the data.",
                 "Collect more examples of the rare classes.")),
    FindingType("unshuffled_data", "data", "warning", "Training data is not shuffled",
                "Batches sorted by label make every step pull the model towards one class.",
                ("Pass shuffle=True to the training DataLoader (or shuffle the arrays once per epoch).",)),
    FindingType("train_val_leakage", "data", "error", "Validation samples also appear in training",
                "Duplicates between the splits make validation numbers optimistic.",
                ("De-duplicate before splitting; split by source (patient, user, document).",)),
    FindingType("preprocessing_mismatch", "data", "error",
                "Training and validation inputs are preprocessed differently",
                "The model sees a different input distribution at evaluation time.",
                ("Apply the same normalisation (with the training statistics) to every split.",)),
    FindingType("label_noise", "data", "warning", "Labels do not match the inputs",
                "The training set can only be fitted by memorising, so validation stays at chance.",
                ("Check that inputs and labels are shuffled together and aligned.",
                 "Inspect a few samples with their labels.",
                 "Use a noise-robust loss or clean the labels.")),
    # -- model, loss and wiring --------------------------------------------------------------
    FindingType("params_not_in_optimizer", "wiring", "error",
                "Trainable parameters that no optimizer updates",
                "These parameters receive gradients but never change: that part of the model "
                "stays at its random initialisation.",
                ("Build the optimizer from model.parameters() after the model is complete.",
                 "If a layer was added or replaced after the optimizer was created, recreate the "
                 "optimizer (or call optimizer.add_param_group).",
                 "If the layer should be frozen, set requires_grad=False on its parameters.")),
    FindingType("params_not_updating", "wiring", "error", "Parameters are not changing",
                "Parameters in the optimizer keep their values, so they do not learn.",
                ("Check the order: zero_grad() → backward() → step(); zero_grad between backward and "
                 "step erases the gradients.",
                 "Check the learning rate of their parameter group is not 0.",
                 "Check nothing detaches the graph before these parameters (.detach(), .data, "
                 ".item(), numpy round trips).")),
    FindingType("grads_not_cleared", "wiring", "error", "Gradients are never cleared",
                "Without zero_grad() each step uses the sum of all past gradients, so updates "
                "grow and point in stale directions.",
                ("Call optimizer.zero_grad() once per optimizer step (before backward).",
                 "For deliberate gradient accumulation, call zero_grad() right after each step().")),
    FindingType("symmetric_weights", "initialisation", "error", "Weights are symmetric",
                "Units of a layer with identical (or constant/zero) weights compute the same "
                "thing and receive the same gradient, so they can never become different.",
                ("Use random initialisation (PyTorch's defaults, or "
                 "trainmedic.initialize.reinit(model, sample=batch): He for ReLU, Xavier for "
                 "tanh/sigmoid, per layer).",
                 "Do not initialise weights with constants or zeros (biases may be zero).")),
    FindingType("bad_init_scale", "initialisation", "warning", "Initial weight scale is off",
                "Activations shrink or blow up layer after layer, so gradients vanish or explode.",
                ("Use He (Kaiming) init for ReLU layers and Xavier (Glorot) for tanh/sigmoid: "
                 "trainmedic.initialize.reinit(model, sample=batch) picks each layer's by the "
                 "activation it feeds and prints the activation scale through depth before and after.",
                 "Add normalisation layers (BatchNorm/LayerNorm).")),
    FindingType("loss_input_mismatch", "wiring", "error", "The loss does not get what it expects",
                "CrossEntropyLoss/BCEWithLogitsLoss apply softmax/sigmoid themselves; feeding them "
                "probabilities squashes the gradient. Shape mismatches broadcast silently.",
                ("Remove the softmax/sigmoid at the end of the model and feed raw logits to the loss.",
                 "Or use NLLLoss on log_softmax outputs / BCELoss on sigmoid outputs.",
                 "Make prediction and target shapes match exactly (e.g. squeeze(1)).")),
    FindingType("batch_mixing", "wiring", "error", "Samples of a batch influence each other",
                "A view/reshape across the batch dimension or a softmax over dim 0 mixes samples.",
                ("Use permute/transpose instead of view to reorder dimensions.",
                 "Check batch_first of RNN layers and the dim of softmax/normalisation.")),
    FindingType("eval_in_train_mode", "wiring", "warning", "Evaluation runs in training mode",
                "Dropout and BatchNorm behave differently in training mode: evaluation numbers "
                "are noisy and pessimistic, and BatchNorm statistics get polluted.",
                ("Call model.eval() before evaluation and model.train() after it.",)),
    FindingType("train_in_eval_mode", "wiring", "warning", "Training runs in evaluation mode",
                "After model.eval() for validation the model was never put back in training mode: "
                "dropout is off and BatchNorm freezes its statistics while the weights train.",
                ("Call model.train() at the start of every training epoch (after each evaluation).",
                 "If BatchNorm is frozen on purpose, set only the BatchNorm modules to eval().")),
    FindingType("gradient_check_failed", "wiring", "error", "A custom backward is wrong",
                "The analytic gradient of a custom op disagrees with finite differences.",
                ("Re-derive the backward; test it with torch.autograd.gradcheck in float64.",)),
    FindingType("loss_at_init_unexpected", "initialisation", "warning", "Initial loss is unexpected",
                "With C balanced classes a fresh model should start near ln C.",
                ("Check the final layer's init scale and bias.",
                 "Check the loss gets logits and the right targets.")),
    FindingType("cannot_overfit_small_batch", "wiring", "error", "Cannot overfit a tiny subset",
                "A working model and loop drive a handful of samples to ~zero loss; if it cannot, "
                "something in the pipeline is broken.",
                ("Check the wiring: loss inputs, label alignment, parameters in the optimizer.",
                 "Raise the learning rate; turn off regularisation and augmentation.")),
    # -- training dynamics -------------------------------------------------------------------
    FindingType("nonfinite_loss", "dynamics", "error", "The loss became NaN or Inf",
                "Once the loss is NaN every parameter update is NaN and training is over.",
                ("Lower the learning rate (by 3-10x).",
                 "Clip gradients (torch.nn.utils.clip_grad_norm_).",
                 "Guard log/division/sqrt in a custom loss with a small epsilon; check the inputs "
                 "for NaN.")),
    FindingType("nonfinite_gradient", "dynamics", "error", "Gradients became NaN or Inf",
                "A non-finite gradient poisons the parameters at the next step.",
                ("Lower the learning rate and clip gradients.",
                 "Look for log(0), sqrt(0) or division by zero in the forward pass.",
                 "With fp16, use a GradScaler.")),
    FindingType("loss_diverging", "dynamics", "error", "The loss is diverging",
                "The loss rose well above its best value: steps are overshooting.",
                ("Lower the learning rate (divide by 3 until it no longer diverges).",
                 "Add LR warmup and gradient clipping.",
                 "Check for bad samples in the batches where the loss jumps.")),
    FindingType("loss_not_decreasing", "dynamics", "warning", "The loss is not decreasing",
                "After many steps the loss is where it started: the model is not learning.",
                ("Check the learning rate (try 3x and 10x larger, or an LR range test).",
                 "Check that the loss gets logits and the labels match the inputs.",
                 "Check that all parameters are in the optimizer and receive gradients.")),
    FindingType("loss_oscillating", "dynamics", "warning", "The loss swings without a trend",
                "Large swings with no downward trend mean the steps are too big for the "
                "curvature.",
                ("Lower the learning rate.",
                 "Increase the batch size or use momentum/Adam to average out noise.",
                 "Clip gradients.")),
    FindingType("learning_rate_too_high", "dynamics", "error", "The learning rate is too high",
                "Each step changes the weights by a large fraction of their size (healthy is "
                "about 1e-3 per step), so training overshoots.",
                ("Divide the learning rate by 3-10 and retry.",
                 "Use warmup and a decaying schedule.",
                 "Run an LR range test to find a good value.")),
    FindingType("learning_rate_too_low", "dynamics", "warning", "The learning rate is too low",
                "Each step changes the weights by a tiny fraction of their size, so the loss falls "
                "very slowly.",
                ("Multiply the learning rate by 10 and compare.",
                 "Run an LR range test to find a good value.")),
    FindingType("lr_schedule_collapsed", "dynamics", "warning", "The learning rate collapsed early",
                "The schedule drove the learning rate to almost zero while the loss is still high.",
                ("Step epoch-based schedulers once per epoch, not once per batch.",
                 "Lower the decay rate or raise the minimum learning rate.")),
    FindingType("vanishing_gradient", "dynamics", "warning", "Gradients vanish toward the input",
                "Layers near the input get gradients orders of magnitude smaller than layers near "
                "the output, so they barely learn.",
                ("Use ReLU-family activations instead of sigmoid/tanh in hidden layers.",
                 "Use He/Xavier initialisation: trainmedic.initialize.reinit(model, sample=batch) "
                 "shows the activation scale through depth before and after.",
                 "Add BatchNorm/LayerNorm or residual connections.")),
    FindingType("exploding_gradient", "dynamics", "error", "Gradients explode",
                "Gradient norms grow by orders of magnitude, so updates become huge.",
                ("Clip gradients (clip_grad_norm_ with max_norm 1.0).",
                 "Lower the learning rate.",
                 "Fix the initialisation scale; for RNNs use LSTM/GRU.")),
    FindingType("dead_relu", "dynamics", "warning", "Many ReLU units are dead",
                "A ReLU unit that outputs zero for every input gets no gradient and never recovers.",
                ("Lower the learning rate (dead units often follow large steps).",
                 "Use He initialisation (trainmedic.initialize.reinit); reduce weight decay.",
                 "Use LeakyReLU/GELU, or add BatchNorm before the activation.")),
    FindingType("saturated_activation", "dynamics", "warning", "Sigmoid/tanh units are saturated",
                "Units pinned at the flat ends of sigmoid/tanh pass almost no gradient.",
                ("Use Xavier initialisation (trainmedic.initialize.reinit) and normalised inputs.",
                 "Add BatchNorm before the activation, or use ReLU-family activations.")),
    FindingType("regularization_dominates", "dynamics", "warning",
                "Regularisation outweighs the data loss",
                "The weight penalty is larger than the loss it regularises, so weights shrink "
                "toward zero instead of fitting the data.",
                ("Reduce weight decay by 10x (typical: 1e-4 to 5e-4 for SGD).",
                 "Turn regularisation off, check the model can fit, then add it back.")),
    FindingType("constant_predictions", "dynamics", "error", "The model predicts the same thing for every input",
                "Outputs do not depend on the input: the model collapsed to a constant (often the "
                "majority class or the target mean).",
                ("Check for dead units or a collapsed learning rate.",
                 "Check class balance and the loss (class weights for a dominant class).",
                 "Check that inputs actually reach the model (not all zeros / constant).")),
    # -- generalisation ----------------------------------------------------------------------
    FindingType("overfitting", "generalisation", "warning", "The model is overfitting",
                "Validation loss turns up while training loss keeps falling.",
                ("Stop early at the best validation epoch.",
                 "Add data augmentation, dropout or weight decay.",
                 "Augment the training batches with trainmedic.augment (translate, flips where "
                 "they keep the label, mixup/cutmix); check_label_preservation tells which keep it.",
                 "Use decoupled weight decay: torch.optim.AdamW(trainmedic.regularize."
                 "param_groups_without_decay(model, 0.05)); trainmedic.regularize."
                 "explain_weight_decay(optimizer) says what your optimizer does now.",
                 "Add label smoothing (F.cross_entropy(..., label_smoothing=0.1), or "
                 "trainmedic.regularize.smooth_labels for other losses), stochastic depth "
                 "(trainmedic.regularize.StochasticDepth) in deep residual nets, or DropConnect "
                 "(trainmedic.regularize.drop_connect).",
                 "Get more data; as a last resort, use a smaller model.")),
    FindingType("underfitting", "generalisation", "warning", "The model is underfitting",
                "Training error itself stays high.",
                ("Train longer or with a better learning rate.",
                 "Increase capacity (more units or layers); reduce regularisation.",
                 "Check data quality and features.")),
    FindingType("frozen_random_layers", "wiring", "error",
                "Frozen layers are still at their random initialisation",
                "Layers with requires_grad=False that were never trained compute random features; "
                "only the layers after them learn, so the model is far weaker than it looks.",
                ("Unfreeze them (requires_grad=True) and add them to the optimizer.",
                 "If they were meant to be pretrained, load the pretrained weights before freezing.")),
    FindingType("pretrained_features_destroyed", "generalisation", "warning",
                "Fine-tuning destroys the pretrained features",
                "A pretrained backbone that moves too far too fast forgets what it knew, so "
                "validation falls below what the frozen backbone gave.",
                ("Lower the backbone's learning rate (10-100x below the head's) or freeze it for "
                 "the first epochs.",
                 "Use warmup; unfreeze layers gradually from the top.")),
    FindingType("rank_divergence", "distributed", "error",
                "One rank of a distributed job differs from the others",
                "Ranks of a data-parallel job should see the same parameters and similar losses; "
                "a rank that differs trains a different model or reads different data.",
                ("Check that every rank builds the model from the same seed and wraps it in DDP.",
                 "Check the DistributedSampler (set_epoch each epoch) and per-rank data paths.")),
    # -- trainmedic itself -------------------------------------------------------------------
    FindingType("monitoring_limited", "trainmedic", "info", "Some statistics could not be collected",
                "trainmedic skipped a measurement it cannot take safely on this setup.",
                ("No action needed for training; see the message for what was skipped.",)),
]

CATALOG: dict[str, FindingType] = {t.id: t for t in _TYPES}

# Root causes come first, in the troubleshooting guide's order: data and wiring before
# initialisation, regularisation and the learning rate, then gradients and activations, and the
# symptoms (what the loss does) last. Findings earlier in this list are named as the cause.
GUIDE_ORDER: tuple[str, ...] = (
    "nonfinite_input", "label_out_of_range", "label_noise", "train_val_leakage",
    "preprocessing_mismatch", "input_not_normalized", "target_not_normalized", "unshuffled_data",
    "class_imbalance",
    "params_not_in_optimizer", "frozen_random_layers", "params_not_updating", "grads_not_cleared",
    "loss_input_mismatch", "batch_mixing", "eval_in_train_mode", "train_in_eval_mode", "gradient_check_failed",
    "symmetric_weights", "bad_init_scale", "loss_at_init_unexpected", "regularization_dominates",
    "cannot_overfit_small_batch",
    "learning_rate_too_high", "learning_rate_too_low", "lr_schedule_collapsed",
    "saturated_activation", "vanishing_gradient", "exploding_gradient", "dead_relu",
    "nonfinite_gradient", "nonfinite_loss", "loss_diverging", "loss_oscillating",
    "constant_predictions", "loss_not_decreasing", "overfitting", "underfitting",
    "pretrained_features_destroyed", "rank_divergence", "monitoring_limited")

_NOT_LEARNING = ("label_noise", "params_not_in_optimizer", "frozen_random_layers",
                 "params_not_updating", "loss_input_mismatch", "batch_mixing", "symmetric_weights",
                 "regularization_dominates", "learning_rate_too_high", "learning_rate_too_low",
                 "lr_schedule_collapsed", "saturated_activation", "vanishing_gradient", "dead_relu",
                 "target_not_normalized", "input_not_normalized", "class_imbalance")

# consequence -> the findings it can follow from, most likely first. A finding is marked
# ``caused_by`` the first of its candidates that is active in the same run. (``rank_divergence``:
# one rank's NaN or huge gradient reaches every rank through DDP's all-reduce.)
CAUSES: dict[str, tuple[str, ...]] = {
    "nonfinite_loss": ("nonfinite_input", "label_out_of_range", "rank_divergence", "grads_not_cleared",
                       "learning_rate_too_high", "target_not_normalized", "exploding_gradient",
                       "nonfinite_gradient"),
    "nonfinite_gradient": ("nonfinite_input", "rank_divergence", "grads_not_cleared", "learning_rate_too_high",
                           "target_not_normalized", "exploding_gradient"),
    "loss_diverging": ("grads_not_cleared", "unshuffled_data", "regularization_dominates",
                       "learning_rate_too_high", "target_not_normalized", "exploding_gradient",
                       "nonfinite_input"),
    "learning_rate_too_high": ("grads_not_cleared", "regularization_dominates", "rank_divergence"),
    "loss_oscillating": ("grads_not_cleared", "learning_rate_too_high", "unshuffled_data",
                         "target_not_normalized"),
    "exploding_gradient": ("grads_not_cleared", "target_not_normalized", "input_not_normalized",
                           "learning_rate_too_high", "rank_divergence"),
    "dead_relu": ("learning_rate_too_high", "regularization_dominates", "bad_init_scale"),
    "saturated_activation": ("input_not_normalized", "learning_rate_too_high", "bad_init_scale"),
    "constant_predictions": ("input_not_normalized", "loss_input_mismatch", "nonfinite_gradient",
                             "params_not_updating",
                             "class_imbalance", "label_noise",
                             "unshuffled_data", "regularization_dominates", "symmetric_weights",
                             "dead_relu", "saturated_activation", "vanishing_gradient",
                             "learning_rate_too_high", "exploding_gradient", "frozen_random_layers"),
    "loss_not_decreasing": _NOT_LEARNING,
    "underfitting": _NOT_LEARNING,
    "loss_at_init_unexpected": ("label_out_of_range", "loss_input_mismatch", "class_imbalance",
                                "target_not_normalized", "input_not_normalized", "bad_init_scale",
                                "exploding_gradient", "saturated_activation", "symmetric_weights"),
    "overfitting": ("preprocessing_mismatch", "label_noise"),
    "label_noise": ("preprocessing_mismatch", "class_imbalance"),
    "learning_rate_too_low": ("loss_input_mismatch", "frozen_random_layers", "params_not_updating",
                              "vanishing_gradient", "saturated_activation"),
    "vanishing_gradient": ("loss_input_mismatch", "saturated_activation", "bad_init_scale"),
    "params_not_updating": ("params_not_in_optimizer", "nonfinite_gradient", "nonfinite_loss",
                            "dead_relu", "vanishing_gradient"),
}


def finding_type(finding_id: str) -> FindingType:
    """Return the catalog entry for ``finding_id`` or raise a ValueError naming the known ids."""
    try:
        return CATALOG[finding_id]
    except KeyError:
        raise ValueError(
            f"finding_id={finding_id!r} is not a known finding id; expected one of "
            f"{sorted(CATALOG)}") from None
