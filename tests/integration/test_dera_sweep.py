"""DeRa lambda sweep (``rlcustom eval dera``) on tiny models.

The aligned model is the SFT model trained in-process with a few policy-gradient steps
toward a rule reward, ``token_range`` (the fraction of reply tokens with an id below ``HI``).
Decoding with ``softmax(lam * h_aligned + (1 - lam) * h_sft)`` must then move reward and KL
to the SFT model up together as lam goes 0 -> 0.5 -> 1 -> 1.5
(the paper's Figure 2: lam interpolates, lam > 1 extrapolates the alignment). Every lam
uses the same sampling seed and the same 96 samples, so the steps between lams (several
standard errors, printed on failure) are not sampling noise.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from rlcustom.cli import main
from rlcustom.engines.base import SamplingParams
from rlcustom.engines.hf import HFEngine
from rlcustom.eval.dera import load_aligned, parse_lams, sweep
from rlcustom.models.tiny import tiny_llama

LAMS = [0.0, 0.5, 1.0, 1.5]
T = 8  # reply tokens
HI = 4000  # token_range reward: ids in [0, HI) count
STEPS, LR = 4, 5e-3  # training of the aligned model (range mass ~8% -> ~30% at lam = 1)
QUESTIONS = ["What is the capital of France?", "Tell me a joke.", "How do I bake bread?", "hi",
             "Name a color.", "Count to three.", "Why is the sky blue?", "Give me a word."]


def rule_reward(ro) -> list[float]:
    return [sum(t < HI for t in r) / len(r) if r else 0.0 for r in ro.response_ids]


def _prompt_ids(tok, questions=QUESTIONS):
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _train_toward_rule(model, tok, prompt_ids, *, steps: int, n: int, lr: float):
    """Policy-gradient steps toward :func:`rule_reward` (in place). The reward is a sum over reply
    tokens of ``1[y_t < HI]``, so at each position of the model's own samples the expected reward
    is the probability mass on ids ``< HI``; each step ascends the log of that mass (the exact
    per-position expectation instead of a one-sample REINFORCE estimate: the same direction, far
    less noise, so a few steps suffice)."""
    from rlcustom.models.forward import response_logits

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    eng = HFEngine(model, tok)
    for s in range(steps):
        ro = eng.generate(prompt_ids, SamplingParams(max_new_tokens=T, n=n, seed=1000 + s, stop_on_eos=False))
        b = ro.padded(tok.pad_token_id)
        logits = response_logits(model, b).float()
        log_mass = torch.logsumexp(logits[..., :HI], -1) - torch.logsumexp(logits, -1)
        loss = -(log_mass * b["response_mask"]).sum() / b["response_mask"].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def sft_and_aligned():
    torch.manual_seed(0)
    sft, tok = tiny_llama(0, initializer_range=0.2)
    aligned = _train_toward_rule(copy.deepcopy(sft), tok, _prompt_ids(tok)[:4], steps=STEPS, n=4, lr=LR)
    return sft, aligned, tok


def test_reward_and_kl_rise_with_lambda(sft_and_aligned):
    sft, aligned, tok = sft_and_aligned
    params = SamplingParams(max_new_tokens=T, n=12, seed=7, stop_on_eos=False)
    sw = sweep(sft, tok, _prompt_ids(tok), params, LAMS, kind="two_model", aligned_model=aligned,
               score=rule_reward)
    rows = sw["results"]
    assert [r["lam"] for r in rows] == LAMS and all(r["samples"] == 96 for r in rows)
    table = "\n".join(f"lam={r['lam']}: reward {r['reward']:.4f} +- {r['reward_sem']:.4f}, kl {r['kl']:.3f} "
                      f"+- {r['kl_sem']:.3f}, tokenwise {r['kl_tokenwise']:.3f}" for r in rows)
    # lam = 0 is the SFT model itself: KL exactly 0 per position, ~0 per sample (float rounding)
    assert rows[0]["kl_tokenwise"] == 0.0 and abs(rows[0]["kl"]) < 1e-4, table
    for a, b in zip(rows, rows[1:]):
        assert b["reward"] > a["reward"], table
        assert b["kl"] > a["kl"], table
        assert b["kl_tokenwise"] > a["kl_tokenwise"], table


def test_kl_recorder_matches_teacher_forced_logprobs(sft_and_aligned):
    """The KL recorded while decoding = log pi_lam - log pi_sft recomputed by full forwards."""
    from rlcustom.algos.dera import dera_logits
    from rlcustom.decoding.dera import DeRaStep
    from rlcustom.eval.dera_kl import decode_with_kl as _decode
    from rlcustom.models.forward import response_logits

    sft, aligned, tok = sft_and_aligned
    ids = _prompt_ids(tok)[:3]
    params = SamplingParams(max_new_tokens=6, n=2, seed=3)  # stop_on_eos: rows of different lengths allowed
    eng = HFEngine(sft, tok, batch_size=4)  # two chunks: the recorders are matched to rows in order
    ro, k1, tw = _decode(eng, ids, params, lambda: DeRaStep(sft, [aligned], 1.5), 0)
    b = ro.padded(tok.pad_token_id)
    with torch.no_grad():
        h_s, h_a = response_logits(sft, b).float(), response_logits(aligned, b).float()
    lp_lam = torch.log_softmax(dera_logits(h_s, h_a, 1.5), -1)
    lp_sft = torch.log_softmax(h_s, -1)
    P, m = int(b["prompt_len"]), b["response_mask"]
    y = b["input_ids"][:, P : P + m.shape[1]].unsqueeze(-1)
    want_k1 = ((lp_lam.gather(-1, y) - lp_sft.gather(-1, y)).squeeze(-1) * m).sum(1)
    want_tw = ((lp_lam.exp() * (lp_lam - lp_sft)).sum(-1) * m).sum(1)
    torch.testing.assert_close(k1.float(), want_k1, atol=2e-3, rtol=1e-4)
    torch.testing.assert_close(tw.float(), want_tw, atol=2e-3, rtol=1e-4)


def test_adapter_from_lora_checkpoint(sft_and_aligned, tmp_path):
    """--adapter also takes a LoRA learner checkpoint (learner.json + model.safetensors, peft names)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from rlcustom.config import LoraConfig as RLLora

    sft, _, tok = sft_and_aligned
    pm = get_peft_model(copy.deepcopy(sft), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    ck = tmp_path / "checkpoints" / "step_000003" / "learner"
    ck.mkdir(parents=True)
    (ck / "learner.json").write_text(json.dumps({"lora": True}))
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(pm).items()}, str(ck / "model.safetensors"))
    (tmp_path / "checkpoints" / "latest").write_text("step_000003")
    kind, got = load_aligned(sft, aligned=None, adapter=str(tmp_path),
                             lora_cfg=RLLora(r=4, alpha=8.0, target_modules=("q_proj", "v_proj")))
    assert kind == "lora"
    x = torch.tensor([_prompt_ids(tok)[0]])
    with torch.no_grad():
        torch.testing.assert_close(got(input_ids=x).logits, pm.eval()(input_ids=x).logits)


