"""Linear reward-model probes on a frozen 135M backbone: does any layer's features rank HH-RLHF pairs?

A Bradley-Terry head on frozen features is a logistic regression on the feature difference
``phi(x, y+) - phi(x, y-)`` (no bias: it cancels). The backbone runs once per text, so every layer
and pooling can be tried for the cost of one forward pass over the data (the reward trainer pays a
forward + backward per pair per epoch). Features are the final norm applied to each layer's hidden
state (what a backbone cut to that many layers, ``algo.backbone_layers``, would give the head), read
at the last token (where :class:`RewardModel` reads) or averaged over the reply tokens.

Training pairs are encoded as the reward trainer encodes them (prompt cut to its last
``--max-prompt`` tokens, reply + EOS to ``--max-reply``); the held-out pairs as ``rlcustom eval
--metrics pairs`` scores them (full texts). The L2 strength is chosen by 5-fold cross-validation on
the training pairs only; held-out accuracy is reported for every (layer, pooling), not used to pick.

    python -m benchmarks.rm_probe_135m --model runs/pipeline-135m/sft/model --out runs/pipeline-135m/rm_probe
    python -m benchmarks.rm_probe_135m ... --export-layer 20 --export-dir runs/pipeline-135m/reward-probe/model

``--export-*`` writes the chosen probe as a RewardModel directory (backbone cut to that layer + the
fitted head, last-token pooling), usable as ``reward.model_path`` and by ``rlcustom eval``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # L2 penalties (per pair, on standardised features)


def encode(tok, rows: list[dict], max_prompt: int | None, max_reply: int | None) -> list[tuple[list[int], int]]:
    """(ids, reply length) for chosen and rejected of every row, interleaved."""
    from rlcustom.data.chat import format_prompt

    out = []
    for r in rows:
        p = tok(format_prompt(tok, r.get("messages") or r["prompt"], use_chat_template=True),
                add_special_tokens=False)["input_ids"]
        p = p[-max_prompt:] if max_prompt else p
        for reply in (r["chosen"], r["rejected"]):
            c = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            c = c[:max_reply] if max_reply else c
            out.append((p + c, len(c)))
    return out


def cached_features(backbone, seqs: list[tuple[list[int], int]], pad: int, layers: list[int], cache: Path,
                    chunk: int = 512) -> dict[str, torch.Tensor]:
    """:func:`features` in chunks of ``chunk`` texts, each saved under ``cache`` (a killed run resumes)."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = []
    for k, s in enumerate(range(0, len(seqs), chunk)):
        f = cache / f"part{k:03d}.pt"
        if not f.is_file():
            torch.save({k: v.half() for k, v in features(backbone, seqs[s : s + chunk], pad, layers).items()}, f)
            print(f"  {min(s + chunk, len(seqs))}/{len(seqs)} texts", flush=True)
        parts.append(torch.load(f, weights_only=True))
    return {key: torch.cat([p[key] for p in parts]).float() for key in ("last", "mean")}


@torch.no_grad()
def features(backbone, seqs: list[tuple[list[int], int]], pad: int, layers: list[int],
             batch: int = 16) -> dict[str, torch.Tensor]:
    """{"last": [N, len(layers), H], "mean": ...}: normed hidden states after each of ``layers``."""
    norm = backbone.norm
    last, mean = [], []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))  # similar lengths together: less padding
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        L = max(len(seqs[i][0]) for i in idx)
        ids = torch.full((len(idx), L), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), L), dtype=torch.long)
        for j, i in enumerate(idx):  # right padding: the last real token is at len-1
            ids[j, : len(seqs[i][0])] = torch.tensor(seqs[i][0])
            attn[j, : len(seqs[i][0])] = 1
        hs = backbone(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
        # the last entry already has the final norm applied; the others get it here
        top = len(hs) - 1
        h = torch.stack([hs[k] if k == top else norm(hs[k]) for k in layers], 1).float()  # [B, layers, L, H]
        for j, i in enumerate(idx):
            n, c = len(seqs[i][0]), seqs[i][1]
            last.append((i, h[j, :, n - 1].clone()))  # a copy: a view would keep all of h alive
            mean.append((i, h[j, :, n - c : n].mean(1)))
    return {"last": torch.stack([x for _, x in sorted(last, key=lambda t: t[0])]),
            "mean": torch.stack([x for _, x in sorted(mean, key=lambda t: t[0])])}


def fit_bt(d: torch.Tensor, l2: float, steps: int = 200) -> torch.Tensor:
    """Weights w minimising mean(-log sigmoid(d @ w)) + l2/2 |w|^2 (L-BFGS; convex)."""
    w = torch.zeros(d.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    d = d.double()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-(d @ w)).mean() + 0.5 * l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def pair_diff(f: torch.Tensor) -> torch.Tensor:
    return f[0::2] - f[1::2]  # chosen - rejected


def cv_accuracy(d: torch.Tensor, l2: float, folds: int = 5) -> float:
    n = d.shape[0]
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=g)
    hits = 0
    for k in range(folds):
        te = perm[k::folds]
        tr = torch.cat([perm[j::folds] for j in range(folds) if j != k])
        mu, sd = d[tr].mean(0), d[tr].std(0) + 1e-6  # scale only matters for the penalty
        w = fit_bt(d[tr] / sd, l2)
        hits += int(((d[te] / sd).double() @ w > 0).sum())
    return hits / n


