"""Bug: the training labels were shuffled (misaligned with the images) but the validation labels
are right. Expect label_noise (validation at chance while training batches get fitted)."""
import torch
from torch import nn
from _common import digits, evaluate, loaders

EXPECT = "label_noise"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    ytr = ytr[torch.randperm(len(ytr))]
    train, val = loaders(xtr, ytr, xva, yva, batch=32)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(25):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        evaluate(model, val)
    return monitor


if __name__ == "__main__":
    main()
