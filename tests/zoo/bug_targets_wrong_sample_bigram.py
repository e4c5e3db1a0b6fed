"""Bug: the bigram language model's Dataset cuts the text into windows of T characters, but the
target window is indexed with the window number instead of its start position
(data[i + 1:i + 1 + T] instead of data[start + 1:start + 1 + T]): targets come from another part
of the text, so the nn.Embedding(V, V) logits table can only learn the character frequencies and
the loss stays at the unigram entropy. Expect label_noise (root cause)."""
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

EXPECT = "label_noise"

SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the old man", "a child", "her sister"]
VERBS = ["sees", "likes", "chases", "finds", "eats", "hears", "wants"]
OBJECTS = ["the ball", "a fish", "the red car", "some bread", "the moon", "a small tree", "his hat"]
ENDS = [".", " today.", " again.", " in the park.", " at night."]


def make_text(n_sentences, g):
    def pick(words):
        return words[torch.randint(len(words), (1,), generator=g).item()]
    return " ".join(f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}{pick(ENDS)}"
                    for _ in range(n_sentences))


class Chunks(Dataset):
    """Consecutive windows of T characters; the target is the window shifted by one."""

    def __init__(self, data, T):
        self.data, self.T = data, T

    def __len__(self):
        return (len(self.data) - 1) // self.T

    def __getitem__(self, i):
        start = i * self.T
        return self.data[start:start + self.T], self.data[i + 1:i + 1 + self.T]


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
    n = int(0.9 * len(data))
    train = DataLoader(Chunks(data[:n], 16), batch_size=32, shuffle=True)
    val = DataLoader(Chunks(data[n:], 16), batch_size=256)
    model = Bigram(V)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    monitor = watch(model, opt) if watch else None
    for epoch in range(4):
        model.train()
        for x, y in train:
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_loss = sum(F.cross_entropy(model(x).view(-1, V), y.view(-1)).item()
                           for x, y in val) / len(val)
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {val_loss:.3f}")
    return monitor


if __name__ == "__main__":
    main()
