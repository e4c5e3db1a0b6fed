"""Bug: the LSTM reads each digit image as 8 rows of 8 pixels, fed as (batch, rows, pixels), but it
was built without batch_first=True, so it runs over the batch as if it were time: the output
kept for sample i (out[:, -1]) has seen row 8 of samples 0..i and nothing else of its own image.
Expect batch_mixing (root cause)."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "batch_mixing"


class RowLSTM(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.lstm = nn.LSTM(input_size=8, hidden_size=hidden)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        x = x.view(x.size(0), 8, 8)          # (batch, rows, pixels)
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])           # last row


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = RowLSTM()
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
        n, correct, total = 0, 0, 0.0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                total += nn.functional.cross_entropy(out, y).item() * len(y)
                correct += (out.argmax(1) == y).sum().item()
                n += len(y)
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {total / n:.3f} val_acc {correct / n:.3f}")
    return monitor


if __name__ == "__main__":
    main()
