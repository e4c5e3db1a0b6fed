"""Source patches (trainmedic.repair.patches): the edit of a training script that matches a remedy,
as exact text edits; scripts that do not express the setting literally give None."""

import difflib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from trainmedic.repair.patches import patch_for


def src(text):
    return textwrap.dedent(text).lstrip("\n")


def patched(remedy, source, info=None):
    """The patch, which must exist and compile."""
    patch = patch_for(remedy, source, info)
    assert patch is not None, remedy
    assert patch.remedy == remedy
    compile(patch.source, "train.py", "exec")
    return patch


def changes(old, new):
    """(removed lines, added lines) from ``old`` to ``new``."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0))[2:]
    return [s[1:] for s in lines if s[0] == "-"], [s[1:] for s in lines if s[0] == "+"]


def run(source):
    """Execute a (patched) script; its globals."""
    namespace = {"__name__": "__main__"}
    exec(compile(source, "train.py", "exec"), namespace)
    return namespace


TRAIN = src("""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=3.0)  # too high
    x, y = torch.randn(16, 4), 10 * torch.randn(16, 1)
    updates = []
    for step in range(3):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        before = model.weight.detach().clone()
        opt.step()
        updates.append((model.weight.detach() - before).norm().item())
""")


# --- learning rate and weight decay -----------------------------------------------------------

def test_lr_keyword_is_scaled_and_the_comment_kept():
    patch = patched("lr_scale_0.1", TRAIN)
    assert changes(TRAIN, patch.source) == (
        ["opt = torch.optim.SGD(model.parameters(), lr=3.0)  # too high"],
        ["opt = torch.optim.SGD(model.parameters(), lr=0.3)  # too high"])
    assert patch.summary == "lr=3.0 -> lr=0.3 (line 6)"
    assert run(patch.source)["opt"].param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("literal, remedy, expected", [
    ("3.0", "lr_scale_0.1", "0.3"), ("1e-5", "lr_scale_10", "1e-4"), ("0.00001", "lr_scale_10", "0.0001"),
    ("3e-4", "lr_scale_0.1", "3e-5"), ("2.5E-3", "lr_scale_0.01", "2.5E-5"),
    ("0.001", "lr_scale_0.1", "0.0001"),
    ("0.0001", "lr_scale_0.1", "1e-5"), ("1", "lr_scale_0.01", "0.01"), ("0.1", "lr_scale_10", "1.0")])
def test_new_numbers_are_written_without_float_noise(literal, remedy, expected):
    source = f"opt = torch.optim.Adam(model.parameters(), lr={literal})\n"
    assert patched(remedy, source).source == f"opt = torch.optim.Adam(model.parameters(), lr={expected})\n"


def test_positional_lr():
    source = src("""
        from torch import optim
        opt = optim.SGD(net.parameters(), 0.5, momentum=0.9)
    """)
    assert changes(source, patched("lr_scale_0.1", source).source)[1] == [
        "opt = optim.SGD(net.parameters(), 0.05, momentum=0.9)"]


def test_lr_from_a_module_constant_used_in_a_function():
    source = src("""
        import torch

        LR = 1e-2  # tuned on the small set

        def main(model):
            return torch.optim.Adam(model.parameters(), lr=LR)
    """)
    patch = patched("lr_scale_0.1", source)
    assert changes(source, patch.source) == (["LR = 1e-2  # tuned on the small set"],
                                             ["LR = 1e-3  # tuned on the small set"])
    assert patch.summary == "LR=1e-2 -> LR=1e-3 (line 3)"


def test_lr_from_a_local_constant_shadowing_a_module_one():
    source = src("""
        lr = 1.0

        def build(model):
            lr = 0.5
            return torch.optim.RMSprop(model.parameters(), lr=lr)
    """)
    assert changes(source, patched("lr_scale_0.1", source).source) == (["    lr = 0.5"], ["    lr = 0.05"])


@pytest.mark.parametrize("source", [
    "lr = 0.1\nif big:\n    lr = 0.01\nopt = torch.optim.SGD(model.parameters(), lr=lr)\n",
    "def build(model, lr=0.1):\n    return torch.optim.SGD(model.parameters(), lr=lr)\n",
    "opt = torch.optim.SGD(model.parameters(), lr=cfg['lr'])\n",
    "opt = torch.optim.SGD(model.parameters(), lr=base_lr * 2)\n",
    "opt = torch.optim.SGD(model.parameters())\n",
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nsched = OneCycleLR(opt, max_lr=1.0, total_steps=9)\n",
], ids=["assigned-twice", "parameter", "dict", "expression", "no-lr", "one-cycle-schedule"])
def test_lr_not_written_as_a_literal_gives_none(source):
    assert patch_for("lr_scale_0.1", source) is None


def test_lr_from_an_argparse_default(monkeypatch):
    source = src("""
        import argparse
        import torch

        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=3)
        parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
        args = parser.parse_args()
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    """)
    patch = patched("lr_scale_0.1", source)
    assert changes(source, patch.source)[1] == [
        'parser.add_argument("--lr", type=float, default=0.01, help="learning rate")']
    assert patch.summary == "--lr default=0.1 -> --lr default=0.01 (line 6)"
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert run(patch.source)["opt"].param_groups[0]["lr"] == 0.01


GAN = src("""
    import torch

    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
