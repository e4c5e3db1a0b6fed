"""trainmedic.regularize: DropConnect, label smoothing, stochastic depth, weight decay (decoupled or
L2, checked against what each torch optimizer's step actually does) and dropout placement."""

import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainmedic import regularize as R
from trainmedic.augment import mixup


def _mlp() -> nn.Sequential:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(20, 64), act=nn.ReLU(), drop=nn.Dropout(0.5),
                                     fc2=nn.Linear(64, 5)))


def _cnn() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1), bn2=nn.BatchNorm2d(8), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), drop=nn.Dropout(0.3), fc=nn.Linear(8, 4)))


# -- DropConnect ------------------------------------------------------------------------------------

def test_drop_connect_eval_unchanged_and_covers_linear_and_conv():
    torch.manual_seed(0)
    model = _cnn()
    x = torch.randn(4, 3, 6, 6)
    model.eval()
    before = model(x)
    names = R.drop_connect(model, p=0.5)
    assert names == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert torch.equal(model(x), before)                              # identity in eval mode
    model.train()
    model.drop.p = 0.0                                                # DropConnect the only randomness
    assert not torch.equal(model(x), model(x))                        # active in training mode


def test_drop_connect_drops_about_p_fresh_each_access_and_scales():
    torch.manual_seed(0)
    layer = nn.Linear(500, 400)
    w = layer.weight.detach().clone()
    R.drop_connect(layer, p=0.3)
    a, b = layer.weight, layer.weight                                 # two samples in train mode
    for eff in (a, b):
        dropped = (eff == 0).float().mean().item()
        assert abs(dropped - 0.3) < 0.01                              # 200k weights: std 0.001
        kept = eff != 0
        assert torch.allclose(eff[kept], w[kept] / 0.7)
    assert not torch.equal(a == 0, b == 0)                            # a fresh mask each time
    layer.eval()
    assert torch.equal(layer.weight, w)


def test_drop_connect_gradient_only_to_kept_weights():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    R.drop_connect(layer, p=0.4)
    x, g = torch.randn(8, 30), torch.randn(8, 20)
    torch.manual_seed(1)
    eff = layer.weight.detach()                                       # the mask of the next forward
    torch.manual_seed(1)
    out = layer(x)
    assert torch.allclose(out, x @ eff.T + layer.bias)
    out.backward(g)
    grad = layer.parametrizations.weight.original.grad
    kept = eff != 0
    assert 0 < (~kept).sum() < kept.numel()
    assert torch.all(grad[~kept] == 0)
    assert torch.allclose(grad[kept], ((g.T @ x) / 0.6)[kept], atol=1e-6)
    assert torch.all(grad[kept] != 0)


def test_drop_connect_keeps_parameter_objects_for_an_existing_optimizer():
    torch.manual_seed(0)
    model = _mlp()
    before = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)                 # built before the call
    w1 = model.fc1.weight
    R.drop_connect(model, p=0.2)
    assert {id(q) for q in model.parameters()} == {id(q) for q in before}
    assert model.fc1.parametrizations.weight.original is w1
    assert "fc1.parametrizations.weight.original" in dict(model.named_parameters())
    old = w1.detach().clone()
    F.cross_entropy(model(torch.randn(16, 20)), torch.randint(0, 5, (16,))).backward()
    opt.step()
    assert not torch.equal(w1, old)                                   # the old optimizer updates it


def test_remove_drop_connect_restores_names_values_and_objects():
    torch.manual_seed(0)
    model = _mlp()
    keys = list(model.state_dict())
    w1 = model.fc1.weight
    R.drop_connect(model, p=0.2)
    assert set(model.state_dict()) != set(keys)
    with torch.no_grad():
        model.fc1.parametrizations.weight.original.add_(1.0)          # "training"
    trained = w1.detach().clone()
    assert sorted(R.remove_drop_connect(model)) == ["fc1.weight", "fc2.weight"]
    assert list(model.state_dict()) == keys
    assert model.fc1.weight is w1 and torch.equal(model.fc1.weight, trained)
    assert type(model.fc1) is nn.Linear
    assert R.remove_drop_connect(model) == []


def test_remove_drop_connect_leaves_other_parametrizations():
    layer = nn.Linear(4, 4)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", nn.Identity())
    R.drop_connect(layer, p=0.5)
    assert R.remove_drop_connect(layer) == ["weight"]
    plist = layer.parametrizations.weight
    assert len(plist) == 1 and isinstance(plist[0], nn.Identity)


