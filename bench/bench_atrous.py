"""Benchmark: does a 3x3 convolution cost more at a larger rate?

Same parameters and the same FLOPs at every rate; only the memory access pattern changes. Prints the
time of rate r relative to rate 1 (1.0 is the physical limit) for DeepLab-sized feature maps.

    .venv/bin/python bench/bench_atrous.py            # 512 channels at 41x41 and 65x65
    .venv/bin/python bench/bench_atrous.py --quick    # fewer repeats, smaller channel count
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def time_conv(x: torch.Tensor, w: torch.Tensor, rate: int, repeats: int) -> float:
    """Median seconds of one 'same'-padded 3x3 conv at ``rate``."""
    with torch.no_grad():
        for _ in range(2):
            F.conv2d(x, w, padding=rate, dilation=rate)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            F.conv2d(x, w, padding=rate, dilation=rate)
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    channels = 128 if args.quick else 512
    repeats = 3 if args.quick else 7
    rates = (1, 2, 4, 12, 24)
    print(f"3x3 conv, {channels}->{channels} channels, batch 1, {args.device}, {torch.get_num_threads()} threads, "
          f"median of {repeats}; torch {torch.__version__}")
    print(f"{'size':>7} " + " ".join(f"{'r=' + str(r):>8}" for r in rates) + "   (ms at r=1; others relative)")
    for size in (41, 65):
        x = torch.randn(1, channels, size, size, device=args.device)
        w = torch.randn(channels, channels, 3, 3, device=args.device)
        base = time_conv(x, w, 1, repeats)
        rel = [time_conv(x, w, r, repeats) / base for r in rates]
        print(f"{size:>4}x{size:<3}" + " ".join(f"{v:>8.2f}" for v in rel) + f"   ({base * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
