"""trainmedic.optim_advice: describe() reads the optimizer and schedulers; advise() ties them to
findings; advice_text() renders one line per advice."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import nn

from trainmedic import optim_advice as A
from trainmedic.catalog import CATALOG
from trainmedic.repair.order import REMEDIES, make

L = torch.optim.lr_scheduler
O = torch.optim


def params():
    return nn.Linear(3, 2).parameters()


def stepped(opt, sched, n):
    for _ in range(n):
        opt.step()
        sched.step()
    return sched


# -- describe --------------------------------------------------------------------------------------

FAMILIES = [
    (lambda: O.SGD(params(), lr=0.1), "sgd"),
    (lambda: O.SGD(params(), lr=0.1, momentum=0.9), "sgd_momentum"),
    (lambda: O.SGD(params(), lr=0.1, momentum=0.9, nesterov=True), "nesterov"),
    (lambda: O.Adagrad(params()), "adagrad"),
    (lambda: O.RMSprop(params()), "rmsprop"),
    (lambda: O.Adam(params()), "adam"),
    (lambda: O.NAdam(params()), "adam"),
    (lambda: O.Adamax(params()), "adam"),
    (lambda: O.AdamW(params()), "adamw"),
    (lambda: O.Adam(params(), decoupled_weight_decay=True), "adamw"),
    (lambda: O.Adadelta(params()), "other"),
    (lambda: O.LBFGS(params()), "other"),
]


@pytest.mark.parametrize("build,family", FAMILIES)
def test_describe_family(build, family):
    opt = build()
    s = A.describe(opt)
    assert s.family == family and s.name == type(opt).__name__
    assert s.lr == opt.param_groups[0]["lr"] and s.schedulers == () and s.peak_lr is None


def test_describe_hyperparameters():
    m = nn.Linear(3, 2)
    sgd = A.describe(O.SGD([{"params": [m.weight], "weight_decay": 5e-4}, {"params": [m.bias], "lr": 0.01}],
                           lr=0.1, momentum=0.9, nesterov=True))
    assert (sgd.lr, sgd.lrs_differ, sgd.momentum, sgd.nesterov) == (0.1, True, 0.9, True)
    assert (sgd.weight_decay, sgd.decoupled, sgd.adaptive) == (5e-4, False, False)
    adam = A.describe(O.Adam(params(), lr=3e-4, betas=(0.8, 0.99), weight_decay=1e-4))
    assert (adam.betas, adam.momentum, adam.weight_decay, adam.decoupled, adam.adaptive) == \
        ((0.8, 0.99), 0.8, 1e-4, False, True)
    assert not adam.lrs_differ and A.describe(O.AdamW(params())).decoupled


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RAdam"])
def test_describe_decoupled_flag_where_torch_has_it(name):
    cls = getattr(O, name)
    if "decoupled_weight_decay" not in inspect.signature(cls).parameters:
        pytest.skip(f"torch {torch.__version__} {name} has no decoupled_weight_decay")
    assert A.describe(cls(params(), weight_decay=0.1, decoupled_weight_decay=True)).decoupled
    assert not A.describe(cls(params(), weight_decay=0.1)).decoupled


def _sgd():
    return O.SGD(params(), lr=0.1, momentum=0.9)


SCHEDULERS = [
    (lambda o: L.StepLR(o, step_size=30, gamma=0.1), ["step"], [True]),
    (lambda o: L.MultiStepLR(o, milestones=[30, 60]), ["step"], [True]),
    (lambda o: L.ExponentialLR(o, gamma=0.95), ["exponential"], [True]),
    (lambda o: L.CosineAnnealingLR(o, T_max=100), ["cosine"], [True]),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=10), ["cosine"], [True]),
    (lambda o: L.LinearLR(o, start_factor=0.01, total_iters=10), ["warmup"], [False]),
    (lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=10), ["linear"], [True]),
    (lambda o: L.ConstantLR(o, factor=0.1, total_iters=5), ["warmup"], [False]),
    (lambda o: L.PolynomialLR(o, total_iters=10), ["polynomial"], [True]),
    (lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=100), ["one_cycle"], [True]),
    (lambda o: L.ReduceLROnPlateau(o), ["plateau"], [True]),
    (lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=0.1), ["cyclic"], [True]),
    # HF-style linear warmup then linear decay, and a pure decay: LambdaLR is inspected
    (lambda o: L.LambdaLR(o, lambda k: min((k + 1) / 10, max(0.0, (1000 - k) / 990))), ["warmup"], [True]),
    (lambda o: L.LambdaLR(o, lambda k: 0.9 ** k), ["custom"], [True]),
    (lambda o: L.LambdaLR(o, lambda k: 1.0), ["custom"], [False]),
    (lambda o: L.LambdaLR(o, lambda k: 1.0 if k < 5 else 1 / 0), ["custom"], [None]),
    (lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, total_iters=5), L.CosineAnnealingLR(o, 50)],
                              milestones=[5]), ["warmup", "cosine"], [False, True]),
    (lambda o: L.ChainedScheduler([L.ConstantLR(o, factor=0.5, total_iters=2), L.ExponentialLR(o, 0.9)]),
     ["warmup", "exponential"], [False, True]),
]


@pytest.mark.parametrize("build,kinds,decays", SCHEDULERS)
def test_describe_scheduler_kinds(build, kinds, decays):
    opt = _sgd()
    sched = build(opt)
    s = A.describe(opt, [sched])
    assert [i.kind for i in s.schedulers] == kinds
    assert [i.decays for i in s.schedulers] == decays
    if len(kinds) > 1:
        assert {i.part_of for i in s.schedulers} == {type(sched).__name__}
    assert s.has_warmup == any(k in ("warmup", "one_cycle", "cyclic") for k in kinds)


def test_describe_current_lr_peak_and_warmup_phase():
    opt = O.AdamW(params(), lr=1e-3)
    seq = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=0.01, total_iters=10), L.CosineAnnealingLR(opt, 100)],
                         milestones=[10])
    s = A.describe(opt, seq)                      # a single scheduler, not in a list, is accepted
    assert s.lr == pytest.approx(1e-5) and s.peak_lr == 1e-3
    assert s.in_warmup and s.has_warmup and not s.decayed      # low lr at a warmup's start is no decay
    stepped(opt, seq, 105)
    s = A.describe(opt, [seq])
    assert not s.in_warmup and s.decayed and s.lr == opt.param_groups[0]["lr"]
    step = _sgd()
    stepped(step, L.StepLR(step, 30, 0.1), 0)
    assert A.describe(step, None).schedulers == ()
    cyc = _sgd()
    one = L.OneCycleLR(cyc, max_lr=1.0, total_steps=100)
    assert A.describe(cyc, [one]).peak_lr == 1.0 and A.describe(cyc, [one]).in_warmup
    stepped(cyc, one, 99)
    assert A.describe(cyc, [one]).decayed


def test_describe_constant_lr():
    opt = _sgd()
    assert A.describe(opt).constant_lr is True
    assert A.describe(opt, [L.LinearLR(opt, start_factor=0.1, total_iters=5)]).constant_lr is True
    assert A.describe(opt, [L.StepLR(opt, 5)]).constant_lr is False
    opt2 = _sgd()
    assert A.describe(opt2, [L.LambdaLR(opt2, lambda k: 1.0 if k < 5 else 1 / 0)]).constant_lr is None


def test_describe_sparse_embeddings():
    dense, sparse = nn.Embedding(10, 4), nn.Embedding(10, 4, sparse=True)
    assert A.describe(O.SGD(sparse.parameters(), lr=0.1), model=sparse).sparse is True
    assert A.describe(O.SGD(dense.parameters(), lr=0.1), model=dense).sparse is False
    opt = O.SGD(sparse.parameters(), lr=0.1)
    assert A.describe(opt).sparse is None                      # no model, no gradient yet: cannot tell
    sparse(torch.tensor([1, 2])).sum().backward()
    assert A.describe(opt).sparse is True                      # a sparse gradient is seen


class _Odd(torch.optim.Optimizer):
    def __init__(self, ps):
        super().__init__(ps, {"lr": "auto", "momentum": [0.9], "betas": "x", "weight_decay": None})

    def step(self, closure=None):
        return None


class _Wrapper:
    def __init__(self, opt):
        self.optimizer = opt


class _Duck:
    param_groups = [{"params": [], "lr": 0.5}]


def test_describe_never_raises_on_odd_optimizers():
    odd = A.describe(_Odd(params()))
    assert (odd.family, odd.lr, odd.momentum, odd.betas, odd.weight_decay) == ("other", None, None, None, 0.0)
    assert A.describe(_Wrapper(O.AdamW(params()))).family == "adamw"        # accelerate-style wrapper
    assert A.describe(_Duck()).family == "other" and A.describe(_Duck()).lr == 0.5
    opt = _sgd()
    opt.param_groups[0]["lr"] = torch.tensor(0.25)                           # a CPU tensor lr is read
    assert A.describe(opt).lr == 0.25
    opt.param_groups[0]["lr"] = torch.tensor(0.25, device="meta")            # a device tensor is not
    assert A.describe(opt).lr is None

    class Custom:                       # a scheduler torch does not know
        optimizer = opt

        def step(self):
            pass
    s = A.describe(opt, [Custom()])
    assert [(i.kind, i.decays) for i in s.schedulers] == [("custom", None)]


def test_describe_bad_input():
    with pytest.raises(TypeError, match=r"optimizer=Linear\(.*expected a torch\.optim\.Optimizer"):
        A.describe(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"optimizer=None is not an optimizer"):
        A.describe(None)
    with pytest.raises(TypeError, match=r"schedulers\[1\]=42 is not an LR scheduler; expected"):
        A.describe(_sgd(), [L.StepLR(_sgd(), 1), 42])
    with pytest.raises(TypeError, match=r"schedulers=5 is not a list of LR schedulers"):
        A.describe(_sgd(), 5)


# -- advise: each rule fires for its setup and is silent where the user already has the thing -------

def _steplr_decayed(n_steps=100):
    opt = _sgd()
    return opt, [stepped(opt, L.StepLR(opt, step_size=30, gamma=0.1), n_steps)]


def _warm(opt):
    return [L.LinearLR(opt, start_factor=0.01, total_iters=200)]


def _const(build):
    return lambda: (build(), [])


def _with(build, sched):
    def f():
        opt = build()
        return opt, sched(opt)
    return f


adam = lambda **kw: O.Adam(params(), **{"lr": 1e-3, **kw})          # noqa: E731
sgd = lambda **kw: O.SGD(params(), **{"lr": 0.1, **kw})             # noqa: E731

# (finding, setup builder () -> (opt, schedulers), evidence, kwargs, rules expected exactly)
RULES = [
    # too high / diverging / NaN: early under an adaptive optimizer without warmup -> warmup
    ("loss_diverging", _const(adam), {"best_step": 50}, {}, {"warmup_adaptive"}),
    ("nonfinite_loss", _const(lambda: O.RMSprop(params())), {"first_step": 3}, {}, {"warmup_adaptive"}),
    ("loss_diverging", _with(adam, _warm), {"best_step": 50}, {}, {"lower_lr"}),
    ("nonfinite_loss", _const(lambda: O.RAdam(params())), {"first_step": 3}, {}, {"lower_lr"}),
    ("loss_diverging", _with(adam, lambda o: [L.OneCycleLR(o, max_lr=0.01, total_steps=100)]),
     {"best_step": 5}, {}, {"lower_lr"}),
    ("loss_diverging", _const(adam), {"best_step": 5000}, {}, {"lower_lr"}),
    ("learning_rate_too_high", _const(adam), {}, {}, {"warmup_adaptive", "lower_lr"}),   # when: unknown
    ("learning_rate_too_high", _const(adam), {}, {"step": 100}, {"warmup_adaptive"}),
    ("learning_rate_too_high", _const(adam), {}, {"step": 1000}, {"lower_lr"}),
    # SGD: warmup only at a large batch
    ("nonfinite_loss", _const(lambda: sgd(momentum=0.9)), {"first_step": 10}, {"batch_size": 4096},
     {"warmup_large_batch"}),
    ("nonfinite_loss", _const(lambda: sgd(momentum=0.9)), {"first_step": 10, "batch_size": 2048}, {},
     {"warmup_large_batch"}),
    ("nonfinite_loss", _const(lambda: sgd(momentum=0.9)), {"first_step": 10}, {"batch_size": 64}, {"lower_lr"}),
    ("nonfinite_loss", _with(lambda: sgd(momentum=0.9), _warm), {"first_step": 10}, {"batch_size": 4096},
     {"lower_lr"}),
    # oscillating
    ("loss_oscillating", _const(sgd), {}, {}, {"momentum", "decay_schedule"}),
    ("loss_oscillating", _with(lambda: sgd(momentum=0.9), lambda o: [L.StepLR(o, 30)]), {}, {}, set()),
    ("loss_oscillating", _with(lambda: sgd(momentum=0.9, nesterov=True), lambda o: [L.ReduceLROnPlateau(o)]),
     {}, {}, set()),
    ("loss_oscillating", _with(sgd, lambda o: [L.CosineAnnealingLR(o, 100)]), {}, {}, {"momentum"}),
    ("loss_oscillating", _with(lambda: sgd(momentum=0.9), _warm), {}, {}, {"decay_schedule"}),
    ("loss_oscillating", _const(lambda: adam(lr=3e-3)), {}, {}, {"decay_schedule", "lower_adaptive_lr"}),
    ("loss_oscillating", _with(adam, lambda o: [L.CosineAnnealingLR(o, 100)]), {}, {}, set()),
    ("loss_oscillating", _with(lambda: sgd(momentum=0.9), lambda o: [L.LambdaLR(o, lambda k: 1 if k < 5 else 1 / 0)]),
     {}, {}, set()),                                            # a custom schedule: cannot tell, says nothing
    # too low / not decreasing / underfitting
    ("learning_rate_too_low", _const(sgd), {}, {}, {"sgd_to_adam", "range_test"}),
    ("loss_not_decreasing", _const(lambda: sgd(momentum=0.9)), {}, {}, {"range_test"}),
    ("underfitting", _with(lambda: sgd(momentum=0.9), lambda o: [L.OneCycleLR(o, max_lr=1.0, total_steps=100)]),
     {}, {}, set()),
    ("underfitting", _steplr_decayed, {}, {}, {"schedule_decayed"}),
    ("learning_rate_too_low", _with(adam, _warm), {}, {}, {"range_test"}),            # warming up: not decayed
    ("learning_rate_too_low", lambda: (lambda o: (o, [stepped(o, L.ReduceLROnPlateau(o, patience=0), 0)]))(adam(lr=1e-5)),
     {"learning_rate": 1e-3}, {}, {"schedule_decayed"}),        # plateau: the peak comes from the evidence
    ("loss_not_decreasing", lambda: (O.SGD(nn.Embedding(9, 2, sparse=True).parameters(), lr=0.1, momentum=0.9), []),
     {"sparse_gradients": True}, {}, {"range_test", "sparse"}),
    ("loss_not_decreasing", lambda: (O.Adagrad(nn.Embedding(9, 2).parameters()), []), {"sparse_gradients": True},
     {}, {"range_test"}),
    # collapsed schedules
    ("lr_schedule_collapsed", _steplr_decayed, {}, {}, {"collapsed_step"}),
    ("lr_schedule_collapsed", _with(sgd, lambda o: [L.CosineAnnealingLR(o, 10)]), {}, {}, {"collapsed_cosine"}),
    ("lr_schedule_collapsed", _with(sgd, lambda o: [L.ReduceLROnPlateau(o)]), {}, {}, {"collapsed_plateau"}),
    ("lr_schedule_collapsed", _with(sgd, lambda o: _warm(o) + [L.ExponentialLR(o, 0.9)]), {}, {},
     {"collapsed_exponential"}),
    ("lr_schedule_collapsed", _const(sgd), {"lr_peak": 0.1, "lr_now": 1e-6}, {}, {"collapsed_manual"}),
    ("lr_schedule_collapsed", _const(sgd), {}, {}, set()),
    ("lr_schedule_collapsed", _with(sgd, _warm), {}, {}, set()),
    # vanishing / saturated
    ("vanishing_gradient", _const(lambda: sgd(momentum=0.9)), {}, {}, {"adaptive_for_vanishing"}),
    ("saturated_activation", _const(sgd), {}, {}, {"adaptive_for_vanishing"}),
    ("vanishing_gradient", _const(adam), {}, {}, set()),
    # overfitting
    ("overfitting", _const(lambda: adam(weight_decay=1e-4)), {}, {}, {"adamw", "sgd_for_generalisation",
                                                                      "cosine_to_zero"}),
    ("overfitting", _with(lambda: O.AdamW(params(), weight_decay=0.05), lambda o: [L.CosineAnnealingLR(o, 9)]),
     {}, {}, {"sgd_for_generalisation"}),
    ("overfitting", _with(lambda: adam(weight_decay=0.05, decoupled_weight_decay=True),
                          lambda o: [L.CosineAnnealingLR(o, 9)]), {}, {}, {"sgd_for_generalisation"}),
    ("overfitting", _with(lambda: O.AdamW(params(), weight_decay=1e-4), lambda o: [L.StepLR(o, 9)]), {}, {},
     {"adamw_decay", "sgd_for_generalisation"}),
    ("overfitting", _const(lambda: sgd(momentum=0.9)), {}, {}, {"sgd_decay", "cosine_to_zero"}),
    ("overfitting", _with(lambda: sgd(momentum=0.9, weight_decay=5e-4), lambda o: [L.CosineAnnealingLR(o, 9)]),
     {}, {}, set()),
    # regularisation
    ("regularization_dominates", _const(lambda: sgd(weight_decay=5e-3)), {}, {}, {"lower_decay"}),
    ("regularization_dominates", _const(lambda: O.AdamW(params())), {}, {}, {"lower_decay"}),
    ("regularization_dominates", _const(sgd), {}, {}, set()),
    # fine-tuning
    ("pretrained_features_destroyed", _const(adam), {}, {}, {"discriminative_lr", "finetune_warmup"}),
    ("pretrained_features_destroyed", lambda: (lambda o: (o, _warm(o)))(
        O.AdamW([{"params": [nn.Parameter(torch.ones(1))], "lr": 1e-5}, {"params": list(params())}], lr=1e-3)),
     {}, {}, set()),
]


@pytest.mark.parametrize("finding,build,evidence,kwargs,expected", RULES,
                         ids=[f"{i}-{r[0]}" for i, r in enumerate(RULES)])
def test_rule_fires_exactly_where_it_applies(finding, build, evidence, kwargs, expected):
    opt, scheds = build()
    advice = A.advise(finding, A.describe(opt, scheds), dict(evidence), **kwargs)
    assert {a.rule for a in advice} == expected, [a.text for a in advice]


def test_advice_names_the_users_objects_and_the_torch_call():
    opt, scheds = _steplr_decayed()
    (a,) = A.advise("lr_schedule_collapsed", A.describe(opt, scheds), {"collapse_step": 60}, step=100)
    assert "StepLR(step_size=30, gamma=0.1)" in a.text and "60 steps" in a.text
    assert "every batch" in a.text                              # 100 scheduler steps in 100 optimizer steps
    (a,) = A.advise("lr_schedule_collapsed", A.describe(opt, scheds), {"collapse_step": 6000}, step=10000)
    assert "every batch" not in a.text                          # stepped per epoch
    (a,) = A.advise("lr_schedule_collapsed", A.describe(opt, scheds), {"collapse_step": 70})
    assert "every batch" in a.text          # collapsed at optimizer step 70: StepLR alone needs 60 of its steps
    (a,) = A.advise("lr_schedule_collapsed", A.describe(opt, scheds), {"collapse_step": 600})
    assert "every batch" not in a.text
    opt = _sgd()
    seq = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=0.01, total_iters=5), L.CosineAnnealingLR(opt, 50)],
                         milestones=[5])
    (a,) = A.advise("lr_schedule_collapsed", A.describe(opt, [seq]))
    assert "CosineAnnealingLR (in SequentialLR)" in a.text and "T_max (now 50)" in a.text
    (a,) = A.advise("loss_diverging", A.describe(O.Adam(params()), [L.StepLR(O.Adam(params()), 3)]), {"best_step": 9})
    assert "SequentialLR(opt, [LinearLR(opt, start_factor=0.01, total_iters=200), <your StepLR>]" in a.text
    assert a.remedy_id == "warmup" and a.switch_to == "warmup"
    (a,) = A.advise("loss_diverging", A.describe(O.SGD(params(), lr=0.3, momentum=0.9)), {"best_step": 900})
    assert "torch.optim.SGD(params, lr=0.03, momentum=0.9)" in a.text and a.remedy_id == "lr_scale_0.1"
    o = O.Adam(params())
    (a,) = A.advise("loss_diverging", A.describe(o, [L.OneCycleLR(o, max_lr=0.01, total_steps=9)]), {"best_step": 5})
    assert "max_lr 0.01 -> 0.001" in a.text
    (a,) = A.advise("loss_oscillating", A.describe(O.SGD(params(), lr=0.1), [L.StepLR(_sgd(), 3)]))
    assert "torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)" in a.text
    over = {a.rule: a for a in A.advise("overfitting", A.describe(O.Adam(params(), weight_decay=1e-4)))}
    assert "torch.optim.AdamW(params, lr=0.001, weight_decay=0.05)" in over["adamw"].text
    if "decoupled_weight_decay" in inspect.signature(O.NAdam).parameters:
        over = {a.rule: a for a in A.advise("overfitting", A.describe(O.NAdam(params(), weight_decay=1e-4)))}
        assert "torch.optim.NAdam(params, lr=0.002, weight_decay=0.05, decoupled_weight_decay=True)" in over["adamw"].text
    (a,) = A.advise("regularization_dominates", A.describe(O.AdamW(params(), weight_decay=0.1)))
    assert "decoupled" in a.why and "0.1 -> 0.01" in a.text and a.remedy_id == "weight_decay_0.1"
    (a,) = A.advise("regularization_dominates", A.describe(O.Adam(params(), weight_decay=0.1)))
    assert "L2" in a.why and "decoupled" not in a.why
    (a,) = A.advise("vanishing_gradient", A.describe(_sgd()))
    assert "trainmedic.initialize.reinit" in a.text and a.remedy_id == "sgd_to_adam"


# -- invariants over many setups and every finding ----------------------------------------------------

def _setups():
    out = []
    for build, _ in FAMILIES:
        out.append(A.describe(build()))
    for build, _, _ in SCHEDULERS:
        for opt in (O.SGD(params(), lr=0.1, momentum=0.9), O.Adam(params(), weight_decay=1e-4)):
            try:
                sched = build(opt)
            except ValueError:                   # e.g. CyclicLR needs momentum
                continue
            out.append(A.describe(opt, [sched]))
    opt, scheds = _steplr_decayed()
    out.append(A.describe(opt, scheds))
    out.append(A.describe(O.SGD(nn.Embedding(9, 2, sparse=True).parameters(), lr=0.1, weight_decay=1e-2),
                          model=nn.Embedding(9, 2, sparse=True)))
    return out


SETUPS = _setups()
EVIDENCE = [({}, {}), ({"first_step": 3, "best_step": 3, "batch_size": 4096}, {}),
            ({"collapse_step": 60, "lr_peak": 0.1, "lr_now": 1e-6}, {"step": 5000})]
REMEDY_PATTERN = re.compile(r"^(lr_scale|weight_decay)_(\d+(\.\d+)?(e-?\d+)?)$")


def _all_advice():
    for s in SETUPS:
        for f in CATALOG:
            for ev, kw in EVIDENCE:
                for a in A.advise(f, s, dict(ev), **kw):
                    yield f, s, a


def test_every_remedy_exists_and_applies_to_the_setup():
    seen = set()
    for f, s, a in _all_advice():
        if a.remedy_id is None:
            continue
        seen.add(a.remedy_id)
        assert a.remedy_id in REMEDIES or REMEDY_PATTERN.match(a.remedy_id), a.remedy_id
        assert make(a.remedy_id).id == a.remedy_id
        if a.remedy_id == "sgd_to_adam":
            assert s.name == "SGD"                               # SgdToAdam applies to SGD only
        if a.remedy_id.startswith("weight_decay_0"):
            assert s.weight_decay > 0                            # there is decay to lower
    assert {"warmup", "lr_scale_0.1", "sgd_to_adam", "weight_decay_0.1", "weight_decay_up",
            "lr_to_healthy_updates"} <= seen


def test_never_suggests_what_the_setup_already_has():
    for f, s, a in _all_advice():
        assert a.switch_to not in (s.family, *s.kinds), (f, s.name, a.text)
        if a.switch_to == "warmup":
            assert not s.has_warmup, (f, a.text)
        if a.rule == "momentum":
            assert not s.momentum, (f, a.text)
        if a.rule in ("adamw", "adamw_decay"):
            assert a.rule == "adamw_decay" or not s.decoupled
        if a.rule in ("decay_schedule", "cosine_to_zero"):
            assert s.constant_lr is True


def test_unrelated_findings_get_no_advice():
    related = set(A.HIGH) | set(A.LOW) | {"loss_oscillating", "lr_schedule_collapsed", "vanishing_gradient",
                                          "saturated_activation", "overfitting", "regularization_dominates",
                                          "pretrained_features_destroyed"}
    assert A.ADVISED == related
    for f in set(CATALOG) - related:
        for s in SETUPS:
            for ev, kw in EVIDENCE:
                assert A.advise(f, s, dict(ev), **kw) == [], f


def test_advice_text_one_short_line_each():
    items = [a for _, _, a in _all_advice()]
    lines = A.advice_text(items)
    assert len(lines) == len(items) and len(items) > 100
    for a, line in zip(items, lines):
        assert len(line) < 300 and "\n" not in line, line
        assert line.startswith(a.text) and a.why in line, line
        if a.remedy_id:
            assert f"remedy `{a.remedy_id}`" in line, line       # never dropped for length
    assert A.advice_text([]) == []


def test_advise_bad_input():
    s = A.describe(_sgd())
    with pytest.raises(ValueError, match=r"finding_id='lr_too_big' is not a known finding id; expected one of"):
        A.advise("lr_too_big", s)
    with pytest.raises(TypeError, match=r"setup=<torch.optim.sgd.SGD object> is not a Setup; expected .*describe"):
        A.advise("loss_diverging", _sgd())
    with pytest.raises(TypeError, match=r"evidence=\[1\] is not a dict"):
        A.advise("loss_diverging", s, [1])
    with pytest.raises(TypeError, match=r"advice='x' is not an Advice"):
        A.advice_text(["x"])


@pytest.mark.parametrize("make_opt, expected", [
    (lambda p: torch.optim.SGD(p, lr=2.0, momentum=0.9), "Lower your SGD's lr"),
    (lambda p: torch.optim.Adam(p, lr=0.3), "warmup"),
])
def test_a_watched_run_puts_advice_for_its_own_optimizer_first(make_opt, expected):
    """A finding emitted while watching carries the advice for the run's optimizer and
    schedulers before the catalog's generic fixes."""
    import trainmedic
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = make_opt(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1000)
    monitor = trainmedic.watch(model, opt, every=5, on_finding=lambda f: None)
    x = torch.randn(512, 16)
    y = x[:, :4].argmax(1)
    for i in range(60):
        b = slice(32 * (i % 16), 32 * (i % 16 + 1))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
        sched.step()
    found = {f.id: f for f in monitor.report().findings}
    hit = [f for f in found.values() if f.id in A.HIGH and f.fixes and expected in f.fixes[0]]
    assert hit, {k: f.fixes[:1] for k, f in found.items()}
    generic = list(CATALOG[hit[0].id].fixes)
    assert hit[0].fixes[-len(generic):] == generic and len(hit[0].fixes) > len(generic)


