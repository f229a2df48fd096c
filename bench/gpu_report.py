"""The tables ``bench/bench_gpu.py`` prints at the end, from its result (the same dict it writes as JSON):
networks by dtype with training patches/s, the platform against plain MONAI per run, the 14-label peaks."""


def summary(r: dict) -> None:
    print(f"\n## {r['device']}, scan {r['scan']['shape']}, torch {r['torch']}, MONAI {r['monai']}")
    if r.get("inference"):
        print(
            "| network | dtype | best s | median s | Dice vs fp32 | Dice vs the answer | training patches/s |"
        )
        print("|---|---|---|---|---|---|---|")
        train = {t["network"]: t.get("patches_per_s", float("nan")) for t in r["training"]}
        for row in r["inference"]:
            if "error" in row:
                print(f"| {row['network']} | {row['dtype']} | {row['error']} | | | | |")
                continue
            print(
                f"| {row['network']} | {row['dtype']} | {row['best_s']:.3f} | {row['median_s']:.3f} | "
                f"{row['dice_vs_fp32']:.4f} | {row['dice_vs_answer']:.3f} | {train[row['network']]:.1f} |"
            )
    if r.get("end_to_end"):
        print(
            "| run | platform s (without load) | load | read | model | prep + resample | store | "
            "plain MONAI s (without load) | load | read + prep | model | Invertd + argmax + save | "
            "platform / MONAI |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for i, row in enumerate(r["end_to_end"], 1):
            p, m = row["platform"], row["monai"]
            print(
                f"| {i} | {p['total_s']:.2f} | {p['load_s']:.2f} | {p['read_s']:.2f} | {p['model_s']:.2f} | "
                f"{p['prep_resample_s']:.2f} | {p['store_s']:.2f} | {m['total_s']:.2f} | {m['load_s']:.2f} | "
                f"{m['read_prep_s']:.2f} | {m['model_s']:.2f} | {m['post_store_s']:.2f} | "
                f"{row['ratio']:.2f}x |"
            )
    for roi, row in (r.get("labels14") or {}).items():
        if "error" in row:
            print(f"14 labels, {roi}: {row['error']}")
            continue
        p, m = row["platform"], row["monai"]
        gpu = f"GPU {p['gpu_mb']:,.0f} MB (MONAI {m['gpu_mb']:,.0f} MB), " if p["gpu_mb"] is not None else ""
        print(
            f"14 labels, {roi}: platform peak {gpu}host {p['host_mb']:,.0f} MB "
            f"(MONAI {m['host_mb']:,.0f} MB); "
            f"{p['total_s']:.2f} s vs {m['total_s']:.2f} s; fallback: {row['fell_back'] or 'none'}"
        )
