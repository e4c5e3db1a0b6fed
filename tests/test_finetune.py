"""Transfer learning: the trainmedic.finetune helpers and the pretrained_features_destroyed
detector, on a model pretrained inside the test (no downloads).

The fine-tuning task: an MLP pretrained on 10-class digits (the first 900 samples) gets a new
5-class head for another labelling (digit pairs 0-1, 2-3, ...) of 50 held-out samples. The
pretrained features are worth keeping there (the frozen backbone plus a trained head beats what
50 samples teach from scratch), so destroying them shows on validation. The program follows the
usual recipe: the head trains on the frozen backbone for 3 epochs, then everything is unfrozen.
"""

import copy
import io
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainmedic
from _common import pretrained_mlp
from trainmedic import finetune
from trainmedic.detectors.finetune import ACC_DROP, FAR, MARK, SAMPLE, STILL, _measure
from trainmedic.history import RunState
from trainmedic.params import ParamTable

ID = "pretrained_features_destroyed"


@pytest.fixture(scope="module")
def digits_task():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"source": (x[:900], y[:900]), "train": (x[900:950], y[900:950] // 2),
            "val": (x[950:], y[950:] // 2),
            "larger": {"train": (x[900:1300], y[900:1300] // 2), "val": (x[1300:], y[1300:] // 2)}}


def _mlp(outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU()),
                         nn.Linear(128, outputs))


@pytest.fixture(scope="module")
def pretrained(digits_task):
    return pretrained_mlp(*digits_task["source"])          # the zoo's pretrained MLP (tests/zoo/_common.py)


def _fine_tune(model, task, make_optimizer, head_epochs=3, epochs=6, drifts=None, **watch):
    """The recipe: validate, train the head on the frozen backbone, unfreeze, train on; every
    epoch ends with a validation pass (which the monitor sees by itself). ``drifts``: a list that
    gets the backbone drift the detector measured at each validation epoch."""
    opt = make_optimizer(model)
    finetune.freeze(model, depth=1)
    monitor = trainmedic.watch(model, opt, on_finding=lambda f: None, **watch)
    (xt, yt), (xv, yv) = task["train"], task["val"]

    def validate():
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(xv), yv)
        model.train()
    validate()
    for epoch in range(head_epochs + epochs):
        if epoch == head_epochs:
            finetune.unfreeze(model)
        for i in range(0, len(yt), 10):
            opt.zero_grad()
            F.cross_entropy(model(xt[i:i + 10]), yt[i:i + 10]).backward()
            opt.step()
        validate()
    report = monitor.report()
    if drifts is not None:
        det = next(d for d in monitor.detectors if d.id == ID)
        drifts += [det._drift[id(e)]["drift"] for e in report.run["epochs"]]
    return report


def _new_head(pretrained):
    torch.manual_seed(2)
    model = copy.deepcopy(pretrained)
    finetune.replace_head(model, 5)
    return model


def test_sensible_discriminative_lr_is_not_flagged(pretrained, digits_task):
    drifts = []
    report = _fine_tune(_new_head(pretrained), digits_task,
                        lambda m: torch.optim.Adam(finetune.discriminative_param_groups(m, 1e-3, decay=10)),
                        drifts=drifts)
    assert report.by_id(ID) is None
    assert report.run["epochs"][-1]["val_acc"] > 0.75      # it did fine-tune well
    assert drifts[:4] == [0.0] * 4                         # frozen: measured exactly unmoved
    assert 0 < drifts[-1] < STILL                          # the backbone was measured moving, a little


def test_a_backbone_that_moves_far_while_validation_holds_is_not_flagged(pretrained, digits_task):
    """Adam 3e-3 on 400 samples: the backbone moves past FAR from its pretrained weights, and
    validation stays as good as with the frozen backbone: drift alone is no fault."""
    drifts = []
    report = _fine_tune(_new_head(pretrained), digits_task["larger"],
                        lambda m: torch.optim.Adam(m.parameters(), 3e-3), drifts=drifts)
    assert max(drifts) >= FAR, drifts
    accs = [e["val_acc"] for e in report.run["epochs"]]
    assert min(accs[4:]) > accs[3] - ACC_DROP, accs
    assert report.by_id(ID) is None


def test_a_100x_too_high_lr_is_flagged_naming_the_backbone(pretrained, digits_task):
    report = _fine_tune(_new_head(pretrained), digits_task, lambda m: torch.optim.Adam(m.parameters(), 1e-1))
    f = report.by_id(ID)
    assert f is not None and f.status == "active"
    ev = f.evidence
    assert set(ev["layers"]) == {"0.0.weight", "0.2.weight"}            # the backbone, not the head
    assert set(f.where.split(", ")) == {"0.0", "0.2"}
    assert ev["backbone_drift"] >= 1 and ev["baseline_drift"] == 0
    assert ev["metric"] == "val_acc" and ev["value"] <= ev["baseline_value"] - 0.05
    assert ev["baseline_epoch"] == 4                    # the last epoch of the frozen backbone
    assert "0.0 " in f.message and f"epoch {ev['epoch']}" in f.message


def test_watch_pretrained_marks_all_but_the_head(pretrained, digits_task):
    """A head replaced by hand: ``watch(pretrained=True)`` says the rest is pretrained."""
    torch.manual_seed(2)
    model = copy.deepcopy(pretrained)
    model[1] = nn.Linear(128, 5)
    report = _fine_tune(model, digits_task, lambda m: torch.optim.Adam(m.parameters(), 1e-1), pretrained=True)
    assert set(report.by_id(ID).evidence["layers"]) == {"0.0.weight", "0.2.weight"}
    assert getattr(model[1].weight, MARK, None) is None


def test_from_scratch_with_a_high_lr_is_not_this_finding(digits_task):
    """The same program and learning rate on a fresh model: its validation dips after the
    unfreeze too, but nothing it had was pretrained."""
    torch.manual_seed(2)
    report = _fine_tune(_mlp(5), digits_task, lambda m: torch.optim.Adam(m.parameters(), 1e-1))
    accs = [e["val_acc"] for e in report.run["epochs"]]
    assert min(accs[4:]) <= accs[3] - 0.05          # below the frozen (random) backbone's epoch
    assert report.by_id(ID) is None


def test_drift_is_the_relative_distance_from_the_pretrained_weights():
    """Known moves: a small matrix (every value kept), a large one (a sample of SAMPLE values),
    a frozen one (left out: it does not move) and the head (unmarked). The backbone's drift
    weighs each matrix by its whole norm, not by its sample's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 100), nn.Linear(100, 100), nn.Linear(100, 2))
    assert model[1].weight.numel() <= SAMPLE < model[2].weight.numel()
    finetune.mark_pretrained(model, except_head=True)
    table = ParamTable()
    table.add_model(model)
    table.add_optimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    model[0].weight.requires_grad_(False)
    w1, w2 = model[1].weight.detach().clone(), model[2].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(3)                                 # frozen: not counted
        model[1].weight.mul_(1.5)                               # drift 0.5
        model[2].weight.sub_(0.1 * w2)                          # drift 0.1
        model[3].weight.mul_(9)                                 # the head: not counted
    m = _measure(RunState(table))
    assert m["layers"] == pytest.approx({"1.weight": 0.5, "2.weight": 0.1})
    expect = ((0.5 * w1.norm()) ** 2 + (0.1 * w2.norm()) ** 2) ** 0.5 / (w1.norm() ** 2 + w2.norm() ** 2) ** 0.5
    assert m["drift"] == pytest.approx(float(expect), rel=0.05)     # the large matrix is sampled


# -- freeze / unfreeze ------------------------------------------------------------------------------

def _cnn() -> nn.Sequential:
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
                                       nn.Flatten()),
                         nn.Linear(16, 3))


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_freeze_and_unfreeze_by_glob_regex_and_depth():
    model = _cnn()
    assert finetune.freeze(model, "0.*") == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias"]
    assert _trainable(model) == {"1.0.weight", "1.0.bias", "2.weight", "2.bias"}
    assert finetune.unfreeze(model, re.compile(r"^0\.1\.")) == ["0.1.weight", "0.1.bias"]
    assert _trainable(model) == {"0.1.weight", "0.1.bias", "1.0.weight", "1.0.bias", "2.weight", "2.bias"}
    finetune.freeze(model, depth=2)
    assert _trainable(model) == {"2.weight", "2.bias"}
    finetune.unfreeze(model)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


def test_frozen_batchnorm_stays_in_eval_mode_until_unfrozen():
    model = _cnn()
    finetune.freeze(model, depth=2)
    bn, bn_plain = model[0][1], model[1][1]
    model.train()
    assert model.training and model[2].training
    assert not bn.training and not bn_plain.training          # affine-free BatchNorm too
    before = bn.running_mean.clone()
    model(torch.randn(8, 1, 6, 6) + 3)
    assert torch.equal(bn.running_mean, before)               # frozen statistics
    buf = io.BytesIO()
    torch.save(model, buf)                                    # still picklable
    assert not pickle.loads(pickle.dumps(model))[0][1].train().training
    finetune.unfreeze(model, depth=1)
    assert bn.training and not bn_plain.training              # back to the model's mode
    model.eval()
    model.train()
    assert bn.training
    model(torch.randn(8, 1, 6, 6) + 3)
    assert not torch.equal(bn.running_mean, before)


def test_freeze_without_bn_eval_leaves_batchnorm_alone():
    model = _cnn()
    finetune.freeze(model, depth=1, bn_eval=False)
    model.train()
    assert model[0][1].training


def test_bad_freeze_arguments_name_the_argument_value_and_expectation():
    model = _cnn()
    with pytest.raises(ValueError, match=r"pattern='head\.\*' matches no parameter name of Sequential; "
                                         r"expected .* such as 0\.0\.weight"):
        finetune.freeze(model, "head.*")
    with pytest.raises(ValueError, match=r"depth=4 is out of range; expected an int from 1 to 3 .*: 0, 1, 2\)"):
        finetune.freeze(model, depth=4)
    with pytest.raises(ValueError, match=r"depth=0 is out of range"):
        finetune.unfreeze(model, depth=0)
    with pytest.raises(ValueError, match=r"pattern='0\.\*' and depth=1 were both given"):
        finetune.freeze(model, "0.*", depth=1)
    with pytest.raises(TypeError, match=r"pattern=3 is not a glob string or a re.Pattern"):
        finetune.freeze(model, 3)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}   # nothing half-done


# -- layer groups -----------------------------------------------------------------------------------

def test_discriminative_param_groups_decrease_toward_the_input():
    model = _cnn()
    groups = finetune.discriminative_param_groups(model, 1e-2, decay=10)
    assert [g["name"] for g in groups] == ["0", "1", "2"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3, 1e-2])
    flat = [p for g in groups for p in g["params"]]
    assert len(flat) == len(list(model.parameters())) == len({id(p) for p in flat})
    opt = torch.optim.SGD(groups, lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3, 1e-2])
    custom = finetune.discriminative_param_groups(model, 1.0, decay=2, groups=[model[0][0], model[2]])
    assert [(g["name"], g["lr"]) for g in custom] == [("other", 0.5), ("0.0", 0.5), ("2", 1.0)]
    with pytest.raises(ValueError, match=r"base_lr=0 is not valid; expected a number > 0"):
        finetune.discriminative_param_groups(model, 0)
    with pytest.raises(ValueError, match=r"decay=0.5 is not valid; expected a number >= 1"):
        finetune.discriminative_param_groups(model, 1e-3, decay=0.5)
    with pytest.raises(ValueError, match=r"groups contains .*Linear.*; expected submodules of Sequential"):
        finetune.discriminative_param_groups(model, 1e-3, groups=[nn.Linear(2, 2)])


def test_gradual_unfreeze_adds_each_group_from_the_top():
    model = _cnn()
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)          # the head only, for now
    unfreezer = finetune.gradual_unfreeze(model, opt, every=2, lr_decay=10)
    assert _trainable(model) == {"2.weight", "2.bias"}
    assert not model[0][1].train().training                       # frozen BatchNorm in eval
    assert getattr(model[0][0].weight, MARK) is not None and getattr(model[2].weight, MARK, None) is None
    assert unfreezer.step() == []                                 # epoch 1 of every=2
    assert unfreezer.step() == ["1.0.weight", "1.0.bias"]
    assert _trainable(model) == {"1.0.weight", "1.0.bias", "2.weight", "2.bias"}
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == pytest.approx(0.01)
    assert opt.param_groups[1]["name"] == "1"
    unfreezer.step()
    unfreezer.step()
    assert _trainable(model) == {n for n, _ in model.named_parameters()}
    model.train()
    assert model[0][1].training
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01, 0.001])
    assert unfreezer.step() == [] and unfreezer.step() == []      # nothing left to unfreeze


def test_gradual_unfreeze_with_every_parameter_in_the_optimizer_adds_no_group():
    model = _cnn()
    opt = torch.optim.Adam(finetune.discriminative_param_groups(model, 1e-3))
    unfreezer = finetune.gradual_unfreeze(model, opt)
    unfreezer.step()
    assert len(opt.param_groups) == 3 and "1.0.weight" in _trainable(model)
    with pytest.raises(ValueError, match=r"every=0 is not valid; expected an int >= 1"):
        finetune.gradual_unfreeze(model, opt, every=0)
    with pytest.raises(ValueError, match=r"groups=None but Linear has 0 top-level child"):
        finetune.gradual_unfreeze(nn.Linear(2, 2), opt)


# -- the head ---------------------------------------------------------------------------------------

def test_replace_head_keeps_device_dtype_and_bias_and_marks_the_rest():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4, bias=False))).double()
    old = model[2][0]
    head = finetune.replace_head(model, 7)
    assert model[2][0] is head and head is not old
    assert (head.in_features, head.out_features, head.bias) == (8, 7, None)
    assert head.weight.dtype == torch.float64 and head.weight.device == old.weight.device
    assert model(torch.randn(3, 6, dtype=torch.float64)).shape == (3, 7)
    assert getattr(model[0].weight, MARK).name == "0.weight"
    assert getattr(head.weight, MARK, None) is None
    with pytest.raises(ValueError, match=r"num_classes=0 is not valid; expected an int >= 1"):
        finetune.replace_head(model, 0)
    with pytest.raises(ValueError, match=r"model=Sequential has no nn.Linear layer"):
        finetune.replace_head(nn.Sequential(nn.Conv2d(1, 1, 1)), 3)
    with pytest.raises(ValueError, match=r"model is itself an nn.Linear"):
        finetune.replace_head(nn.Linear(2, 2), 3)


def test_mark_pretrained_skips_weights_without_values():
    """A lazy module's weight (not built yet) is nothing pretrained: left unmarked, no error."""
    model = nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 4), nn.Linear(4, 2))
    finetune.mark_pretrained(model, except_head=True)
    assert getattr(model[1].weight, MARK).name == "1.weight"
    assert getattr(model[0].weight, MARK, None) is None and getattr(model[2].weight, MARK, None) is None