""")


def test_two_optimizers_are_both_patched_and_the_summary_says_so():
    patch = patched("lr_scale_0.1", GAN)
    assert changes(GAN, patch.source)[1] == [
        "opt_g = torch.optim.Adam(gen.parameters(), lr=2e-5, betas=(0.5, 0.999))",
        "opt_d = torch.optim.SGD(disc.parameters(), lr=0.01)"]
    assert patch.summary.endswith("(all 2 optimizers)")


@pytest.mark.parametrize("cls, line", [
    ("SGD", "opt_d = torch.optim.SGD(disc.parameters(), lr=0.01)"),
    ("torch.optim.Adam", "opt_g = torch.optim.Adam(gen.parameters(), lr=2e-5, betas=(0.5, 0.999))")])
def test_the_optimizer_class_picks_the_optimizer(cls, line):
    assert changes(GAN, patched("lr_scale_0.1", GAN, {"optimizer_class": cls}).source)[1] == [line]
    assert patch_for("lr_scale_0.1", GAN, {"optimizer_class": "RMSprop"}) is None


TRAINER = src("""
    import torch


    class Trainer:
        def __init__(self, model):
            self.model = model
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.5)
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=10)

        def train_step(self, x, y):
            loss = torch.nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            return loss.item()
""")


def test_lr_and_weight_decay_in_a_trainer_class():
    assert changes(TRAINER, patched("lr_scale_10", TRAINER).source)[1] == [
        "        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2, weight_decay=0.5)"]
    patch = patched("weight_decay_0.1", TRAINER)
    assert changes(TRAINER, patch.source)[1] == [
        "        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)"]
    assert patch.summary == "weight_decay=0.5 -> weight_decay=0.05 (line 7)"


@pytest.mark.parametrize("source", [TRAIN, "opt = torch.optim.AdamW(m.parameters(), weight_decay=0)\n"])
def test_no_weight_decay_to_lower_gives_none(source):
    assert patch_for("weight_decay_0.1", source) is None


# --- zero_grad ----------------------------------------------------------------------------

ACCUMULATING = src("""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    grads = []
    for step in range(3):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads.append(model.weight.grad.clone())
        opt.step()  # gradient step
        sched.step()
""")


def test_zero_grad_is_added_after_the_step_and_gradients_stop_accumulating():
    patch = patched("zero_grad_each_step", ACCUMULATING)
    removed, added = changes(ACCUMULATING, patch.source)
    assert (removed, added) == ([], ["    opt.zero_grad()"])
    assert "    opt.step()  # gradient step\n    opt.zero_grad()\n    sched.step()\n" in patch.source
    assert patch.summary == "add opt.zero_grad() after opt.step() (line 13)"
    before, after = run(ACCUMULATING)["grads"], run(patch.source)["grads"]
    assert before[2].norm() > 2.5 * before[0].norm()
    assert torch.allclose(after[2], after[0], rtol=0.01)


def test_zero_grad_for_a_self_optimizer_receiver():
    patch = patched("zero_grad_each_step", TRAINER)
    assert changes(TRAINER, patch.source)[1] == ["        self.optimizer.zero_grad()"]
    assert ("self.optimizer.step()\n        self.optimizer.zero_grad()\n        self.scheduler.step()"
            in patch.source)


AMP = src("""
    import torch

    scaler = torch.amp.GradScaler("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""")


