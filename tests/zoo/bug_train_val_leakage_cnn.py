"""Bug: the validation loader is built from the last 150 rows of the training tensors instead
of the held-out images, so every validation image was trained on and the validation accuracy
reports memorisation (about 1.0) instead of how the CNN does on new digits.
Expect train_val_leakage (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from _common import digits

EXPECT = "train_val_leakage"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xtest, ytest = digits()
    xtr, ytr = xtr[:300], ytr[:300]          # small labelled budget
    xva, yva = xtr[-150:], ytr[-150:]
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=20, shuffle=True)
    val = DataLoader(TensorDataset(xva, yva), batch_size=150)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(8):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                val_loss = nn.functional.cross_entropy(out, y).item()
                val_acc = (out.argmax(1) == y).float().mean().item()
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()
