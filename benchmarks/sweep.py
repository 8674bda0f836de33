"""Time a 10-strength steering sweep three ways and compare with the compute floor.

(a) per-config: every configuration on its own, batched (pass 1, baseline pass 2, steered pass 2);
(b) the earlier pipeline's way: one clip at a time, both passes for baseline and steered, per
    configuration (timed on a subset, scaled up);
(c) the sweep engine: shared work once (cold: computed and written to the on-disk cache; warm:
    read back from it), then only the gain and the layers after the first steered block, all
    strengths in one batched forward.

Usage: ``python benchmarks/sweep.py [--full] [--clips 364] [--frames 1000]``. The last line is
``speedup vs per-config: X.Xx`` for the conv4 sweep (warm cache, as a sweep engine sees it from
its second sweep on; the cold figure is printed just above it).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from steering.engine import SteeringSpec, select_connections, steer_direct
from steering.engine.chunked import plan_chunks, shared_bytes_per_clip, shared_chunk, steer_chunk
from steering.engine.store import SharedPassStore
from steering.model import LRMEmotionNet, ModelConfig

DEMO = ModelConfig(channels=(16, 32, 64, 128), embedding_size=128)
FULL = ModelConfig()
STRENGTHS = [0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 5.0, 10.0]


def build_model(cfg: ModelConfig, seed: int = 0) -> LRMEmotionNet:
    torch.manual_seed(seed)
    model = LRMEmotionNet(cfg).to(memory_format=torch.channels_last)  # as load_model returns it
    with torch.no_grad():  # non-trivial BatchNorm statistics and gains, as a trained model has
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def gemm_throughput(trials: int = 5, seconds: float = 0.4) -> float:
    """Multiply-adds per second of a large fp32 matrix product: the best of several short trials,
    so a moment of other load on the machine does not lower the floor."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    best = 0.0
    for _ in range(trials):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            count += 1
        best = max(best, count * 1024**3 / (time.perf_counter() - start))
    return best


def block_macs(cfg: ModelConfig, frames: int) -> list[int]:
    """Multiply-adds of each conv block per clip (5x5 convs at the block's input resolution)."""
    widths, macs, t, f = (1, *cfg.channels), [], frames, cfg.mel_bins
    for i in range(4):
        macs.append(widths[i] * widths[i + 1] * 25 * t * f)
        t, f = t // 2, f // 2
    return macs


def suffix_macs(cfg: ModelConfig, start: int, frames: int, steered: int) -> int:
    """Per clip and strength: ModBlocks of steered connections, blocks after ``start``, the heads."""
    e, h, d = cfg.embedding_size, cfg.head_hidden, cfg.source_dim
    heads = 2 * (e * h + h * d + d)
    mod = steered * (d * d + d * max(cfg.channels))
    return sum(block_macs(cfg, frames)[start + 1 :]) + cfg.channels[-1] * e + heads + mod


def shared_macs(cfg: ModelConfig, start: int, frames: int) -> int:
    """Per clip: pass 1 whole, pass 2 up to the raw output of ``start`` (block 1 reused)."""
    blocks = block_macs(cfg, frames)
    e, h, d = cfg.embedding_size, cfg.head_hidden, cfg.source_dim
    pass1 = sum(blocks) + cfg.channels[-1] * e + 2 * (e * h + h * d + d)
    return pass1 + sum(blocks[1 : start + 1])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_case(model, x_chunks, signals, layer: str, pathway: str, subset: int, cache_root: Path) -> dict:
    spec0 = SteeringSpec(select_connections(model.connections, pathway, layer), method="bypass")
    specs = [SteeringSpec(spec0.connections, method="bypass", strength=s) for s in STRENGTHS]
    masks = [torch.ones(x.shape[0], dtype=torch.bool) for x in x_chunks]
    sig_chunks = [{p: v[i] for p, v in signals.items()} for i in range(len(x_chunks))]

    def per_config():
        outs = []
        with torch.inference_mode():
            for spec in specs:
                rows = []
                for x, sig, mask in zip(x_chunks, sig_chunks, masks):
                    first = model.feedforward(x)
                    model.feedforward(x, model.gains_from(model.modulations(first)))  # the baseline
                    rows.append(steer_direct(model, x, spec, sig, mask)["valence"])
                outs.append(torch.cat(rows))
        return torch.stack(outs)

    def earlier_pipeline():
        with torch.inference_mode():
            clips = torch.cat(x_chunks)[:subset]
            sig = {p: torch.cat([s[p] for s in sig_chunks])[:subset] for p in signals}
            one = torch.ones(1, dtype=torch.bool)
            for spec in specs:
                for i in range(subset):
                    model(clips[i : i + 1], forward_passes=2)
                    steer_direct(model, clips[i : i + 1], spec, {p: v[i : i + 1] for p, v in sig.items()}, one)

    x_all = torch.cat(x_chunks)
    sig_all = {p: torch.cat([s[p] for s in sig_chunks]) for p in signals}
    batch = x_chunks[0].shape[0]
    plan = plan_chunks(x_all.shape[0], batch, shared_bytes_per_clip(model, spec0.first_block, x_all.shape[1]))

    def engine(store: SharedPassStore):
        # What steering.evaluation does: byte-sized storage chunks, small compute batches.
        s = torch.tensor(STRENGTHS)
        rows = []
        for i, chunk in enumerate(plan):
            shared = store.get(i, lambda c=chunk: shared_chunk(model, lambda r: x_all[r], c, spec0.first_block, batch))
            sig = {p: v[chunk] for p, v in sig_all.items()}
            mask = torch.ones(chunk.stop - chunk.start, dtype=torch.bool)
            rows.append(steer_chunk(model, shared, spec0, sig, mask, s, batch)["valence"])
        return torch.cat(rows, dim=1)

    t_a, out_a = timed(per_config)
    t_b_subset, _ = timed(earlier_pipeline)
    n = sum(x.shape[0] for x in x_chunks)
    t_b = t_b_subset * n / subset
    key = f"bench-{layer}-{pathway}"
    t_cold, out_c = timed(lambda: engine(SharedPassStore(key, cache_root)))
    t_warm, out_w = timed(lambda: engine(SharedPassStore(key, cache_root)))
    cache_bytes = sum(f.stat().st_size for f in (cache_root / "shared" / key).glob("*.pt"))
    diff = max((out_c - out_a).abs().max().item(), (out_w - out_a).abs().max().item())
    return {
        "t_a": t_a,
        "t_b": t_b,
        "t_cold": t_cold,
        "t_warm": t_warm,
        "diff": diff,
        "cache_bytes": cache_bytes,
        "start": spec0.first_block,
        "steered": len(spec0.connections),
    }


