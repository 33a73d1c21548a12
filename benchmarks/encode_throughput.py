"""How close does frozen text encoding get to this machine's matmul peak?

Prints the measured float32 GEMM rate, then for the frozen encoder (default: the prepared
SmolLM2 backbone in raw last-token mode; ``--model DIR`` for a stage-2 folder) on a mix of
long shop texts and short scene texts, at batch sizes 1 and 64:

* naive    — a plain Hugging Face forward on batches in input order, padded to the longest
             text of each batch, with the attention mask (what one writes first);
* bucketed — ``larr.Encoder.encode``: sorted by length, batched with neighbours (almost no
             padding), no attention mask needed for a causal model, ``torch.inference_mode``.

Share of peak = 2 × N × real tokens/s ÷ GEMM FLOP/s, where N counts the parameters whose
matmuls run for every token (everything except the input-embedding lookup; no LM head runs
here). The literal "2 × all parameters" share is printed too: it credits the embedding table
as if it were a matmul and so reads ~27% higher for SmolLM2.

    python benchmarks/encode_throughput.py [--model DIR] [--data DIR] [--n 128] [--repeats 3] [--compile]

Timings are best-of ``--repeats`` interleaved passes; the "cpu-time" share divides by process
CPU seconds instead of wall seconds, which is steadier when other jobs share the cores.
"""
from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from larr.llm.encode import Encoder, EmbeddingModel  # noqa: E402


# ---------------------------------------------------------------------------- peak