def test_parse_lams():
    assert parse_lams("0, 0.5,1,1.5,-1,10") == [0.0, 0.5, 1.0, 1.5, -1.0, 10.0]


def _peft_adapter_dir(path):
    from peft import LoraConfig, get_peft_model

    from rlcustom.models.loading import load_causal_lm

    pm = get_peft_model(load_causal_lm(path.parent / "model"), LoraConfig(r=4, lora_alpha=8,
                                                                         target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    pm.save_pretrained(path)
    return path


def test_cli_eval_dera_writes_json(tmp_path, capsys):
    from rlcustom.models.tiny import save_tiny

    save_tiny(tmp_path / "model", seed=0, initializer_range=0.2)
    adapter = _peft_adapter_dir(tmp_path / "adapter")
    out = tmp_path / "sweep" / "dera.json"
    rc = main(["eval", "dera", f"model.path={tmp_path / 'model'}", "reward.spec=token_range", "reward.kwargs.hi=4000",
               "sampling.max_new_tokens=4", "sampling.n=2", f"output_dir={tmp_path}", "--adapter", str(adapter),
               "--lams", "0,1,2", "--interp", "--limit", "3", "--samples", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert {"sft", "adapter", "path", "lams", "reward", "sampling", "results", "samples", "plot"} <= set(res)
    assert res["path"] == "lora" and res["lams"] == [0.0, 1.0, 2.0]
    rows = res["results"]
    assert [(r["variant"], r["lam"]) for r in rows] == [("dera", 0.0), ("dera", 1.0), ("dera", 2.0),
                                                         ("interp", 0.0), ("interp", 1.0), ("interp", 2.0)]
    for r in rows:
        assert {"reward", "reward_sem", "kl", "kl_sem", "kl_tokenwise", "length", "samples", "seconds"} <= set(r)
        assert r["samples"] == 6 and 0.0 <= r["reward"] <= 1.0
    assert abs(rows[0]["kl"]) < 1e-4 and abs(rows[3]["kl"]) < 1e-4  # lam = 0 is the SFT model in both variants
    assert rows[0]["reward"] == rows[3]["reward"]  # same seed, same model -> same samples
    assert rows[2]["kl_tokenwise"] > rows[1]["kl_tokenwise"] > 0
    assert len(res["samples"]) == 2 and len(res["samples"][0]["completions"]) == 6
    assert res["plot"] and (tmp_path / "sweep").joinpath(res["plot"].split("/")[-1]).is_file()
    assert "dera   lam=2" in capsys.readouterr().out
    lines = (tmp_path / "sweep" / "dera.samples.jsonl").read_text().splitlines()
    assert len(lines) == 36 and {"variant", "lam", "text", "reward", "kl", "response_ids"} <= set(json.loads(lines[0]))
    # --rescore: the same samples scored with another reward, no decoding; KL unchanged
    rc = main(["eval", "dera", f"model.path={tmp_path / 'model'}", "reward.spec=length_tokens",
               f"output_dir={tmp_path}", "--rescore", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res2 = json.loads(out.read_text())
    assert res2["previous_reward"]["spec"] == "token_range" and res2["reward"]["spec"] == "length_tokens"
    for a, b in zip(rows, res2["results"]):
        assert b["kl"] == a["kl"] and b["reward"] == pytest.approx(a["length"])


@pytest.mark.parametrize("argv, msg", [
    (["--aligned", "x", "--lams", "0,a,1"], "--lams: 'a' is not a number"),
    (["--lams", "0,1"], "needs --aligned PATH"),
    (["--aligned", "/nonexistent/model", "--lams", "0,1"], "--aligned: /nonexistent/model: no such model"),
    (["--adapter", "/nonexistent/adapter"], "--adapter /nonexistent/adapter: no such directory"),
])
def test_cli_errors_are_one_line(tiny_dir, tmp_path, capsys, argv, msg):
    rc = main(["eval", "dera", f"model.path={tiny_dir}", f"output_dir={tmp_path}", "--limit", "1"] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "dera.json").exists()