def test_drop_connect_pattern_and_custom_module():
    model = _cnn()
    assert R.drop_connect(model, p=0.1, pattern="fc") == ["fc.weight"]
    assert not torch.nn.utils.parametrize.is_parametrized(model.conv1)
    assert R.drop_connect(model, p=0.1, pattern=re.compile("conv2")) == ["conv2.weight"]
    emb = nn.Embedding(10, 4)                                          # a module holding "weight" itself
    assert R.drop_connect(emb, p=0.1) == ["weight"]
    lin = nn.Linear(3, 3)
    assert R.drop_connect(lin, p=0.1, names=("weight", "bias")) == ["weight", "bias"]


def test_drop_connect_errors():
    with pytest.raises(ValueError, match=r"p=1\.0: expected a probability in \[0, 1\)"):
        R.drop_connect(nn.Linear(2, 2), p=1.0)
    with pytest.raises(ValueError, match="p=-0.1"):
        R.drop_connect(nn.Linear(2, 2), p=-0.1)
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        R.drop_connect(nn.Linear(2, 2), names=("weight", "nope"))
    with pytest.raises(ValueError, match="names="):
        R.drop_connect(nn.Linear(2, 2), names="weight")
    with pytest.raises(ValueError, match="pattern='head.*'"):
        R.drop_connect(_mlp(), pattern="head.*")
    with pytest.raises(ValueError, match="no nn.Linear"):
        R.drop_connect(nn.Sequential(nn.ReLU()))
    lin = nn.Linear(2, 2)
    R.drop_connect(lin)
    with pytest.raises(ValueError, match="already has DropConnect"):
        R.drop_connect(lin)
    with pytest.raises(ValueError, match="lazy"):
        R.drop_connect(nn.Sequential(nn.LazyLinear(3)))
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        R.drop_connect("model")


# -- label smoothing --------------------------------------------------------------------------------

def test_smooth_labels_values_and_matches_torch_label_smoothing():
    torch.manual_seed(0)
    y = torch.tensor([0, 2, 1, 2])
    soft = R.smooth_labels(y, num_classes=3, eps=0.3)
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert torch.allclose(soft[0], torch.tensor([0.8, 0.1, 0.1]))
    logits = torch.randn(4, 3)
    assert torch.allclose(F.cross_entropy(logits, soft), F.cross_entropy(logits, y, label_smoothing=0.3))
    assert torch.equal(R.smooth_labels(y, 3, eps=0.0), F.one_hot(y, 3).float())


def test_smooth_labels_on_mixup_soft_targets():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 4, (16,))
    _, soft = mixup(x, y, num_classes=4, alpha=0.4, generator=torch.Generator().manual_seed(0))
    smoothed = R.smooth_labels(soft, num_classes=4, eps=0.2)
    assert torch.allclose(smoothed.sum(1), torch.ones(16))
    assert torch.allclose(smoothed, 0.8 * soft + 0.05)
    logits = torch.randn(16, 4)
    assert torch.allclose(F.cross_entropy(logits, smoothed), F.cross_entropy(logits, soft, label_smoothing=0.2))


def test_smooth_labels_errors():
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps=1.5"):
        R.smooth_labels(y, 2, eps=1.5)
    with pytest.raises(ValueError, match="label 3"):
        R.smooth_labels(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="num_classes=0"):
        R.smooth_labels(y, 0)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        R.smooth_labels(torch.full((2, 3), 1 / 3), 4)
    with pytest.raises(ValueError, match="not summing to 1"):
        R.smooth_labels(torch.tensor([[0.5, 0.2], [0.5, 0.5]]), 2)
    with pytest.raises(ValueError, match="negative"):
        R.smooth_labels(torch.tensor([[1.5, -0.5]]), 2)
    with pytest.raises(TypeError, match="y is a list"):
        R.smooth_labels([0, 1], 2)


# -- stochastic depth -------------------------------------------------------------------------------

def test_stochastic_depth_identity_in_eval_and_at_p0():
    x = torch.randn(8, 3)
    assert R.stochastic_depth(x, 0.5, training=False) is x
    assert R.stochastic_depth(x, 0.0, training=True) is x
    sd = R.StochasticDepth(0.5).eval()
    assert sd(x) is x
    assert "p=0.5" in repr(sd) and "'row'" in repr(sd)


