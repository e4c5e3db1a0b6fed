"""Clean: makemore-style character bigram model (an nn.Embedding(V, V) table of next-character
logits) on generated sentences, Adam at lr=0.1, a validation pass after each epoch."""
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

EXPECT = None

SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child", "her sister"]
VERBS = ["sees", "likes", "chases", "finds", "eats", "hears", "wants"]
OBJECTS = ["the ball", "a fish", "the red car", "some bread", "the moon", "a small tree", "his hat"]
ENDS = [".", " today.", " again.", " in the park.", " at night."]


def make_text(n_sentences, g):
    def pick(words):
        return words[torch.randint(len(words), (1,), generator=g).item()]
    return " ".join(f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}{pick(ENDS)}"
                    for _ in range(n_sentences))


class Bigram(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.logits = nn.Embedding(vocab, vocab)

    def forward(self, idx):
        return self.logits(idx)


def main(watch=None):
    torch.manual_seed(0)
    text = make_text(1200, torch.Generator().manual_seed(1))
    chars = sorted(set(text))
    V = len(chars)
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text])
    xs, ys = data[:-1], data[1:]
    n = int(0.9 * len(xs))
    train = DataLoader(TensorDataset(xs[:n], ys[:n]), batch_size=256, shuffle=True)
    val = DataLoader(TensorDataset(xs[n:], ys[n:]), batch_size=1024)
    model = Bigram(V)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    monitor = watch(model, opt) if watch else None
    for epoch in range(4):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(F.cross_entropy(model(x), y, reduction="sum").item()
                           for x, y in val) / len(val.dataset)
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f}")
    return monitor


if __name__ == "__main__":
    main()
