"""Keras 3 on the torch backend: TrainmedicCallback names planted bugs, stays silent on a clean
run, leaves the numbers unchanged, stops on request, follows gradient accumulation and says
what it cannot measure."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"           # read once, when keras is first imported
keras = pytest.importorskip("keras")
if keras.config.backend() != "torch":
    pytest.skip("keras was imported on another backend", allow_module_level=True)

from trainmedic.integrations.keras import TrainmedicCallback  # noqa: E402

# keras's own numpy conversions, under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = ((d.data - d.data.mean(0)) / (d.data.std(0) + 1e-6)).astype("float32")
    return x[:1400], d.target[:1400], x[1400:], d.target[1400:]


def _mlp(output=None, dropout=0.1):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                             keras.layers.Dropout(dropout), keras.layers.Dense(10, activation=output, name="out")],
                            name="digits")


class HeadOnly(keras.Model):
    """A custom train_step that hands the optimizer the head's weights only (the body gets
    gradients that nothing applies); ``softmax``: probabilities out of call()."""

    def __init__(self, head_only=False, softmax=False):
        super().__init__()
        self.head_only, self.softmax = head_only, softmax
        self.body = keras.layers.Dense(64, activation="relu", name="body")
        self.head = keras.layers.Dense(10, name="head")

    def call(self, x):
        out = self.head(self.body(x))
        return keras.ops.softmax(out) if self.softmax else out

    def train_step(self, data):
        if not self.head_only:
            return super().train_step(data)
        x, y = data
        y_pred = self(x, training=True)
        self.zero_grad()
        self.compute_loss(x=x, y=y, y_pred=y_pred).backward()
        weights = self.head.trainable_weights
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in weights], weights)
        return self.compute_metrics(x, y, y_pred)


def _fit(digits, model, callback=None, optimizer=None, loss=None, epochs=3, **fit_kw):
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    xtr, ytr, xva, yva = digits
    fit_kw.setdefault("callbacks", [callback] if callback else [])
    return model.fit(xtr, ytr, validation_data=(xva, yva), epochs=epochs, batch_size=64, verbose=0, **fit_kw)


def _callback(tmp_path, **kw):
    return TrainmedicCallback(every=5, run_dir=str(tmp_path / "run"), on_finding=lambda f: None, **kw)


def _loud(report):
    return [f.id for f in report.findings if f.severity.value in ("warning", "error")]


def _ticks(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_clean_run_is_silent_and_reads_keras(digits, tmp_path):
    cb = _callback(tmp_path)
    model = _mlp()
    history = _fit(digits, model, cb).history
    rep = cb.report
    assert _loud(rep) == [] and rep.run["disabled"] == {}
    assert rep.run["steps"] == int(model.optimizer.iterations) == 66 and rep.run["status"] == "completed"
    assert rep.run["optimizers"] == ["SGD"]
    assert [e["val_loss"] for e in rep.run["epochs"]] == pytest.approx(history["val_loss"])
    assert [e["val_acc"] for e in rep.run["epochs"]] == pytest.approx(history["val_accuracy"])
    last = _ticks(tmp_path)[-1]
    assert set(last["layers"]) == {"hidden", "out"} and last["lr"] == pytest.approx(0.05)
    assert last["activations"]["hidden/relu0"]["output"] is False      # a hidden layer's ReLU
    assert "apply" not in vars(model.optimizer)                        # the wrapper is gone
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.parametrize("bug, expected", [
    ("lr", "learning_rate_too_high"),
    ("missing", "params_not_in_optimizer"),
    ("softmax", "loss_input_mismatch"),            # softmax layer, from_logits=True: seen statically
    ("softmax-in-call", "loss_input_mismatch"),    # softmax inside call(): seen in F.cross_entropy
    ("one-hot", "loss_input_mismatch"),            # CategoricalCrossentropy calls no torch loss
    ("logits", "loss_input_mismatch"),             # no activation, from_logits=False
])
def test_planted_bugs_are_named(digits, tmp_path, bug, expected):
    cb = _callback(tmp_path)
    if bug == "lr":
        _fit(digits, _mlp(), cb, optimizer=keras.optimizers.SGD(5.0, momentum=0.9))
    elif bug == "missing":
        keras.utils.set_random_seed(0)
        _fit(digits, HeadOnly(head_only=True), cb)
    elif bug == "softmax":
        _fit(digits, _mlp("softmax"), cb)
    elif bug == "softmax-in-call":
        keras.utils.set_random_seed(0)
        _fit(digits, HeadOnly(softmax=True), cb)
    elif bug == "one-hot":
        xtr, ytr, xva, yva = digits
        _fit((xtr, np.eye(10)[ytr], xva, np.eye(10)[yva]), _mlp("softmax"), cb,
             loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    else:
        _fit(digits, _mlp(), cb, loss="sparse_categorical_crossentropy")
    found = {f.id: f for f in cb.report.findings}
    assert expected in found, sorted(found)
    if bug == "missing":
        assert found[expected].evidence["parameters"] == ["body.kernel", "body.bias"]


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal", "pretrained"])
def test_a_layer_frozen_at_its_random_draw_is_named_and_a_pretrained_one_is_not(digits, tmp_path, init):
    """trainable=False on a Dense layer still at its initializer's draw (Keras's own, not
    torch's defaults): frozen_random_layers; the same layer trained first, then frozen: silent."""
    keras.utils.set_random_seed(0)
    body = keras.layers.Dense(64, activation="relu", name="body",
                              kernel_initializer="glorot_uniform" if init == "pretrained" else init)
    model = keras.Sequential([keras.Input((64,)), body, keras.layers.Dense(10, name="head")])
    if init == "pretrained":
        _fit(digits, model, epochs=2)
    body.trainable = False
    cb = _callback(tmp_path)
    _fit(digits, model, cb, epochs=1)
    found = {f.id: f for f in cb.report.findings}
    if init == "pretrained":
        assert "frozen_random_layers" not in found, sorted(found)
    else:
        assert found["frozen_random_layers"].evidence["layers"] == ["body"], sorted(found)
        assert "trainable=False" in found["frozen_random_layers"].message


