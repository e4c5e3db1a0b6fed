"""Bug: the training set was sorted by label (to count the classes) and the DataLoader was built
with shuffle=False, so every epoch the MLP sees all the 0s, then all the 1s, ... and ends each
epoch having forgotten all but the last digits. Expect unshuffled_data (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from _common import digits

EXPECT = "unshuffled_data"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    order = torch.argsort(ytr)
    xtr, ytr = xtr[order], ytr[order]
    print("samples per class:", torch.bincount(ytr).tolist())
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=False)
    val = DataLoader(TensorDataset(xva, yva), batch_size=128)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        total, correct = 0.0, 0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                total += nn.functional.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch} val_loss {total / len(yva):.3f} val_acc {correct / len(yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()