def se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/pipeline-135m/sft/model")
    ap.add_argument("--out", default="runs/pipeline-135m/rm_probe")
    ap.add_argument("--max-prompt", type=int, default=64)
    ap.add_argument("--max-reply", type=int, default=48)
    ap.add_argument("--train-pairs", type=int, default=None, help="first N training pairs (default all)")
    ap.add_argument("--val-pairs", type=int, default=200)
    ap.add_argument("--layers", default="4,8,12,16,20,24,28,30", help="layers to fit heads on")
    ap.add_argument("--export-layer", default=None,
                    help="a layer of --layers, or 'best': the last-token probe with the best cross-validated accuracy")
    ap.add_argument("--export-l2", type=float, default=None, help="default: the CV choice for that layer")
    ap.add_argument("--export-dir", default=None)
    args = ap.parse_args(argv)

    from rlcustom.data.loaders import load_preference_pairs
    from rlcustom.models.heads import RewardModel
    from rlcustom.models.loading import load_tokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(args.model)
    layers = [int(x) for x in args.layers.split(",")]
    tag = f"p{args.max_prompt}_r{args.max_reply}_n{args.train_pairs}_v{args.val_pairs}_l{'-'.join(map(str, layers))}"
    train = list(load_preference_pairs("hh-rlhf", split="train", limit=args.train_pairs))
    val = list(load_preference_pairs("hh-rlhf", split="validation", limit=args.val_pairs))
    rm = RewardModel.from_pretrained(args.model)
    t0 = time.perf_counter()
    feats = {"train": cached_features(rm.backbone, encode(tok, train, args.max_prompt, args.max_reply),
                                      tok.pad_token_id, layers, out / f"train_{tag}"),
             "val": cached_features(rm.backbone, encode(tok, val, None, None), tok.pad_token_id, layers,
                                    out / f"val_{tag}")}
    feats["seconds"] = time.perf_counter() - t0  # this run's share (cached chunks cost nothing)
    print(f"features: {feats['seconds']:.0f} s")
    n_val = feats["val"]["last"].shape[0] // 2
    table = []
    for pool in ("last", "mean"):
        for li, layer in enumerate(layers):
            d = pair_diff(feats["train"][pool][:, li])
            dv = pair_diff(feats["val"][pool][:, li])
            cvs = {l2: cv_accuracy(d, l2) for l2 in C_GRID}
            best = max(cvs, key=cvs.get)
            sd = d.std(0) + 1e-6
            w = fit_bt(d / sd, best)
            train_acc = float(((d / sd).double() @ w > 0).float().mean())
            val_acc = float(((dv / sd).double() @ w > 0).float().mean())
            row = {"pool": pool, "layer": layer, "l2": best, "cv_acc": cvs[best], "train_acc": train_acc,
                   "val_acc": val_acc, "val_se": se(val_acc, n_val), "cv_by_l2": cvs}
            table.append(row)
            print(f"{pool:4s} layer {layer:2d}  l2 {best:g}  cv {cvs[best]:.3f}  train {train_acc:.3f}  "
                  f"held-out {val_acc:.3f} +- {se(val_acc, n_val):.3f}", flush=True)
    result = {"model": args.model, "max_prompt": args.max_prompt, "max_reply": args.max_reply,
              "train_pairs": feats["train"]["last"].shape[0] // 2, "val_pairs": n_val,
              "feature_seconds": feats["seconds"], "table": table}
    (out / "probe.json").write_text(json.dumps(result, indent=2))

    if args.export_layer is not None:
        last_rows = [r for r in table if r["pool"] == "last"]
        if args.export_layer == "best":  # chosen on the training pairs only, never on the held-out ones
            args.export_layer = max(last_rows, key=lambda r: r["cv_acc"])["layer"]
        args.export_layer = int(args.export_layer)
        row = next(r for r in last_rows if r["layer"] == args.export_layer)
        l2 = args.export_l2 if args.export_l2 is not None else row["l2"]
        d = pair_diff(feats["train"]["last"][:, layers.index(args.export_layer)])
        sd = d.std(0) + 1e-6
        w = fit_bt(d / sd, l2) / sd.double()  # back to raw feature scale
        rm = RewardModel.from_pretrained(args.model, num_layers=args.export_layer or None)
        with torch.no_grad():
            rm.head.weight.copy_(w.float()[None])
            rm.head.bias.zero_()
        rm.save(args.export_dir or out / "model", tokenizer=tok)
        print(f"wrote {args.export_dir or out / 'model'} (layer {args.export_layer}, l2 {l2:g})")
        result["exported"] = {"layer": args.export_layer, "l2": l2, "dir": str(args.export_dir or out / "model")}
        (out / "probe.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
