"""`trainmedic run` on scripts that train with Lightning, the Hugging Face Trainer or Keras and
no trainmedic callback: a clean script stays silent and the three planted bugs (learning rate
too high, parameters the optimizer never updates, softmax before the cross-entropy) are named.
Lightning and Hugging Face use torch optimizers, which the runner's discovery watches; Keras
gets its callback attached by the runner."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

COMMON = '''
import sys
import torch
from torch import nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

BUG = sys.argv[1]
d = load_digits()
x = torch.tensor(d.data, dtype=torch.float32)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
y = torch.tensor(d.target)
torch.manual_seed(0)
'''

LIGHTNING = COMMON + '''
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.extra = nn.Linear(64, 10)

    def forward(self, x):
        out = self.net(x) + self.extra(x)
        return out.softmax(-1) if BUG == "softmax" else out

    def training_step(self, batch, _i):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, _i):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        params = self.net.parameters() if BUG == "missing" else self.parameters()
        return torch.optim.SGD(params, lr=5.0 if BUG == "lr" else 0.05, momentum=0.9)


trainer = pl.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)
trainer.fit(Net(), DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True),
            DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=128))
'''

HUGGINGFACE = COMMON + '''
import os
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
from transformers.modeling_outputs import SequenceClassifierOutput


class Config(PretrainedConfig):
    model_type = "trainmedic-digits"


class Net(PreTrainedModel):
    config_class = Config

    def __init__(self, config):
        super().__init__(config)
        self.body = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)
        self.post_init()

    def forward(self, pixels, labels=None):
        logits = self.head(self.body(pixels))
        if BUG == "softmax":
            logits = logits.softmax(-1)
        return SequenceClassifierOutput(loss=F.cross_entropy(logits, labels), logits=logits)


rows = lambda a, b: [{"pixels": x[i], "labels": int(y[i])} for i in range(a, b)]
model = Net(Config())
optimizer = torch.optim.AdamW(model.head.parameters() if BUG == "missing" else model.parameters(),
                              lr=5.0 if BUG == "lr" else 1e-3)
args = TrainingArguments(output_dir=sys.argv[2], report_to=[], use_cpu=True, seed=0, num_train_epochs=3,
                         per_device_train_batch_size=32, eval_strategy="epoch", save_strategy="no",
                         logging_strategy="no", disable_tqdm=True)
Trainer(model=model, args=args, train_dataset=rows(0, 1400), eval_dataset=rows(1400, 1797),
        optimizers=(optimizer, None)).train()
'''

KERAS = COMMON + '''
import os
os.environ["KERAS_BACKEND"] = "torch"
import keras

keras.utils.set_random_seed(0)


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.body = keras.layers.Dense(64, activation="relu")
        self.head = keras.layers.Dense(10, activation="softmax" if BUG == "softmax" else None)

    def call(self, inputs):
        return self.head(self.body(inputs))

    def train_step(self, data):
        if BUG != "missing":
            return super().train_step(data)
        inputs, target = data                 # a hand-written step that applies the head only
        pred = self(inputs, training=True)
        self.zero_grad()
        self.compute_loss(x=inputs, y=target, y_pred=pred).backward()
        weights = self.head.trainable_weights
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in weights], weights)
        return self.compute_metrics(inputs, target, pred)


model = Net()
model.compile(optimizer=keras.optimizers.SGD(5.0 if BUG == "lr" else 0.05, momentum=0.9),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x[:1400].numpy(), y[:1400].numpy(), validation_data=(x[1400:].numpy(), y[1400:].numpy()),
          epochs=4, batch_size=64, verbose=0)
'''

SCRIPTS = {"lightning": ("lightning.pytorch", LIGHTNING), "huggingface": ("transformers", HUGGINGFACE),
           "keras": ("keras", KERAS)}
EXPECTED = {"none": set(), "lr": {"learning_rate_too_high"}, "missing": {"params_not_in_optimizer"},
            "softmax": {"loss_input_mismatch"}}


@pytest.mark.parametrize("bug", sorted(EXPECTED))
@pytest.mark.parametrize("framework", sorted(SCRIPTS))
def test_run_names_planted_bugs_and_stays_silent_on_a_clean_script(tmp_path, framework, bug):
    module, source = SCRIPTS[framework]
    if importlib.util.find_spec(module.split(".")[0]) is None:     # not imported here: the
        pytest.skip(f"{module} is not installed")                  # script runs in its own process
    script = tmp_path / f"train_{framework}.py"
    script.write_text(source)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, "-m", "trainmedic.cli", "run", "--no-live", "--run-dir",
                           str(tmp_path / "run"), str(script), bug, str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    loud = {f["id"] for f in report["findings"] if f["severity"] in ("warning", "error")}
    assert report["run"]["steps"] > 40
    if not EXPECTED[bug]:
        assert loud == set(), loud
    else:
        roots = {f["id"] for f in report["findings"] if f.get("caused_by") is None and f["severity"] == "error"}
        assert EXPECTED[bug] <= roots, (loud, roots)