def test_each_optimizer_is_judged_against_its_own_default_lr():
    """NAdam and Adamax default to lr 2e-3: at that lr no "above its usual" advice, at 10x it."""
    for make in (O.NAdam, O.Adamax):
        assert A.describe(make(params())).default_lr == 2e-3
        assert "lower_adaptive_lr" not in {a.rule for a in A.advise("loss_oscillating", A.describe(make(params())))}
        assert "lower_adaptive_lr" in {a.rule for a in A.advise("loss_oscillating",
                                                                A.describe(make(params(), lr=2e-2)))}


def test_a_cosine_stepped_every_batch_is_told_to_count_batches_not_epochs():
    opt = O.SGD(params(), lr=0.1, momentum=0.9)
    sched = stepped(opt, L.CosineAnnealingLR(opt, T_max=100), 200)
    text = " ".join(A.advice_text(A.advise("lr_schedule_collapsed", A.describe(opt, sched), step=200)))
    assert "T_max (now 100)" in text and "total batches" in text and "once per epoch" not in text


def test_adafactors_weight_decay_is_decoupled():
    """torch's Adafactor decays the weights apart from the gradient, as AdamW does."""
    assert A.describe(O.Adafactor(params(), weight_decay=0.1)).decoupled
    assert not A.describe(O.Adam(params(), weight_decay=0.1)).decoupled