def gemm_flops(n: int = 2048, repeats: int = 8) -> tuple[float, float]:
    """Best-of-``repeats`` float32 FLOP/s of an n×n matmul (the machine's practical peak):
    per wall second, and per CPU second (see :func:`timed`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        _, wall, cpu = timed(lambda: a @ b)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return 2 * n**3 / best_wall, 2 * n**3 / best_cpu


# ---------------------------------------------------------------------------- texts

_CUISINES = ["noodles", "dumplings", "hot pot", "sushi", "pizza", "burgers", "salads", "barbecue", "congee",
             "bubble tea", "fried chicken", "curry", "bibimbap", "pho", "tacos", "kebabs"]
_WORDS = ("fresh handmade spicy mild crispy slow-cooked seasonal family recipe delivered hot within thirty "
          "minutes generous portions office lunch late-night snacks vegetarian options homemade sauces "
          "popular with students near the metro station open until midnight rainy day comfort food").split()
_SCENES = ["weather: heavy rain", "weather: sunny", "weather: snow", "temperature: 35 degrees",
           "temperature: -5 degrees", "time: weekday lunch", "time: late night", "meal: breakfast",
           "day: saturday", "holiday: national day", "district: office park", "district: university town",
           "location: home", "location: office", "season: summer", "event: exam week"]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Half shop descriptions (≈20-150 tokens), half short scene texts (≈4-8 tokens), shuffled."""
    rng = random.Random(seed)
    shops = []
    for i in range(n - n // 2):
        cuisine = rng.choice(_CUISINES)
        desc = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 110)))
        menu = ", ".join(rng.sample(_CUISINES, 3))
        shops.append(f"Shop {i}: {cuisine.title()} House. Category: {cuisine}. {desc}. Menu: {menu}.")
    texts = shops + [rng.choice(_SCENES) for _ in range(n // 2)]
    rng.shuffle(texts)
    return texts


def data_texts(data_dir: Path, n: int, seed: int = 0) -> list[str]:
    """Shop texts from ``shops.parquet`` (name/category/description/menu) mixed with scene texts."""
    import pandas as pd

    shops = pd.read_parquet(data_dir / "shops.parquet")
    rng = random.Random(seed)
    rows = shops.sample(n=min(n - n // 2, len(shops)), random_state=seed)

    def render(r) -> str:
        menu = r.get("menu", "")
        menu = ", ".join(map(str, menu)) if isinstance(menu, (list, tuple, np.ndarray)) else str(menu)
        return f"{r.get('name', '')}. Category: {r.get('category', '')}. {r.get('description', '')} Menu: {menu}"

    texts = [render(r) for _, r in rows.iterrows()] + [rng.choice(_SCENES) for _ in range(n // 2)]
    rng.shuffle(texts)
    return texts


# ---------------------------------------------------------------------------- the two paths


def naive_encode(model: EmbeddingModel, texts: list[str], batch_size: int) -> np.ndarray:
    """Input order, pad to each batch's longest, attention mask on, ``no_grad``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = model.tokenize(texts[i:i + batch_size])
            out.append(model(batch["input_ids"], batch["attention_mask"], use_mask=True).numpy())
    return np.concatenate(out)


def naive_padded_tokens(model: EmbeddingModel, texts: list[str], batch_size: int) -> int:
    return sum(model.tokenize(texts[i:i + batch_size])["input_ids"].numel() for i in range(0, len(texts), batch_size))


def bucketed_padded_tokens(encoder: Encoder, lengths: list[int], batch_size: int) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in encoder.buckets(lengths, batch_size))


def timed(fn):
    """Result, wall seconds, process CPU seconds (all threads).

    On a shared machine wall time depends on the neighbours; CPU time much less so, hence the
    second share-of-peak column (FLOPs per CPU-second vs GEMM's FLOPs per CPU-second)."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t, time.process_time() - c


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="stage-2 folder (default: prepared SmolLM2, raw last-token mode)")
    ap.add_argument("--data", type=Path, help="data dir with shops.parquet (default: generated texts)")
    ap.add_argument("--n", type=int, default=128, help="texts at batch size 64 (default 128)")
    ap.add_argument("--n1", type=int, default=16, help="texts at batch size 1 (default 24)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per path, best kept (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--compile", action="store_true", help="also time Encoder(compile=True)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    peak, peak_cpu = gemm_flops()
    print(f"threads {torch.get_num_threads()}  float32 GEMM 2048x2048 (best of 8): {peak / 1e9:.1f} GFLOP/s "
          f"({peak_cpu / 1e9:.1f} GFLOP per CPU-second)")

    if args.model:
        encoder = Encoder.from_pretrained(args.model, device="cpu")
        label = str(args.model)
    else:
        from larr.llm.backbone import prepare_default_model

        encoder = Encoder.from_causal_lm(prepare_default_model(), device="cpu")
        label = "SmolLM2-135M-Instruct (raw last-token)"
    model = encoder.model
    n_all = sum(p.numel() for p in model.parameters())
    n_mm = n_all - model.base.get_input_embeddings().weight.numel()
    print(f"model {label}: {n_all / 1e6:.1f}M parameters, {n_mm / 1e6:.1f}M in per-token matmuls")

    texts = data_texts(args.data, args.n) if args.data else synthetic_texts(args.n)
    lengths = [len(x) for x in model.tokenize(texts, padding=False)["input_ids"]]
    print(f"texts {len(texts)}: tokens/text min {min(lengths)} median {int(np.median(lengths))} "
          f"max {max(lengths)}, total {sum(lengths)}")
    print()
    header = (f"{'path':<18}{'batch':>6}{'texts/s':>10}{'real tok/s':>12}{'pad waste':>11}{'peak %':>9}"
              f"{'(2×all)':>9}{'peak % cpu-time':>17}")
    print(header)
    print("-" * len(header))

    def row(name: str, bs: int, n_texts: int, real: int, padded: int, seconds: float, cpu: float) -> None:
        tps = real / seconds
        print(f"{name:<18}{bs:>6}{n_texts / seconds:>10.1f}{tps:>12.0f}{1 - real / padded:>10.0%}"
              f"{100 * 2 * n_mm * tps / peak:>8.1f}%{100 * 2 * n_all * tps / peak:>8.1f}%"
              f"{100 * 2 * n_mm * real / cpu / peak_cpu:>16.1f}%", flush=True)

    encoder.encode(texts[:8])  # warm-up (allocator, thread pool)
    compiled = Encoder(model, device="cpu", compile=True) if args.compile else None
    if compiled is not None:
        _, t, _ = timed(lambda: compiled.encode(texts, batch_size=64))
        print(f"(torch.compile warm-up pass: {t:.0f}s)")

    for bs, subset in ((1, texts[: args.n1]), (64, texts)):
        sub_len = [len(x) for x in model.tokenize(subset, padding=False)["input_ids"]]
        real = sum(sub_len)
        paths = {
            "naive HF forward": (lambda: naive_encode(model, subset, bs), naive_padded_tokens(model, subset, bs)),
            "bucketed Encoder": (lambda: encoder.encode(subset, batch_size=bs),
                                 bucketed_padded_tokens(encoder, sub_len, bs)),
        }
        if compiled is not None and bs > 1:  # batch 1 only triggers recompilations
            paths["bucketed+compile"] = (lambda: compiled.encode(subset, batch_size=bs),
                                         bucketed_padded_tokens(compiled, sub_len, bs))
        best = {name: (float("inf"), float("inf")) for name in paths}
        vectors = {}
        for _ in range(args.repeats):  # interleaved, best of: neighbours' load hits every path alike
            for name, (fn, _) in paths.items():
                vectors[name], wall, cpu = timed(fn)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
        for name, (_, padded) in paths.items():
            row(name, bs, len(subset), real, padded, *best[name])
        diff = np.abs(vectors["naive HF forward"] - vectors["bucketed Encoder"]).max()
        print(f"{'':<18}{'':>6}  max |naive - bucketed| = {diff:.1e}")

    after, after_cpu = gemm_flops()
    print(f"\nGEMM re-measured after the runs: {after / 1e9:.1f} GFLOP/s, {after_cpu / 1e9:.1f} per CPU-second "
          f"(shares above use the first measurement; on a shared machine the wall-clock ones are noisy)")


if __name__ == "__main__":
    main()