def read_bandwidth(directory: Path) -> float:
    """Bytes per second reading the cache files back (page cache, as a sweep's later jobs do)."""
    files = list(directory.rglob("*.pt"))
    size = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    for f in files:
        f.read_bytes()
    return size / max(time.perf_counter() - start, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the full-size reference model")
    parser.add_argument("--clips", type=int, default=364, help="evaluated clips (364: the legacy val split)")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--subset", type=int, default=4, help="clips timed for (b), scaled up")
    args = parser.parse_args()
    cfg = FULL if args.full else DEMO
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.clips, args.frames, cfg.mel_bins, generator=gen) * 10 - 40
    x_chunks = list(x.split(args.batch))
    signals = {p: [torch.rand(c.shape[0], 128, generator=gen) for c in x_chunks] for p in ("valence", "arousal")}
    throughput = gemm_throughput()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpu, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; measured fp32 GEMM {throughput / 1e9:.1f} GMAC/s"
    )
    print(
        f"model: {'full' if args.full else 'demo'} channels {list(cfg.channels)}, clips {args.clips}, "
        f"frames {args.frames}, batch {args.batch}, {len(STRENGTHS)} strengths (bypass)"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layer, pathway, label in (("conv4", "valence", "conv4"), ("all", "valence", "conv3+conv4")):
            r = run_case(model, x_chunks, signals, layer, pathway, args.subset, Path(tmp))
            bandwidth = read_bandwidth(Path(tmp) / "shared" / f"bench-{layer}-{pathway}")
            suffix = suffix_macs(cfg, r["start"], args.frames, r["steered"]) * args.clips * len(STRENGTHS)
            shared = shared_macs(cfg, r["start"], args.frames) * args.clips
            floor_cold = (shared + suffix) / throughput
            floor_warm = suffix / throughput + r["cache_bytes"] / bandwidth
            results[label] = r
            print(f"\n[{label}] sweep of {len(STRENGTHS)} strengths over {args.clips} clips")
            print(f"  (a) per-config, batched        {r['t_a']:8.2f} s")
            print(f"  (b) earlier pipeline (batch 1)  {r['t_b']:8.2f} s  (from {args.subset} clips, scaled)")
            print(
                f"  (c) sweep engine, cold cache    {r['t_cold']:8.2f} s  floor {floor_cold:6.2f} s  "
                f"({r['t_cold'] / floor_cold:.1f}x floor)"
            )
            print(
                f"  (c) sweep engine, warm cache    {r['t_warm']:8.3f} s  floor {floor_warm:6.3f} s  "
                f"({r['t_warm'] / floor_warm:.1f}x floor; {suffix / 1e9:.2f} GMAC + "
                f"{r['cache_bytes'] / 1e6:.0f} MB at {bandwidth / 1e9:.1f} GB/s)"
            )
            print(f"  max |c - a| = {r['diff']:.2e}  ({'OK' if r['diff'] <= 1e-5 else 'MISMATCH'} at 1e-5)")
            print(f"  cache: {r['cache_bytes'] / args.clips * 1000 / 1e6:.0f} MB per 1,000 clips")
            print(
                f"  speedup vs per-config: cold {r['t_a'] / r['t_cold']:.1f}x, warm {r['t_a'] / r['t_warm']:.1f}x; "
                f"vs earlier pipeline: warm {r['t_b'] / r['t_warm']:.0f}x"
            )
    conv4 = results["conv4"]
    print(f"\nconv4 sweep, cold cache: speedup vs per-config: {conv4['t_a'] / conv4['t_cold']:.1f}x")
    print(f"speedup vs per-config: {conv4['t_a'] / conv4['t_warm']:.1f}x")


if __name__ == "__main__":
    main()
