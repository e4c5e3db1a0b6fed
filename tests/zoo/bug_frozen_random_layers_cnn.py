"""Bug: the torchvision fine-tuning recipe (freeze every parameter, replace the last layer, give
the optimizer only the new layer) applied to a CNN that was never pretrained: the convolutions
and the first fully-connected layer stay random and only the final linear layer learns.
Expect frozen_random_layers (root cause)."""
import torch
from torch import nn
from _common import SmallCNN, digits, loaders

EXPECT = "frozen_random_layers"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    for param in model.parameters():
        param.requires_grad = False
    model.classifier[-1] = nn.Linear(64, 10)        # new head for our 10 classes
    opt = torch.optim.SGD(model.classifier[-1].parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(4):
        model.train()
        running = 0.0
        for i, (x, y) in enumerate(train):
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
            running += loss.item()
        model.eval()
        correct, total = 0, 0.0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                total += criterion(out, y).item() * len(y)
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch} train_loss {running / (i + 1):.3f} val_loss {total / len(val.dataset):.3f} "
              f"val_acc {correct / len(val.dataset):.3f}")
    return monitor


if __name__ == "__main__":
    main()
