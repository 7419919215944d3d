"""`rlcustom eval qadapter` (rlcustom/eval/qadapter_run.py): per-row scores against direct full forwards,
the accuracy / forgetting arithmetic on hand-made tensors, the command end to end on a tiny model, and
the comparison table of benchmarks/qadapter_135m.sh."""
import json
import math

import pytest
import torch

from rlcustom.errors import ConfigError
from rlcustom.eval.qadapter_run import forgetting_metrics, pair_metrics, run, score_rows

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
PROMPTS = ["Hello there, how", "The sea is"]
REPLIES = ["are you today?", "blue and deep"]


def _direct_logps(model, tok, prompt, reply):
    """log-probs of the reply tokens (+ EOS) from one plain forward of the unpadded row."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    logits = model(torch.tensor([p + c])).logits[0].float()
    lp = torch.log_softmax(logits[len(p) - 1 : len(p) + len(c) - 1], -1)
    return lp.gather(-1, torch.tensor(c).unsqueeze(-1)).squeeze(-1), logits[len(p) - 1 : len(p) + len(c) - 1], c


@torch.no_grad()
def test_lm_scores_match_direct_forwards():
    """kind=lm: logp / logp_base are the summed reply log-probs of the policy / pi_1 (padding in the batch
    changes nothing); tokens count the reply + EOS. Tolerance 1e-4 (float32, padded vs unpadded)."""
    from rlcustom.models.tiny import tiny_llama

    base, tok = tiny_llama(0)
    pol, _ = tiny_llama(1)
    s = score_rows("lm", pol, base, tok, PROMPTS, REPLIES, max_prompt_tokens=64, max_completion_tokens=64)
    for i, (p, r) in enumerate(zip(PROMPTS, REPLIES)):
        lp, _, c = _direct_logps(pol, tok, p, r)
        lb, _, _ = _direct_logps(base, tok, p, r)
        assert float(s["logp"][i]) == pytest.approx(float(lp.sum()), abs=1e-4)
        assert float(s["logp_base"][i]) == pytest.approx(float(lb.sum()), abs=1e-4)
        assert int(s["tokens"][i]) == len(c)
    same = score_rows("base", base, None, tok, PROMPTS, REPLIES)
    assert torch.equal(same["logp"], same["logp_base"]) and "residual" not in same


@torch.no_grad()
def test_qadapter_scores_match_eq9_and_eq4():
    """kind=qadapter: residual == eval_qadapter.implicit_rewards (sum of Eq. 9's r_t); logp is the reply's
    log-likelihood under pi~ = softmax((Q + alpha0 log pi_1) / alpha) (Eq. 4), computed here by hand."""
    from peft import LoraConfig, get_peft_model

    from rlcustom.eval.qadapter import implicit_rewards
    from rlcustom.models.tiny import tiny_llama

    base, tok = tiny_llama(0, initializer_range=0.2)
    pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    g = torch.Generator().manual_seed(1)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    kw = dict(alpha=0.7, alpha0=0.05, gamma=1.0)
    s = score_rows("qadapter", pm, None, tok, PROMPTS, REPLIES, **kw)
    want = implicit_rewards(pm, tok, PROMPTS, REPLIES, **kw)
    assert torch.allclose(s["residual"], want, atol=1e-4)
    for i, (p, r) in enumerate(zip(PROMPTS, REPLIES)):
        _, q, c = _direct_logps(pm, tok, p, r)
        with pm.disable_adapter():
            lb, bl, _ = _direct_logps(pm, tok, p, r)
        pol = torch.log_softmax((q + 0.05 * torch.log_softmax(bl, -1)) / 0.7, -1)
        assert float(s["logp"][i]) == pytest.approx(float(pol.gather(-1, torch.tensor(c)[:, None]).sum()), abs=1e-4)
        assert float(s["logp_base"][i]) == pytest.approx(float(lb.sum()), abs=1e-4)
    with pytest.raises(ValueError, match="kind must be"):
        score_rows("dpo", pm, None, tok, PROMPTS, REPLIES)


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_pair_metrics_hand_computed():
    """lm: implicit reward = logp - logp_base; chosen 1, 0, 2, 1 vs rejected 0, 0, 3, 0 -> win, tie (1/2),
    loss, win = 0.625, se sqrt(.625 * .375 / 4). log pi summed: 3, 1, 5, 2 vs 1, 1, 4, 9 -> win, tie, win,
    loss = 0.625; per token (tokens 1, 1, 5, 1 vs 1, 1, 1, 3): 3, 1, 1, 2 vs 1, 1, 4, 3 -> win, tie, loss,
    loss = 0.375."""
    ch = {"logp": _t(3, 1, 5, 2), "logp_base": _t(2, 1, 3, 1), "tokens": _t(1, 1, 5, 1)}
    rj = {"logp": _t(1, 1, 4, 9), "logp_base": _t(1, 1, 1, 9), "tokens": _t(1, 1, 1, 3)}
    m = pair_metrics("lm", ch, rj)
    assert m["implicit_reward"] == "dpo" and m["pairs"] == 4 and m["ties"] == 1
    assert m["accuracy"] == 0.625 and m["accuracy_se"] == pytest.approx(math.sqrt(0.625 * 0.375 / 4))
    assert m["margin"] == pytest.approx((1 + 0 - 1 + 1) / 4)
    assert m["accuracy_logp_sum"] == 0.625
    assert m["accuracy_logp_mean"] == 0.375
    b = pair_metrics("base", ch, rj)
    assert b["accuracy"] is None and b["accuracy_logp_sum"] == 0.625
    q = pair_metrics("qadapter", dict(ch, residual=_t(0, 0, 0, 1)), dict(rj, residual=_t(1, 1, 1, 0)))
    assert q["implicit_reward"] == "residual" and q["accuracy"] == 0.25


def test_forgetting_metrics_hand_computed():
    """Rows 0-1 replayed, 2-4 not. NLL differences (logp_base - logp): rows 2-4: 3, 0, 6 over 1, 2, 3 tokens
    -> token-weighted 9 / 6 = 1.5; per-row 3, 0, 2 -> se = std(3, 0, 2) / sqrt 3."""
    s = {"logp": _t(-1, -2, -5, -4, -9), "logp_base": _t(-1, -1, -2, -4, -3), "tokens": _t(1, 1, 1, 2, 3)}
    m = forgetting_metrics(s, replayed=2)
    assert m["forgetting"] == pytest.approx(1.5) and m["forgetting_prompts"] == 3
    assert m["forgetting_se"] == pytest.approx(float(_t(3, 0, 2).std()) / math.sqrt(3))
    assert m["nll_base"] == pytest.approx(9 / 6) and m["nll_model"] == pytest.approx(18 / 6)
    assert m["forgetting_replayed"] == pytest.approx(0.5)
    none = forgetting_metrics(s, replayed=0)
    assert none["forgetting_replayed"] is None and none["forgetting"] == pytest.approx(10 / 8)


def _cfg(model_dir, out_dir):
    from rlcustom.config import load_config

    return load_config("configs/qadapter.yaml", [f"model.path={model_dir}", f"output_dir={out_dir}",
                                                 "data.max_prompt_tokens=24", "algo.max_completion_tokens=8"])


def test_run_end_to_end_on_tiny_model(tiny_dir, tmp_path):
    """pi_1 against itself: forgetting exactly 0 and no implicit-reward accuracy; a model given as --policy
    that IS pi_1: every implicit reward is 0, so every pair ties (0.5). Original-task answers are cached once."""
    cfg = _cfg(tiny_dir, tmp_path)
    kw = dict(pairs=6, replayed=4, new_tokens=4, original=tmp_path / "orig.jsonl")
    b = run(cfg, out=tmp_path / "base.json", **kw)
    m = b["metrics"]
    assert b["method"] == "base" and m["accuracy"] is None and m["pairs"] == 6
    assert m["forgetting"] == 0.0 and m["forgetting_replayed"] == 0.0 and m["forgetting_prompts"] == 12
    assert 0 <= m["accuracy_logp_sum"] <= 1
    assert json.loads((tmp_path / "base.json").read_text())["settings"]["pairs"] == 6
    rows = [json.loads(x) for x in (tmp_path / "orig.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["max_new_tokens"] == 4 for r in rows)
    same = run(cfg, policy=str(tiny_dir), **kw)["metrics"]
    assert same["accuracy"] == 0.5 and same["ties"] == 6 and same["forgetting"] == pytest.approx(0.0, abs=1e-6)


def test_run_rejects_bad_input(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        run(cfg, adapter=str(tmp_path), policy=str(tmp_path))
    with pytest.raises(ConfigError, match="--adapter .*nope: no such directory"):
        run(cfg, adapter=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="--replayed must be in"):
        run(cfg, replayed=17)


def test_cli_eval_qadapter(tiny_dir, tmp_path, capsys):
    from rlcustom.cli import main

    out = tmp_path / "e.json"
    rc = main(["eval", "qadapter", "configs/qadapter.yaml", f"model.path={tiny_dir}", f"output_dir={tmp_path}",
               "data.max_prompt_tokens=24", "algo.max_completion_tokens=8", "--pairs", "2", "--new-tokens", "3",
               "--replayed", "0", "--out", str(out)])
    assert rc == 0 and json.loads(out.read_text())["metrics"]["forgetting"] == 0.0
    assert (tmp_path / "original_task_3.jsonl").is_file() and f"wrote {out}" in capsys.readouterr().out


def test_comparison_table(tmp_path, capsys):
    """The script's table: numbers as recorded, a missing method listed as missing, nothing written when
    no run exists (so `rlcustom bench all` cannot erase recorded results)."""
    from rlcustom.cli import main as cli

    def main(argv):  # as `rlcustom bench qadapter_135m_table ...` runs it
        return cli(["bench", "qadapter_135m_table", *argv])

    assert main(["--runs", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 0
    assert not (tmp_path / "r.json").exists()
    rec = {"metrics": {"accuracy": 0.6, "accuracy_se": 0.05, "pairs": 100, "accuracy_logp_sum": 0.4,
                       "accuracy_logp_sum_se": 0.049, "accuracy_logp_mean": 0.5, "accuracy_logp_mean_se": 0.05,
                       "forgetting": 0.0123, "forgetting_se": 0.004, "forgetting_replayed": None,
                       "forgetting_replayed_se": None}}
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "eval.json").write_text(json.dumps(rec))
    assert main(["--runs", str(tmp_path), "--out", str(tmp_path / "r.json"), "--settings", "STEPS=1"]) == 0
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["missing"] == ["base", "qadapter", "sft", "replay"] and got["settings"] == "STEPS=1"
    assert "| DPO | 0.600 ± 0.050 (100) | 0.400 ± 0.049 | 0.500 ± 0.050 | 0.0123 ± 0.0040 | — |" in got["table"]
    assert "| Q-Adapter | missing |" in capsys.readouterr().out