def test_callback_leaves_the_numbers_unchanged(digits, tmp_path):
    runs = []
    for cb in (None, TrainmedicCallback(every=1, run_dir=str(tmp_path / "run"), on_finding=lambda f: None)):
        model = _mlp(dropout=0.3)
        history = _fit(digits, model, cb).history
        runs.append((history, model.get_weights(), float(torch.rand(())), np.random.rand()))
    (plain, plain_weights, *plain_rng), (watched, watched_weights, *watched_rng) = runs
    assert plain == watched and plain_rng == watched_rng
    assert all(np.array_equal(a, b) for a, b in zip(plain_weights, watched_weights))


def test_gradients_and_learning_rate_are_those_of_each_step(digits, tmp_path):
    """Each tick's gradient norm is the one Keras's optimizer applied, its lr the schedule's
    value at that step."""
    class Probe(keras.callbacks.Callback):
        norms = []

        def on_train_batch_end(self, batch, logs=None):          # .grad holds the step's gradients
            kernel, bias = self.model.get_layer("hidden").trainable_weights
            self.norms.append(float(torch.cat([kernel.value.grad.flatten(), bias.value.grad]).norm()))
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.9)
    cb = TrainmedicCallback(every=1, run_dir=str(tmp_path / "run"), on_finding=lambda f: None)
    _fit(digits, _mlp(), callback=None, optimizer=keras.optimizers.SGD(schedule), epochs=1,
         callbacks=[cb, Probe()], steps_per_epoch=6)
    ticks = _ticks(tmp_path)
    assert [t["layers"]["hidden"]["grad"] for t in ticks] == pytest.approx(Probe.norms, rel=1e-5)
    assert [t["lr"] for t in ticks] == pytest.approx([0.05 * 0.9 ** i for i in range(6)], rel=1e-6)


def test_gradient_accumulation_counts_updates(digits, tmp_path):
    cb = _callback(tmp_path)
    model = _mlp()
    _fit(digits, model, cb, optimizer=keras.optimizers.Adam(1e-3, gradient_accumulation_steps=4))
    assert cb.report.run["steps"] == int(model.optimizer.iterations) == 66 // 4
    assert _loud(cb.report) == []                       # not params_not_updating on micro-batches


def test_stop_on_error_stops_early(digits, tmp_path):
    cb = _callback(tmp_path, stop_on="error")
    model = _mlp()
    _fit(digits, model, cb, optimizer=keras.optimizers.SGD(5.0, momentum=0.9), epochs=5)
    assert int(model.optimizer.iterations) < 5 * 22 and cb.report.at_least("error")
    with pytest.raises(ValueError, match="stop_on"):
        TrainmedicCallback(stop_on="fatal")


def test_a_fit_that_raised_is_closed_by_the_next(digits, tmp_path):
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 6:
                raise ValueError("boom")
    cb = _callback(tmp_path)
    model = _mlp()
    with pytest.raises(ValueError, match="boom"):
        _fit(digits, model, cb, callbacks=[cb, Boom()])
    crashed = cb.monitor
    assert crashed is not None and crashed.step == 7
    model.fit(*digits[:2], epochs=1, batch_size=64, verbose=0, callbacks=[cb])
    assert crashed.output.status == "crashed" and crashed.report_path is not None
    assert cb.report.run["steps"] == 22 and "apply" not in vars(model.optimizer)


def test_what_cannot_be_measured_is_said(digits, tmp_path):
    """Under a LossScaleOptimizer the loss and gradients are scaled: the steps are not
    measured, the validation epochs still are."""
    cb = _callback(tmp_path)
    history = _fit(digits, _mlp(), cb,
                   optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05)))
    rep = cb.report
    assert [f.id for f in rep.findings] == ["monitoring_limited"] and rep.run["steps"] == 0
    assert [e["val_loss"] for e in rep.run["epochs"]] == pytest.approx(history.history["val_loss"])


def test_another_backend_or_no_keras_is_a_clear_error(monkeypatch):
    code = ("import os, sys, trainmedic.integrations; print('keras' in sys.modules)\n"
            "os.environ['KERAS_BACKEND'] = 'jax'\n"
            "try:\n"
            "    import trainmedic.integrations.keras as k; k.TrainmedicCallback()\n"
            "except (ImportError, RuntimeError) as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    lazy, error = out.stdout.splitlines()[:2]
    assert lazy == "False" and "KERAS_BACKEND=torch" in error
    monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=torch"):
        TrainmedicCallback()
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.delitem(sys.modules, "trainmedic.integrations.keras")
    with pytest.raises(ImportError, match=r"pip install 'trainmedic\[keras\]'"):
        import trainmedic.integrations.keras  # noqa: F401
