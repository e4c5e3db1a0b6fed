"""Bug: images and labels were split with two separate train_test_split calls with different
random_state values, so every label belongs to a different image than the one it is paired
with. In this short run the MLP cannot memorise the pairs, and training and validation stay at
chance. Expect label_noise (root cause)."""
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "label_noise"


def main(watch=None):
    torch.manual_seed(0)
    digits = load_digits()
    X = digits.data / 16.0
    x_train, x_val = train_test_split(X, test_size=0.2, random_state=0)
    y_train, y_val = train_test_split(digits.target, test_size=0.2, random_state=42)
    xtr = torch.tensor(x_train, dtype=torch.float32)
    xva = torch.tensor(x_val, dtype=torch.float32)
    ytr, yva = torch.tensor(y_train), torch.tensor(y_val)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    val = DataLoader(TensorDataset(xva, yva), batch_size=360)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(6):
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