def test_zero_grad_after_a_gradscaler_step():
    patch = patched("zero_grad_each_step", AMP)
    assert "    scaler.step(optimizer)\n    optimizer.zero_grad()\n    scaler.update()\n" in patch.source


@pytest.mark.parametrize("source", [
    TRAIN, ACCUMULATING.replace("loss.backward()", "model.zero_grad()\n    loss.backward()"),
    "for x in data:\n    loss(x).backward()\n    scheduler.step()\n"])
def test_zero_grad_already_there_or_no_optimizer_step_gives_none(source):
    assert patch_for("zero_grad_each_step", source) is None


def test_zero_grad_keeps_windows_line_endings():
    source = ACCUMULATING.replace("\n", "\r\n")
    patch = patched("zero_grad_each_step", source)
    assert "opt.step()  # gradient step\r\n    opt.zero_grad()\r\n" in patch.source


# --- gradient clipping --------------------------------------------------------------------

def test_clip_before_the_step_bounds_the_update():
    patch = patched("clip_grad_norm", TRAIN)
    assert changes(TRAIN, patch.source) == (
        [], ["    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"])
    assert "clip_grad_norm_(model.parameters(), 1.0)\n    opt.step()\n" in patch.source
    assert max(run(TRAIN)["updates"]) > 3.0
    assert max(run(patch.source)["updates"]) <= 3.0 + 1e-5     # lr 3 x gradient norm <= 1


def test_clip_with_a_gradscaler_unscales_first():
    assert changes(AMP, patched("clip_grad_norm", AMP).source)[1] == [
        "    scaler.unscale_(optimizer)", "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"]
    unscaled = AMP.replace("scaler.step(", "scaler.unscale_(optimizer)\n    scaler.step(")
    assert changes(unscaled, patched("clip_grad_norm", unscaled).source)[1] == [
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)"]


def test_clip_in_a_trainer_class_uses_self_model():
    assert changes(TRAINER, patched("clip_grad_norm", TRAINER).source)[1] == [
        "        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)"]


def test_clip_with_only_from_torch_import_nn():
    source = src("""
        from torch import nn, optim

        net = nn.Linear(3, 1)
        opt = optim.Adam(net.parameters())
        net(x).sum().backward()
        opt.step()
    """)
    assert changes(source, patched("clip_grad_norm", source).source)[1] == [
        "nn.utils.clip_grad_norm_(net.parameters(), 1.0)"]


def test_clip_imports_torch_when_nothing_binds_it():
    source = src('''
        """Tiny regression."""
        from torch.nn import Linear
        from torch.optim import SGD

        torch_free = Linear(3, 1)
        opt = SGD(torch_free.parameters(), lr=10.0)
        for _ in range(2):
            opt.zero_grad()
            (torch_free.weight.sum() * 100).backward()
            opt.step()
    ''')
    patch = patched("clip_grad_norm", source)
    assert changes(source, patch.source)[1] == [
        "import torch", "    torch.nn.utils.clip_grad_norm_(torch_free.parameters(), 1.0)"]
    assert "from torch.optim import SGD\nimport torch\n" in patch.source
    run(patch.source)


def test_clip_falls_back_to_the_param_groups_when_the_model_is_not_in_scope():
    source = src("""
        import torch

        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=10.0)

        def train_step(model, optimizer, x):
            optimizer.zero_grad()
            (model(x).sum() * 100).backward()
            optimizer.step()

        train_step(model, optimizer, torch.ones(1, 3))
    """)
    patch = patched("clip_grad_norm", source)
    assert changes(source, patch.source)[1] == [
        '    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)']
    before = run(source)["model"].weight.detach().clone()
    torch.manual_seed(0)
    assert run(patch.source)["model"].weight.detach().norm() < before.norm() + 10.0


