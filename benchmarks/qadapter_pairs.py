"""Preference pairs from a model's own samples, ranked by a reward: the data of benchmarks/qadapter_sentiment_135m.sh.

    python -m benchmarks.qadapter_pairs --gens gens-train.jsonl gens-validation.jsonl --margin 0.3 \\
        --reward vader_sentiment --out pairs.jsonl

``--gens`` are ``rlcustom generate`` outputs (``prompt``, ``completion`` per row), e.g. two runs with
different seeds over the same prompts, or one run with ``-n K``. The samples of a prompt (rows with the
same ``prompt`` text, over all the files in the order given, then row order) are taken two at a time
(samples 1-2, 3-4, ...; an odd last one is dropped), so every pair is two independent samples of that
prompt, never one sample used twice. Both replies are scored with the
reward (a registered name, e.g. ``vader_sentiment``, see :func:`rlcustom.rewards.resolve_reward`); a pair is kept when the scores
differ by at least ``--margin`` (and by more than 0), ``chosen`` = the higher-scored reply.

The output is one ``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}`` record per pair,
the format :func:`rlcustom.data.loaders.load_preference_pairs` reads (``prompt`` is the raw prompt the
generator wrote, e.g. HH's ``"\\n\\nHuman: ...\\n\\nAssistant:"``). The loaders split a file by a hash of
the prompt (:func:`rlcustom.data.loaders.is_validation`), so with the generator's ``seed`` and
``val_fraction`` the pairs of prompts drawn from HH's train split are train pairs of this file and those
from HH's validation split are its validation pairs. ``OUT.stats.json`` records the counts and score means.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

__all__ = ["sample_couples", "build_pairs", "main"]


def sample_couples(rows: Iterable[Mapping]) -> list[tuple[Mapping, Mapping]]:
    """Disjoint couples of samples of the same prompt: per ``prompt`` text (first-seen order), its
    samples 1-2, 3-4, ... in the order given; a prompt's odd last sample is dropped."""
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
    return [(samples[k], samples[k + 1]) for samples in groups.values() for k in range(0, len(samples) - 1, 2)]


def build_pairs(rows: Iterable[Mapping], score: Callable[[str, str], float], margin: float) -> tuple[list[dict], dict]:
    """``(pairs, stats)``: the couples of :func:`sample_couples` whose scores differ by ``>= margin``
    (and ``> 0``), chosen = the higher-scored reply; ``score(prompt, completion)`` is the reward."""
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"--margin must be a finite number >= 0; got {margin}")
    couples = sample_couples(rows)
    pairs, gaps = [], []
    for a, b in couples:
        sa, sb = float(score(a["prompt"], a["completion"])), float(score(b["prompt"], b["completion"]))
        gap = abs(sa - sb)
        gaps.append(gap)
        if gap < margin or gap == 0:
            continue
        (w, sw), (lo, sl) = ((a, sa), (b, sb)) if sa > sb else ((b, sb), (a, sa))
        pairs.append({"prompt": a["prompt"], "chosen": w["completion"], "rejected": lo["completion"],
                      "chosen_score": sw, "rejected_score": sl})
    stats = {"couples": len(couples), "pairs": len(pairs), "margin": margin,
             "kept_fraction": len(pairs) / len(couples) if couples else None,
             "mean_gap_all": sum(gaps) / len(gaps) if gaps else None,
             "chosen_score_mean": sum(p["chosen_score"] for p in pairs) / len(pairs) if pairs else None,
             "rejected_score_mean": sum(p["rejected_score"] for p in pairs) / len(pairs) if pairs else None}
    return pairs, stats


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"--gens {path}: no such file")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            r = json.loads(line)
            missing = [k for k in ("prompt", "completion") if k not in r]
            if missing:
                raise SystemExit(f"{path}:{i}: missing field {missing[0]!r} (expected rlcustom generate output)")
            rows.append(r)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from rlcustom.rewards import RewardSpecError, resolve_reward

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gens", nargs="+", required=True, help="rlcustom generate JSONL files, read as one sample list")
    p.add_argument("--reward", default="vader_sentiment", help="a registered reward name or module.path:function")
    p.add_argument("--margin", type=float, default=0.3, help="least score difference of a kept pair")
    p.add_argument("--out", required=True, help="pairs JSONL; OUT.stats.json beside it")
    a = p.parse_args(argv)
    try:
        reward = resolve_reward(a.reward)
    except RewardSpecError as e:
        raise SystemExit(f"--reward: {e}") from None
    rows = [r for f in a.gens for r in _read_jsonl(Path(f))]
    pairs, stats = build_pairs(rows, reward, a.margin)
    stats |= {"reward": a.reward, "files": list(a.gens), "samples": len(rows)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    os.replace(tmp, out)  # the pairs file appears whole or not at all (the script skips the stage when it exists)
    Path(f"{out}.stats.json").write_text(json.dumps(stats, indent=2))
    print(f"{stats['pairs']} of {stats['couples']} couples kept (margin {a.margin}); mean chosen score "
          f"{stats['chosen_score_mean']}, rejected {stats['rejected_score_mean']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
