"""Hugging Face Transformers: TrainmedicCallback on a tiny BERT built from a config (nothing is
downloaded) names planted bugs, stays silent on a clean run, leaves the numbers unchanged and
stops on request."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import (BertConfig, BertForSequenceClassification, PretrainedConfig,  # noqa: E402
                          PreTrainedModel, Trainer, TrainingArguments)
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from trainmedic.integrations.huggingface import TrainmedicCallback  # noqa: E402


def _data(n, seed):
    """Sequences of 12 tokens; the label says whether the first token is below 50."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (n, 12), generator=g)
    return [{"input_ids": i, "attention_mask": torch.ones(12, dtype=torch.long), "labels": int(i[0] < 50)}
            for i in ids]


TRAIN, VAL = _data(512, 0), _data(128, 1)


def _bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64))


class TinyConfig(PretrainedConfig):
    model_type = "trainmedic-tiny"


class Tiny(PreTrainedModel):
    """Mean of token embeddings and an MLP. ``softmax``: probabilities into cross_entropy;
    ``own_loss``: a hand-written loss that the monitor does not see."""
    config_class = TinyConfig

    def __init__(self, config, softmax=False, own_loss=False):
        super().__init__(config)
        self.softmax, self.own_loss = softmax, own_loss
        self.emb = nn.Embedding(100, 16)
        self.head = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.emb(input_ids).mean(1))
        if self.softmax:
            logits = logits.softmax(-1)
        if labels is None:
            loss = None
        elif self.own_loss:
            loss = -logits.log_softmax(-1).gather(1, labels[:, None]).mean()
        else:
            loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _tiny(**kw):
    torch.manual_seed(0)
    return Tiny(TinyConfig(), **kw)


def _metrics(pred):
    acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    return {"accuracy": acc, "error": 1 - acc}


def _train(tmp_path, model, callback=None, lr=1e-3, epochs=3, optimizer=None):
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, seed=0,
                             num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=lr,
                             eval_strategy="epoch", save_strategy="no", logging_strategy="no",
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=TRAIN, eval_dataset=VAL, compute_metrics=_metrics,
                      callbacks=[callback] if callback else [], optimizers=(optimizer, None))
    trainer.train()
    return trainer


def _callback(tmp_path, **kw):
    return TrainmedicCallback(every=5, run_dir=str(tmp_path / "run"), on_finding=lambda f: None, **kw)


def test_clean_run_is_silent_and_counts_training_evaluations(tmp_path):
    cb = _callback(tmp_path)
    trainer = _train(tmp_path, _bert(), cb)
    trainer.evaluate()                                     # after train(): not an epoch of the run
    rep = cb.report
    assert [f.id for f in rep.findings if f.severity.value in ("warning", "error")] == []
    assert rep.run["disabled"] == {}
    assert rep.run["steps"] == trainer.state.global_step and rep.run["status"] == "completed"
    evals = [h for h in trainer.state.log_history if "eval_loss" in h][:3]
    assert [e["val_loss"] for e in rep.run["epochs"]] == pytest.approx([h["eval_loss"] for h in evals], rel=1e-5)
    assert rep.run["epochs"][-1]["val_error"] == pytest.approx(evals[-1]["eval_error"])
    assert (tmp_path / "run" / "report.json").is_file()


@pytest.mark.parametrize("bug, expected", [
    ("lr", {"learning_rate_too_high", "loss_diverging", "nonfinite_loss"}),
    ("missing", {"params_not_in_optimizer"}),
    ("softmax", {"loss_input_mismatch"}),
])
def test_planted_bugs_are_named(tmp_path, bug, expected):
    cb = _callback(tmp_path)
    if bug == "lr":
        _train(tmp_path, _bert(), cb, lr=5.0)
    elif bug == "missing":                                 # only the classifier head is optimised
        model = _bert()
        _train(tmp_path, model, cb, optimizer=torch.optim.AdamW(model.classifier.parameters(), lr=1e-3))
    else:
        _train(tmp_path, _tiny(softmax=True), cb)
    found = {f.id for f in cb.report.findings}
    assert found & expected, found


def test_callback_leaves_the_numbers_unchanged(tmp_path):
    runs = []
    for cb in (None, _callback(tmp_path)):
        model = _bert()
        trainer = _train(tmp_path, model, cb)
        runs.append((model.state_dict(), [h.get("eval_loss") for h in trainer.state.log_history]))
    (plain, plain_evals), (watched, watched_evals) = runs
    assert plain_evals == watched_evals
    assert all(torch.equal(plain[k], watched[k]) for k in plain)


def test_stop_on_error_stops_early(tmp_path):
    cb = _callback(tmp_path, stop_on="error")
    trainer = _train(tmp_path, _bert(), cb, lr=5.0)
    assert trainer.state.global_step < 3 * 32 and cb.report.at_least("error")


def test_evaluation_with_a_hand_written_loss_comes_from_the_metrics(tmp_path):
    cb = _callback(tmp_path)
    trainer = _train(tmp_path, _tiny(own_loss=True), cb)
    last = [h for h in trainer.state.log_history if "eval_loss" in h][-1]
    epoch = cb.report.run["epochs"][-1]
    assert len(cb.report.run["epochs"]) == 3
    assert epoch["val_loss"] == pytest.approx(last["eval_loss"]) and epoch["val_acc"] == last["eval_accuracy"]
    assert "val_runtime" not in epoch


class Audio(PreTrainedModel):
    """A classifier of 64-sample waveforms, called as the Trainer calls every model:
    ``model(input_values=..., labels=...)``."""
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.head = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
        self.post_init()

    def forward(self, input_values, labels=None):
        logits = self.head(input_values)
        return SequenceClassifierOutput(loss=None if labels is None else F.cross_entropy(logits, labels),
                                        logits=logits)


@pytest.mark.parametrize("scale", [1.0, 3e4])
def test_keyword_inputs_reach_the_data_checks(tmp_path, scale):
    """Waveforms left at int16 scale (x3e4) are named input_not_normalized from the first
    batch, which reaches the model as a keyword argument only; standardised ones are not."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    data = [{"input_values": v * scale, "labels": int(v[:8].sum() > 0)} for v in x]
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, seed=0,
                             num_train_epochs=1, per_device_train_batch_size=16, learning_rate=1e-3,
                             save_strategy="no", logging_strategy="no", disable_tqdm=True)
    cb = _callback(tmp_path)
    Trainer(model=Audio(TinyConfig()), args=args, train_dataset=data, callbacks=[cb]).train()
    checks = {c["name"]: c["status"] for c in cb.report.run["first_batch_checks"]}
    assert checks["nonfinite_input"] == "passed", checks
    found = {f.id for f in cb.report.findings}
    assert ("input_not_normalized" in found) == (scale > 1), found


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "trainmedic.integrations.huggingface")
    with pytest.raises(ImportError, match=r"pip install 'trainmedic\[transformers\]'"):
        import trainmedic.integrations.huggingface  # noqa: F401