def test_stochastic_depth_row_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    x = torch.ones(20000, 3, 2)
    out = R.stochastic_depth(x, 0.3, training=True)
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(1)
    assert torch.all(dropped | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1))
    assert abs(dropped.float().mean().item() - 0.3) < 0.015
    assert abs(out.mean().item() - 1.0) < 0.02                        # expectation preserved


def test_stochastic_depth_batch_mode_and_all_dropped():
    torch.manual_seed(0)
    x = torch.ones(4, 3)
    outs = torch.stack([R.stochastic_depth(x, 0.25, training=True, mode="batch") for _ in range(4000)])
    whole = (outs == 0).flatten(1).all(1)
    assert torch.all(whole | (outs.flatten(1) == outs.flatten(1)[:, :1]).all(1))   # all or nothing
    assert abs(whole.float().mean().item() - 0.25) < 0.03
    assert abs(outs.mean().item() - 1.0) < 0.05
    assert torch.equal(R.stochastic_depth(x, 1.0, training=True), torch.zeros(4, 3))


def test_stochastic_depth_generator_determinism():
    x = torch.randn(64, 5)
    state = torch.get_rng_state()
    a = R.stochastic_depth(x, 0.5, True, generator=torch.Generator().manual_seed(3))
    b = R.stochastic_depth(x, 0.5, True, generator=torch.Generator().manual_seed(3))
    c = R.stochastic_depth(x, 0.5, True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)                   # global RNG untouched


def test_stochastic_depth_module_in_a_residual_block_trains():
    torch.manual_seed(0)
    block = nn.Linear(6, 6)
    sd = R.StochasticDepth(0.5)
    x = torch.randn(32, 6)
    y = x + sd(block(x))
    y.sum().backward()
    rows_dropped = torch.isclose(y, x).all(1)
    assert 0 < rows_dropped.sum() < 32
    assert block.weight.grad is not None and torch.count_nonzero(block.weight.grad) > 0


def test_stochastic_depth_errors_and_linear_decay():
    x = torch.randn(2, 2)
    with pytest.raises(ValueError, match=r"p=1\.5: expected a probability in \[0, 1\]"):
        R.stochastic_depth(x, 1.5, True)
    with pytest.raises(ValueError, match="mode='col'"):
        R.stochastic_depth(x, 0.1, True, mode="col")
    with pytest.raises(TypeError, match="training=1"):
        R.stochastic_depth(x, 0.1, 1)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        R.stochastic_depth(torch.ones(2, 2, dtype=torch.long), 0.1, True)
    with pytest.raises(TypeError, match="generator="):
        R.stochastic_depth(x, 0.1, True, generator=0)
    with pytest.raises(ValueError, match="mode='x'"):
        R.StochasticDepth(0.1, mode="x")
    assert R.linear_decay(5, 0.5) == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert R.linear_decay(1, 0.2) == [0.2]
    with pytest.raises(ValueError, match="num_blocks=0"):
        R.linear_decay(0, 0.5)
    with pytest.raises(ValueError, match="p_last=1"):
        R.linear_decay(3, 1)


# -- weight decay -----------------------------------------------------------------------------------

