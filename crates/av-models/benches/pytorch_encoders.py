"""PyTorch CPU reference timings for benches/encoders.rs: the same AVID encoders (width 1),
the same shapes (8x3x8x112x112 video, 8x1x125x80 audio), forward in train mode (batch
statistics, as in training) and forward + backward of sum(features ** 2).

Usage: python3 benches/pytorch_encoders.py [--reps 3] [--threads 2]
Prints: case, pass, best seconds, GFLOP (multiply-adds x 2, backward = 2x forward), GFLOP/s,
peak RSS of the process so far (MB). The network definitions mirror the fixture generator
(/work/shared/fixtures/scripts/avid_models.py layer tables) and are written out here so the
script has no other dependency than torch.
"""
import argparse
import resource
import time

import torch
import torch.nn as nn


class R2P1Block(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.spt_conv1 = nn.Conv3d(cin, cout, (1, 3, 3), (1, s, s), (0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(cout)
        self.tmp_conv1 = nn.Conv3d(cout, cout, (3, 1, 1), (s, 1, 1), (1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(cout)
        self.spt_conv2 = nn.Conv3d(cout, cout, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(cout)
        self.tmp_conv2 = nn.Conv3d(cout, cout, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(cout)
        self.res = cin != cout or s != 1
        if self.res:
            self.res_conv = nn.Conv3d(cin, cout, 1, s, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.spt_bn1(self.spt_conv1(x)))
        y = self.relu(self.tmp_bn1(self.tmp_conv1(y)))
        y = self.relu(self.spt_bn2(self.spt_conv2(y)))
        y = self.tmp_conv2(y)
        return self.relu(self.out_bn(y + (self.res_conv(x) if self.res else x)))


class Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(3, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                   nn.BatchNorm3d(64), nn.ReLU(inplace=True),
                                   nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        layers, cin = [], 64
        for i, c in enumerate([64, 128, 256, 512]):
            layers += [R2P1Block(cin, c, 2 if i > 0 else 1), R2P1Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool3d(1)

    def forward(self, x):
        return self.pool(self.layers(self.conv1(x))).flatten(1)


def block2d(cin, cout, s):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                 block2d(64, 64, 2), block2d(64, 128, 2), block2d(128, 256, 2), block2d(256, 512, 1))
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return self.pool(self.net(x)).flatten(1)


def flops(model, x):
    total = 0

    def hook(m, inp, out):
        nonlocal total
        k = m.weight[0].numel()
        total += 2 * out.numel() * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("case\tpass\tseconds\tGFLOP\tGFLOP/s\tpeak RSS MB")
    for name, model, x in [("audio", Audio(), torch.randn(8, 1, 125, 80)),
                           ("video", Video(), torch.randn(8, 3, 8, 112, 112))]:
        model.train()
        f = flops(model, x)
        for backward in (False, True):
            def step():
                if backward:
                    model.zero_grad(set_to_none=True)
                    (model(x) ** 2).sum().backward()
                else:
                    with torch.no_grad():
                        model(x).sum().item()
            step()
            best = float("inf")
            for _ in range(a.reps):
                t0 = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - t0)
            fl = f * (3 if backward else 1)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{name}\t{'fwd+bwd' if backward else 'fwd'}\t{best:.3f}\t{fl / 1e9:.1f}\t{fl / 1e9 / best:.1f}\t{rss:.0f}")


if __name__ == "__main__":
    main()
