"""Bug: the training images are standardised (pixel/16, then mean/std) in the training-data code,
but the validation images go into the CNN as raw 0..16 pixel values, so validation inputs are on
a different scale from everything the network saw. Expect preprocessing_mismatch (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from _common import SmallCNN, digits

EXPECT = "preprocessing_mismatch"


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(scale=False)        # raw pixels 0..16
    mean, std = (xtr / 16).mean(), (xtr / 16).std()
    xtr = (xtr / 16 - mean) / std
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(xva, yva), batch_size=200)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    for epoch in range(4):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch} val_loss {loss_sum / len(yva):.3f} val_acc {correct / len(yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()