CASES = [  # (factory, kind, adaptive)
    (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01), "l2", False),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01), "l2", False),
    (lambda p: torch.optim.ASGD(p, lr=0.1, weight_decay=0.01), "l2", False),
    (lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.01, decoupled_weight_decay=True), "decoupled", True),
    (lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.01), "decoupled", True),
    (lambda p: torch.optim.Adamax(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.NAdam(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.NAdam(p, lr=0.1, weight_decay=0.01, decoupled_weight_decay=True), "decoupled", True),
    (lambda p: torch.optim.RAdam(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.RAdam(p, lr=0.1, weight_decay=0.01, decoupled_weight_decay=True), "decoupled", True),
    (lambda p: torch.optim.RMSprop(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=0.01), "l2", True),
    (lambda p: torch.optim.Adadelta(p, lr=0.1, weight_decay=0.01), "l2", True),
]


def _step(factory, w, g, **override):
    p = nn.Parameter(w.clone())
    opt = factory([p])
    opt.param_groups[0].update(override)
    p.grad = g.clone()
    opt.step()
    return p.detach()


@pytest.mark.parametrize("factory,kind,adaptive", CASES)
def test_weight_decay_kind_matches_what_the_step_does(factory, kind, adaptive):
    torch.manual_seed(0)
    w, g = torch.randn(6, 4), torch.randn(6, 4)
    [group] = R.weight_decay_kind(factory([nn.Parameter(w.clone())]))
    assert (group.kind, group.adaptive, group.weight_decay, group.lr) == (kind, adaptive, 0.01, 0.1)
    for grad in (g, torch.zeros_like(g)):
        with_decay = _step(factory, w, grad)
        if kind == "l2":      # the same as no decay with wd * w added to the gradient
            expected = _step(factory, w, grad + 0.01 * w, weight_decay=0.0)
        else:                 # the same as no decay, then w shrunk by lr * wd apart from the gradient
            expected = _step(factory, w, grad, weight_decay=0.0) - 0.1 * 0.01 * w
        assert torch.allclose(with_decay, expected, atol=1e-6)
    assert not torch.allclose(with_decay, _step(factory, w, grad, weight_decay=0.0), atol=1e-6)


def test_weight_decay_kind_none_unknown_and_groups():
    model = _mlp()
    assert R.weight_decay_kind(torch.optim.SGD(model.parameters(), lr=0.1))[0].kind == "none"
    assert R.weight_decay_kind(torch.optim.Rprop(model.parameters()))[0].kind == "none"
    assert R.weight_decay_kind(torch.optim.LBFGS(model.parameters()))[0].weight_decay is None

    class MyAdamW(torch.optim.AdamW):
        pass

    class Custom(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.1, "weight_decay": 0.1})

    for opt in (MyAdamW(model.parameters()), Custom(model.parameters())):
        assert R.weight_decay_kind(opt)[0].kind == "unknown"
    text = R.explain_weight_decay(MyAdamW(model.parameters()))
    assert "unknown" in text and "subclass of torch.optim.AdamW" in text

    opt = torch.optim.AdamW(R.param_groups_without_decay(model, 0.05), lr=1e-3)
    groups = R.weight_decay_kind(opt)
    assert [(g.name, g.kind, g.weight_decay, g.params, g.decayed_1d) for g in groups] == [
        ("decay", "decoupled", 0.05, 2, 0), ("no_decay", "none", 0.0, 2, 0)]
    text = R.explain_weight_decay(opt)
    assert "group 0 ('decay')" in text and "group 1 ('no_decay')" in text and "ndim" not in text


def test_decayed_biases_are_counted_and_explained():
    model = _cnn()                         # 3 biases + 4 BatchNorm weights/biases of ndim 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)          # default weight_decay=1e-2
    [group] = R.weight_decay_kind(opt)
    assert group.decayed_1d == 7 and group.params == 10
    text = R.explain_weight_decay(opt)
    assert "7 parameter tensors of ndim <= 1" in text
    assert "trainmedic.regularize.param_groups_without_decay" in text


def test_explain_weight_decay_texts():
    ps = lambda: [nn.Parameter(torch.randn(3, 3))]                # noqa: E731
    adam = R.explain_weight_decay(torch.optim.Adam(ps(), lr=1e-3, weight_decay=1e-4))
    assert "Adam with weight_decay=0.0001 adds L2 to the gradient" in adam
    assert "barely decayed" in adam and "torch.optim.AdamW(..., weight_decay=1e-2)" in adam
    nadam = R.explain_weight_decay(torch.optim.NAdam(ps(), weight_decay=1e-4))
    assert "decoupled_weight_decay=True" in nadam
    adamw = R.explain_weight_decay(torch.optim.AdamW(ps(), lr=1e-3, weight_decay=0.1))
    assert "decoupled" in adamw and "0.0001 per step" in adamw and "L2" not in adamw
    sgd = R.explain_weight_decay(torch.optim.SGD(ps(), lr=0.1, momentum=0.9, weight_decay=5e-4))
    assert "rescaling by lr" in sgd and "lr*weight_decay=5e-05" in sgd and "0.0005 once momentum=0.9" in sgd
    big = R.explain_weight_decay(torch.optim.SGD(ps(), lr=1.0, weight_decay=0.1))
    assert "halve every 7 steps" in big
    assert "no weight decay" in R.explain_weight_decay(torch.optim.SGD(ps(), lr=0.1))
    assert "no weight decay setting" in R.explain_weight_decay(torch.optim.Rprop(ps()))


def test_param_groups_without_decay_and_errors():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    groups = R.param_groups_without_decay(model, 0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [id(q) for q in groups[0]["params"]] == [id(model[0].weight), id(model[2].weight)]
    assert {id(q) for q in groups[1]["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert groups[1]["weight_decay"] == 0.0
    torch.optim.AdamW(groups)                                          # accepted as is
    with pytest.raises(ValueError, match="weight_decay=-1"):
        R.param_groups_without_decay(model, -1)
    with pytest.raises(ValueError, match="no parameters"):
        R.param_groups_without_decay(nn.ReLU(), 0.1)
    with pytest.raises(TypeError, match="param_groups"):
        R.weight_decay_kind(object())


# -- dropout placement ------------------------------------------------------------------------------

def test_dropout_placement_silent_on_standard_mlp_and_cnn():
    assert R.check_dropout_placement(_mlp().train(), torch.randn(4, 20)) == []
    assert R.check_dropout_placement(_cnn().train(), torch.randn(4, 3, 8, 8)) == []
    cnn = _cnn().train()
    R.drop_connect(cnn, p=0.1, pattern="fc")
    assert R.check_dropout_placement(cnn, torch.randn(4, 3, 8, 8)) == []


def test_dropout_before_batchnorm():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(10, 16), act=nn.ReLU(), drop=nn.Dropout(0.5),
                                      bn=nn.BatchNorm1d(16), fc2=nn.Linear(16, 3)))
    [note] = R.check_dropout_placement(model, torch.randn(8, 10))
    assert "'drop' (Dropout, p=0.5) feeds 'bn' (BatchNorm1d) directly" in note and "variance shift" in note


def test_dropout_on_logits_and_after_last_layer():
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(10, 16), act=nn.ReLU(), fc2=nn.Linear(16, 3),
                                      drop=nn.Dropout(0.2)))
    [note] = R.check_dropout_placement(model, torch.randn(8, 10))
    assert "'drop' (Dropout, p=0.2) is on the model's output ('fc2' is the last layer" in note
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(10, 3), drop=nn.Dropout(0.2), soft=nn.Softmax(-1)))
    [note] = R.check_dropout_placement(model, torch.randn(8, 10))
    assert "'drop' (Dropout, p=0.2) is after the last layer ('fc1'" in note


