"""Bug: a custom Dataset shuffles its rows once through an index list but looks up the features
through the list and the label directly, so each tumour's features come with another tumour's
diagnosis. The short run cannot memorise the pairs: the MLP stays at the majority rate on
correctly labelled validation data. Expect label_noise (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from _common import breast_cancer

EXPECT = "label_noise"


class TumourDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
        self.ids = torch.randperm(len(x)).tolist()   # mix benign and malignant rows once

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.x[self.ids[i]], self.y[i]


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = breast_cancer()
    train = DataLoader(TumourDataset(xtr, ytr), batch_size=16, shuffle=True)
    model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(6):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva).squeeze(1)
            val_loss = loss_fn(logits, yva).item()
        val_acc = ((logits > 0).float() == yva).float().mean().item()
        print(f"epoch {epoch} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()
