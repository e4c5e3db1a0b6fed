"""Bug: the breast-cancer features are standardised with a StandardScaler fitted on the training
split, but the validation split is passed to the model unscaled (areas in the hundreds or
thousands), so validation predictions are garbage. Expect preprocessing_mismatch (root cause)."""
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "preprocessing_mismatch"


def main(watch=None):
    torch.manual_seed(0)
    data = load_breast_cancer()
    x_train, x_val, y_train, y_val = train_test_split(data.data, data.target, test_size=0.25,
                                                      random_state=0)
    scaler = StandardScaler()
    x_train = scaler.fit_transform(x_train)
    xtr = torch.tensor(x_train, dtype=torch.float32)
    ytr = torch.tensor(y_train, dtype=torch.float32)
    xva = torch.tensor(x_val, dtype=torch.float32)
    yva = torch.tensor(y_val, dtype=torch.float32)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(10):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = criterion(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva).squeeze(1)
            val_loss = criterion(logits, yva).item()
            val_acc = ((logits > 0).float() == yva).float().mean().item()
        if epoch % 2 == 1:
            print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f} val_acc {val_acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()
