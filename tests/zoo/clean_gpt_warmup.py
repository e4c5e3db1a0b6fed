"""Clean: tiny nanoGPT-style decoder on a generated word sequence; AdamW with decay on matrices
only, linear warmup then cosine decay per step, grad clipping, ignore_index=-1 padded targets."""
import math

import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "log", "a", "big", "red"]


def make_text(n_sentences, g):
    """A tiny grammar: DET [ADJ] NOUN VERB on DET NOUN ."""
    out = []
    for _ in range(n_sentences):
        det = ["the", "a"]
        s = [det[torch.randint(2, (1,), generator=g).item()]]
        if torch.rand(1, generator=g).item() < 0.5:
            s.append(["big", "red"][torch.randint(2, (1,), generator=g).item()])
        s.append(["cat", "dog"][torch.randint(2, (1,), generator=g).item()])
        s.append(["sat", "ran"][torch.randint(2, (1,), generator=g).item()])
        s += ["on", det[torch.randint(2, (1,), generator=g).item()]]
        s.append(["mat", "log"][torch.randint(2, (1,), generator=g).item()])
        out.append(" ".join(s) + ".")
    return " ".join(out)


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab, block=32, d=64, layers=2, heads=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    text = make_text(600, g)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text])
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    block, batch = 32, 16

    def get_batch(src):
        ix = torch.randint(len(src) - block - 1, (batch,), generator=g)
        x = torch.stack([src[i:i + block] for i in ix])
        y = torch.stack([src[i + 1:i + block + 1] for i in ix])
        # pad: some rows are shorter sequences; their tail targets are ignored
        lengths = torch.randint(block // 2, block + 1, (batch,), generator=g)
        y[torch.arange(block)[None, :] >= lengths[:, None]] = -1
        return x, y

    model = GPT(len(chars), block=block)
    decay = [p for n_, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    steps, warmup = 200, 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    monitor = watch(model, opt) if watch else None

    def evaluate():
        model.eval()
        with torch.no_grad():
            losses = []
            for _ in range(4):
                x, y = get_batch(val_data)
                logits = model(x)
                losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1),
                                              ignore_index=-1).item())
        model.train()
        return sum(losses) / len(losses)

    print(f"vocab {len(chars)} chars, uniform loss {math.log(len(chars)):.3f}")
    for step in range(steps):
        x, y = get_batch(train_data)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} train_loss {loss.item():.4f} val_loss {evaluate():.4f} "
                  f"lr {sched.get_last_lr()[0]:.2e}")
    return monitor


if __name__ == "__main__":
    main()