@pytest.mark.parametrize("source", [
    TRAIN.replace("    opt.step()", "    nn.utils.clip_grad_norm_(model.parameters(), 5)\n    opt.step()"),
    "loss.backward()\nscheduler.step()\n"])
def test_clip_already_there_or_no_step_gives_none(source):
    assert patch_for("clip_grad_norm", source) is None


# --- missing parameters -------------------------------------------------------------------

def test_missing_params_from_a_comprehension_bound_to_a_name():
    source = src("""
        from collections import OrderedDict
        import torch
        from torch import nn

        model = nn.Sequential(OrderedDict(body=nn.Linear(4, 8), head=nn.Linear(8, 2)))
        # the head was meant to be trained too
        params = [p for n, p in model.named_parameters() if not n.startswith("head")]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    """)
    patch = patched("add_missing_params", source, {"missing": ["head.weight", "head.bias"]})
    assert changes(source, patch.source) == (
        ["opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)"],
        ["opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)"])
    assert patch.summary == ("optimizer params params -> model.parameters() (line 8), "
                             "adding head.weight, head.bias")
    opt = run(patch.source)["opt"]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 4 * 8 + 8 + 8 * 2 + 2


@pytest.mark.parametrize("arg", [
    "model.features.parameters()", "filter(lambda p: p.requires_grad, model.backbone.parameters())",
    "list(model[0].parameters()) + list(model[1].parameters())"])
def test_missing_params_takes_the_root_module(arg):
    source = f"optimizer = torch.optim.Adam({arg}, lr=1e-3)\n"
    expected = "optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)\n"
    assert patched("add_missing_params", source).source == expected


def test_missing_params_inside_an_nn_module_uses_self():
    source = src("""
        class Lit(pl.LightningModule):
            def configure_optimizers(self):
                return torch.optim.Adam(self.backbone.parameters(), lr=1e-3)
    """)
    assert changes(source, patched("add_missing_params", source).source)[1] == [
        "        return torch.optim.Adam(self.parameters(), lr=1e-3)"]


@pytest.mark.parametrize("source", [
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n",
    "opt = torch.optim.SGD([{'params': model.body.parameters()}, {'params': model.neck.parameters()}])\n",
    "opt = torch.optim.SGD(list(enc.parameters()) + list(dec.parameters()), lr=0.1)\n",
    "opt = torch.optim.SGD(params, lr=0.1)\n",
], ids=["already-all", "param-groups", "two-roots", "unknown-name"])
def test_missing_params_that_cannot_be_rewritten_give_none(source):
    assert patch_for("add_missing_params", source) is None


# --- constant initialisation --------------------------------------------------------------

def test_reinit_removes_the_constant_weights_and_keeps_zero_biases():
    source = src("""
        import torch.nn as nn

        def init_weights(m):
            if isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, 0.5)  # every unit the same!
                nn.init.zeros_(m.bias)

        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        model.apply(init_weights)
    """)
    patch = patched("reinit_layers", source)
    assert changes(source, patch.source) == (
        ["        nn.init.constant_(m.weight, 0.5)  # every unit the same!"], [])
    assert patch.summary == "remove nn.init.constant_(m.weight, 0.5) (line 5)"
    model = run(patch.source)["model"]
    assert model[0].weight.std() > 0 and not model[0].bias.any()


def test_reinit_removes_emptied_blocks_and_leaves_pass_in_an_emptied_function():
    source = src("""
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(3, 3)
                self.fc.weight.data.fill_(1.0)

        def reset(model):
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()  # start from zero

        def clear(model):
            for p in model.parameters():
                p.grad.zero_()
    """)
    patch = patched("reinit_layers", source)
    assert changes(source, patch.source) == (
        ["        self.fc.weight.data.fill_(1.0)", "    with torch.no_grad():",
         "        for p in model.parameters():", "            p.zero_()  # start from zero"],
        ["    pass"])
    namespace = run(patch.source)
    assert namespace["Net"]().fc.weight.std() > 0


def test_reinit_with_only_biases_and_gradients_gives_none():
    source = "nn.init.zeros_(layer.bias)\nfor p in model.parameters():\n    p.grad.zero_()\n"
    assert patch_for("reinit_layers", source) is None