def test_dropout_in_eval_mode_and_high_p():
    model = _mlp().train()
    model.drop.eval()
    [note] = R.check_dropout_placement(model, torch.randn(4, 20))
    assert "Dropout 'drop' is in eval mode while the model is in training mode" in note
    [note] = R.check_dropout_placement(_mlp().eval(), torch.randn(4, 20))
    assert "is in eval mode" in note and "model.train()" in note
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), drop_in=nn.Dropout(0.8), fc=nn.Linear(12, 3)))
    [note] = R.check_dropout_placement(model, torch.randn(4, 3, 4))
    assert "'drop_in' (Dropout, p=0.8) drops 80% of the model's inputs" in note and "p=0.2" in note
    model = _mlp()
    model.drop.p = 0.9
    [note] = R.check_dropout_placement(model, torch.randn(4, 20))
    assert "'drop' (Dropout, p=0.9) drops 90% of the units" in note


def test_no_dropout_hint_only_for_big_models():
    big = nn.Sequential(nn.Linear(1000, 1001), nn.ReLU(), nn.Linear(1001, 10))
    [note] = R.check_dropout_placement(big, torch.randn(2, 1000))
    assert note.startswith("Hint: 'Sequential' has 1.0M parameters and no dropout layer")
    assert R.check_dropout_placement(nn.Sequential(nn.Linear(10, 10)), torch.randn(2, 10)) == []
    big.insert(2, R.StochasticDepth(0.1))
    assert R.check_dropout_placement(big, torch.randn(2, 1000)) == []


def test_dropout_placement_restores_state_and_takes_tuple_or_dict():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.drop, self.fc = nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.Linear(4, 2)

            self.register_buffer("calls", torch.zeros(()))     # a buffer its forward changes in any mode

        def forward(self, x, z):
            self.calls += 1
            return self.fc(self.drop(torch.relu(self.bn(self.a(x))))) + z + 0 * torch.randn_like(z)

    model = Two().train()
    model.bn.eval()
    model.bn.running_var.fill_(2.0)
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, z = torch.randn(5, 3), torch.zeros(5, 2)
    rng = torch.get_rng_state()
    assert R.check_dropout_placement(model, (x, z)) == []
    assert R.check_dropout_placement(model, {"x": x, "z": z}) == []
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks for m in model.modules())
    assert all(q.grad is None for q in model.parameters())
    with pytest.raises(TypeError, match="sample is a str"):
        R.check_dropout_placement(model, "x")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        R.check_dropout_placement(lambda x: x, torch.zeros(1))
