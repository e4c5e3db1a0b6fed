"""Clean: DQN on a 1-D chain environment written in the file: replay buffer, epsilon-greedy,
a target network (no optimizer, evaluated under no_grad) copied every N steps, Huber loss."""
import copy
import random

import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None


class Chain:
    """States 0..n-1, start in the middle; actions left/right; reward +1 at the right end,
    +0.1 at the left end (a distractor), -0.01 per step; episodes end at either end or after
    `horizon` steps."""

    def __init__(self, n=10, horizon=30):
        self.n, self.horizon = n, horizon

    def reset(self):
        self.s, self.t = self.n // 2, 0
        return self.obs()

    def obs(self):
        o = torch.zeros(self.n)
        o[self.s] = 1.0
        return o

    def step(self, a):
        self.s += 1 if a == 1 else -1
        self.t += 1
        if self.s >= self.n - 1:
            return self.obs(), 1.0, True
        if self.s <= 0:
            return self.obs(), 0.1, True
        return self.obs(), -0.01, self.t >= self.horizon


def main(watch=None):
    torch.manual_seed(0)
    rng = random.Random(0)
    env = Chain()
    q = nn.Sequential(nn.Linear(env.n, 64), nn.ReLU(), nn.Linear(64, 2))
    target = copy.deepcopy(q)
    target.requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    monitor = watch(q, opt) if watch else None

    buffer, capacity, batch, gamma = [], 5000, 32, 0.95
    steps, sync_every = 0, 50
    returns = []
    for episode in range(80):
        obs, done, ret = env.reset(), False, 0.0
        eps = max(0.05, 1.0 - episode / 40)
        while not done:
            if rng.random() < eps:
                a = rng.randrange(2)
            else:
                with torch.no_grad():
                    a = q(obs).argmax().item()
            nxt, r, done = env.step(a)
            ret += r
            buffer.append((obs, a, r, nxt, float(done)))
            if len(buffer) > capacity:
                buffer.pop(0)
            obs = nxt
            steps += 1
            if len(buffer) >= 100:
                s, a_, r_, s2, d = zip(*rng.sample(buffer, batch))
                s, s2 = torch.stack(s), torch.stack(s2)
                a_, r_, d = torch.tensor(a_), torch.tensor(r_), torch.tensor(d)
                with torch.no_grad():
                    y = r_ + gamma * (1 - d) * target(s2).max(1).values
                pred = q(s).gather(1, a_[:, None]).squeeze(1)
                loss = F.smooth_l1_loss(pred, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if steps % sync_every == 0:
                target.load_state_dict(q.state_dict())
        returns.append(ret)
        if episode % 20 == 19:
            print(f"episode {episode + 1} eps {eps:.2f} avg return (last 20) "
                  f"{sum(returns[-20:]) / 20:.3f}")

    obs, done, greedy = env.reset(), False, 0.0
    while not done:
        with torch.no_grad():
            obs, r, done = env.step(q(obs).argmax().item())
        greedy += r
    print(f"greedy return {greedy:.3f} (optimal {1 - 0.01 * (env.n // 2 - 2):.3f})")
    return monitor


if __name__ == "__main__":
    main()