# --- softmax before the loss --------------------------------------------------------------

CLASSIFIER = src("""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            return F.softmax(self.fc2(h), dim=1)  # probabilities


    criterion = nn.CrossEntropyLoss()
""")


def test_softmax_returned_by_forward_is_removed():
    patch = patched("loss_gets_logits", CLASSIFIER)
    assert changes(CLASSIFIER, patch.source)[1] == ["        return self.fc2(h)  # probabilities"]
    out = run(patch.source)["Net"]()(torch.randn(5, 4))
    assert not torch.allclose(out.sum(1), torch.ones(5))


@pytest.mark.parametrize("ret, logits", [
    ("logits.softmax(-1)", "logits"), ("torch.softmax(logits, dim=-1)", "logits"),
    ("self.softmax(logits)", "logits")])
def test_softmax_forms_in_forward(ret, logits):
    source = src(f"""
        import torch
        from torch import nn
        import torch.nn.functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.softmax = nn.Softmax(dim=-1)

            def forward(self, x):
                logits = self.fc(x)
                return {ret}

        loss = F.cross_entropy(Net()(x), y)
    """)
    assert changes(source, patched("loss_gets_logits", source).source) == (
        [f"        return {ret}"], [f"        return {logits}"])


def test_trailing_softmax_layer_of_a_sequential_is_removed():
    source = src("""
        import torch
        from torch import nn

        model = nn.Sequential(
            nn.Linear(4, 16),
            nn.ReLU(),
            nn.Linear(16, 3),  # logits
            nn.Softmax(dim=1),  # probabilities
        )
        small = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
        loss_fn = nn.CrossEntropyLoss()
    """)
    patch = patched("loss_gets_logits", source)
    assert changes(source, patch.source) == (
        ["    nn.Softmax(dim=1),  # probabilities",
         "small = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))"],
        ["small = nn.Sequential(nn.Linear(4, 3))"])
    namespace = run(patch.source)
    assert len(namespace["model"]) == 3 and len(namespace["small"]) == 1


@pytest.mark.parametrize("source", [
    CLASSIFIER.replace("nn.CrossEntropyLoss()", "nn.MSELoss()"),
    CLASSIFIER.replace("nn.CrossEntropyLoss()", "nn.CrossEntropyLoss()\nnll = F.nll_loss(out, y)"),
    CLASSIFIER.replace("F.softmax(", "F.log_softmax("),
], ids=["no-cross-entropy", "nll-loss", "log-softmax"])
def test_softmax_that_is_not_before_cross_entropy_gives_none(source):
    assert patch_for("loss_gets_logits", source) is None


# --- SGD to Adam --------------------------------------------------------------------------

def test_sgd_becomes_adam_with_its_default_lr():
    patch = patched("sgd_to_adam", TRAIN.replace("lr=3.0)", "lr=3.0, momentum=0.9, nesterov=True)"))
    assert changes(TRAIN, patch.source)[1] == [
        "opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # too high"]
    assert patch.summary == (
        "torch.optim.SGD -> torch.optim.Adam with lr=1e-3, without momentum, nesterov (line 6)")
    opt = run(patch.source)["opt"]
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3


def test_sgd_imported_by_name_gets_adam_imported_beside_it():
    source = "from torch.optim import SGD\n\nopt = SGD(net.parameters(), 0.1)\n"
    assert patched("sgd_to_adam", source).source == (
        "from torch.optim import SGD, Adam\n\nopt = Adam(net.parameters(), 1e-3)\n")


def test_sgd_multiline_call_loses_its_momentum_line_and_gains_an_lr():
    source = src("""
        optimizer = torch.optim.SGD(
            model.parameters(),
            momentum=0.9,  # heavy ball
            weight_decay=5e-4,
        )
    """)
    assert changes(source, patched("sgd_to_adam", source).source) == (
        ["optimizer = torch.optim.SGD(", "    model.parameters(),", "    momentum=0.9,  # heavy ball"],
        ["optimizer = torch.optim.Adam(", "    model.parameters(), lr=1e-3,"])


