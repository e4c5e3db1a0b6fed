"""Bug: a nanoGPT-style get_batch helper samples its own random window positions, and the
training code calls it twice, once for the inputs and once on data[1:] for the targets, believing
that shifts the same windows by one: each target row comes from another random place in the text,
so the one-layer transformer can only learn the character frequencies and its loss stays at the
unigram entropy. Expect label_noise (root cause)."""
import torch
from torch import nn
from torch.nn import functional as F

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


def get_batch(data, batch_size, block_size):
    ix = torch.randint(len(data) - block_size, (batch_size,))
    return torch.stack([data[i:i + block_size] for i in ix])


class TinyTransformer(nn.Module):
    def __init__(self, vocab, block_size, d=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block_size, d)
        self.block = nn.TransformerEncoderLayer(d, nhead=4, dim_feedforward=4 * d, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block_size))

    def forward(self, idx):
        T = idx.size(1)
        h = self.tok(idx) + self.pos(torch.arange(T))
        h = self.block(h, src_mask=self.mask[:T, :T], is_causal=True)
        return self.head(self.ln(h))


def main(watch=None):
    torch.manual_seed(0)
    text = make_text(1200, torch.Generator().manual_seed(1))
    chars = sorted(set(text))
    V = len(chars)
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text])
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    B, T = 32, 32
    model = TinyTransformer(V, T)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for step in range(40):
            x = get_batch(train_data, B, T)
            y = get_batch(train_data[1:], B, T)
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            losses = []
            for _ in range(5):
                x = get_batch(val_data, B, T)
                y = get_batch(val_data[1:], B, T)
                losses.append(F.cross_entropy(model(x).view(-1, V), y.view(-1)).item())
        print(f"epoch {epoch} train_loss {loss.item():.3f} val_loss {sum(losses) / len(losses):.3f}")
    return monitor


if __name__ == "__main__":
    main()