@pytest.mark.parametrize("source", [
    "opt = torch.optim.SGD(model.parameters(), 0.1, 0.9)\n", "opt = torch.optim.SGD(**kwargs)\n",
    "opt = torch.optim.Adam(model.parameters())\n"])
def test_sgd_that_cannot_be_rewritten_gives_none(source):
    assert patch_for("sgd_to_adam", source) is None


# --- eval mode for evaluation ---------------------------------------------------------------

EVALUATING = src("""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))


    def evaluate(model):
        with torch.no_grad():
            logits = model(x)  # validation pass
        return logits


    for epoch in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        first, second = evaluate(model), evaluate(model)
""")


def test_eval_mode_inside_the_no_grad_block_and_train_mode_after_it():
    patch = patched("eval_mode_for_evaluation", EVALUATING)
    assert changes(EVALUATING, patch.source) == ([], ["        model.eval()", "    model.train()"])
    assert ("    with torch.no_grad():\n        model.eval()\n        logits = model(x)  # validation pass\n"
            "    model.train()\n    return logits\n") in patch.source
    before = run(EVALUATING)
    assert not torch.equal(before["first"], before["second"])
    after = run(patch.source)
    assert torch.equal(after["first"], after["second"]) and after["model"].training


def test_eval_mode_when_train_is_called_already_adds_only_eval():
    source = EVALUATING.replace("    opt.zero_grad()", "    model.train()\n    opt.zero_grad()")
    patch = patched("eval_mode_for_evaluation", source)
    assert changes(source, patch.source) == ([], ["        model.eval()"])


@pytest.mark.parametrize("source", [
    EVALUATING.replace("logits = model(x)", "model.eval()\n        logits = model(x)"),
    "opt = torch.optim.SGD(model.parameters())\nwith torch.no_grad():\n    out = model(x)\n",
    EVALUATING.replace("torch.no_grad()", "torch.enable_grad()"),
], ids=["eval-present", "top-level-block", "no-no-grad"])
def test_eval_mode_not_needed_or_not_placeable_gives_none(source):
    assert patch_for("eval_mode_for_evaluation", source) is None


# --- the rest -------------------------------------------------------------------------------

@pytest.mark.parametrize("remedy, source", [
    ("warmup", TRAIN), ("no_such_remedy", TRAIN), ("lr_scale_x", TRAIN), ("lr_scale_0.1", "opt = SGD(\n")])
def test_warmup_unknown_remedies_and_broken_scripts_give_none(remedy, source):
    assert patch_for(remedy, source) is None


def test_positions_after_non_ascii_text_on_the_same_line():
    source = 'name = "Schätzer · η"; opt = torch.optim.SGD(model.parameters(), lr=3.0)\n'
    assert patched("lr_scale_0.1", source).source == source.replace("lr=3.0", "lr=0.3")


def test_diff_headers():
    patch = patched("lr_scale_0.1", TRAIN)
    diff = patch.diff(TRAIN, "scripts/train.py")
    assert diff.startswith("--- a/scripts/train.py\n+++ b/scripts/train.py\n@@ ")
    assert "-opt = torch.optim.SGD(model.parameters(), lr=3.0)  # too high\n" in diff
    assert "+opt = torch.optim.SGD(model.parameters(), lr=0.3)  # too high\n" in diff


@pytest.mark.skipif(shutil.which("patch") is None, reason="the patch program is not installed")
@pytest.mark.parametrize("remedy, source", [
    ("clip_grad_norm", TRAIN), ("loss_gets_logits", CLASSIFIER),
    ("reinit_layers", CLASSIFIER.replace("(16, 3)\n", "(16, 3)\n        self.fc1.weight.data.zero_()\n")),
    ("zero_grad_each_step", ACCUMULATING.rstrip("\n")),
], ids=["insert", "replace", "delete", "no-final-newline"])
def test_diff_applies_with_patch(tmp_path, remedy, source):
    patch = patched(remedy, source)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text(source, newline="")
    (tmp_path / "fix.diff").write_text(patch.diff(source, "scripts/train.py"), newline="")
    subprocess.run(["patch", "-p1", "-i", "fix.diff"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "scripts" / "train.py").read_bytes().decode() == patch.source
