"""``rlcustom generate`` with guided decoders (``--decoder vas|dera|...`` and the config's ``decoder:``
section) on tiny models: JSONL out, beta = 0 is plain greedy token for token, flags override the
config, one-line errors that name the key, per-request betas through :class:`GuidedDecoder`."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from rlcustom.cli import main
from rlcustom.config import DecoderConfig, from_dict, load_config, to_dict
from rlcustom.errors import ConfigError

QS = ["Say hi.", "Name a color.", "Count to three.", "What is rain?"]


@pytest.fixture(scope="module")
def value_dir(tmp_path_factory):
    """A ValueModel with a random head (values ~ +-5) on a tiny backbone sharing the tiny model's vocabulary."""
    from rlcustom.models.heads import ValueModel
    from rlcustom.models.tiny import tiny_llama

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("value") / "value"
    ValueModel.from_backbone_of(tiny_llama(1, initializer_range=0.2)[0], init_std=0.5).save(path)
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    p = tmp_path_factory.mktemp("gen_prompts") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QS))
    return p


@pytest.fixture(scope="module")
def gen(tiny_dir, prompts, tmp_path_factory):
    """Run ``rlcustom generate`` greedily on the tiny model; returns the JSONL rows."""
    tmp_path = tmp_path_factory.mktemp("gen")

    def run(*extra, config=None, greedy=True):
        out = tmp_path / f"gens{len(list(tmp_path.glob('gens*')))}.jsonl"
        args = ["generate"] + ([str(config)] if config else []) + [
            f"model.path={tiny_dir}", f"data.prompts={prompts}", "data.split=all", "engine=hf", "seed=0",
            "--max-new-tokens", "8", "--out", str(out), f"output_dir={tmp_path / 'run'}", "tracking.mode=disabled"]
        if greedy:
            args += ["--temperature", "0"]
        assert main(args + list(extra)) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]
    return run


@pytest.fixture(scope="module")
def plain(gen):
    """Plain greedy generations (no decoder)."""
    return _tokens(gen())


def _tokens(rows):
    return [(r["prompt_index"], r["completion"], r["num_tokens"]) for r in rows]


def test_vas_writes_jsonl_and_beta0_is_plain_greedy(gen, plain, value_dir, capsys):
    capsys.readouterr()
    vas0 = gen("--decoder", "vas", "--value", str(value_dir), "--beta", "0", "--topk", "20")
    assert "decoder: vas (beta 0, top-k 20" in capsys.readouterr().out
    assert len(vas0) == len(QS) and {r["prompt"] for r in vas0} == set(QS)
    assert _tokens(vas0) == plain
    # composition through repeated flags: two value models at beta 0 are still pi_0
    assert _tokens(gen("--decoder", "vas", "--value", str(value_dir), "--value", str(value_dir),
                       "--beta", "0", "--beta", "0")) == plain
    # a strong value does steer (so the equalities above are not vacuous)
    assert _tokens(gen("--decoder", "vas", "--value", str(value_dir), "--beta", "5")) != plain


def test_config_section_and_flags_override_it(gen, plain, value_dir, tmp_path):
    cfg = tmp_path / "gen_vas.yaml"
    cfg.write_text(yaml.safe_dump({"decoder": {"name": "vas", "value": [str(value_dir)], "beta": [5.0], "topk": 20}}))
    steered = gen(config=cfg)
    assert _tokens(steered) != plain
    assert _tokens(gen("decoder.beta=[0]", config=cfg)) == plain  # dotted override
    assert _tokens(gen("--beta", "0", config=cfg)) == plain  # the flag wins over the file
    assert _tokens(gen("decoder=null", config=cfg)) == plain  # the whole section off
    # the override form of the brief: decoder.name=vas decoder.value=[DIR] decoder.beta=[5]
    assert _tokens(gen("decoder.name=vas", f"decoder.value=[{value_dir}]", "decoder.beta=[5]")) == _tokens(steered)


def test_dera_flag_form(gen, plain, tiny_dir):
    # DeRa at lambda 0 is the base model; the aligned model is the same tiny model here
    assert _tokens(gen("--decoder", "dera", "--aligned", str(tiny_dir), "--lam", "0")) == plain


def test_decoder_section_round_trips_and_checks_values(value_dir):
    cfg = load_config(None, ["decoder.name=vas", f"decoder.value=[{value_dir}, {value_dir}]", "decoder.beta=[1, 2.5]",
                             "decoder.topk=7", "decoder.mode=expand"])
    d = cfg.decoder
    assert d == DecoderConfig.of("vas", value=(str(value_dir),) * 2, beta=(1.0, 2.5), topk=7, mode="expand")
    assert type(d).__name__ == "VASOptions"  # the vas decoder's own options class
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))).decoder == d
    assert d.options() == {"value": [str(value_dir)] * 2, "beta": [1.0, 2.5], "topk": 7, "mode": "expand"}
    assert load_config(None, ["decoder.name=vas", "decoder.value=v", "decoder.beta=2"]).decoder.beta == (2.0,)
    with pytest.raises(ConfigError, match=r"key 'decoder.beta' must be a number"):
        load_config(None, ["decoder.name=vas", "decoder.value=v", "decoder.beta=abc"])
    with pytest.raises(ConfigError, match=r"key 'decoder.topk' must be > 0"):
        load_config(None, ["decoder.topk=0"])
    with pytest.raises(ConfigError, match=r"key 'decoder.name' must be one of"):
        load_config(None, ["decoder.name=vass"])
    with pytest.raises(ValueError, match=r"decoder.beta has 1 entries but decoder.value has 2"):
        DecoderConfig.of("vas", value=("a", "b"), beta=(1.0,)).check()
    with pytest.raises(ValueError, match=r"decoder.lam is not used by decoder.name=vas"):
        DecoderConfig.of("vas", value=("a",), lam=(1.0,)).check()
    with pytest.raises(ValueError, match=r"decoder.value is set but decoder.name is not"):
        DecoderConfig.of(value=("a",)).check()


@pytest.mark.parametrize("extra,needle", [
    (["--topk", "100000"], "decoder.topk must be in [1, "),
    (["--beta", "abc"], "key 'decoder.beta' must be a number"),
    (["--value", "{v}", "--beta", "1"], "decoder.beta has 1 entries but decoder.value has 2"),
    (["engine=vllm"], "runs on the hf engine"),
    (["--value", "{missing}"], "decoder.value[1]: "),
])
def test_bad_decoder_input_is_one_line_naming_the_key(extra, needle, tiny_dir, prompts, value_dir, tmp_path, capsys):
    missing = tmp_path / "nope"
    extra = [e.format(v=value_dir, missing=missing) for e in extra]
    out = tmp_path / "gens.jsonl"
    rc = main(["generate", f"model.path={tiny_dir}", f"data.prompts={prompts}", "data.split=all",
               "--max-new-tokens", "2", "--out", str(out), f"output_dir={tmp_path / 'run'}", "tracking.mode=disabled",
               "--decoder", "vas", "--value", str(value_dir)] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_missing_adapter_names_the_key(tiny_dir, prompts, tmp_path, capsys):
    rc = main(["generate", f"model.path={tiny_dir}", f"data.prompts={prompts}", "data.split=all",
               "--decoder", "qadapter", "--adapter", str(tmp_path / "no_adapter"), "tracking.mode=disabled"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "decoder.adapter: " in err[0] and "no such directory" in err[0], err


def test_per_request_beta(tiny, value_dir):
    from rlcustom.decoding.registry_cli import GuidedDecoder
    from rlcustom.engines.base import SamplingParams
    from rlcustom.engines.hf import HFEngine

    model, tok = tiny
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QS]
    eng = HFEngine(model, tok)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    g = GuidedDecoder("vas", {"value": [str(value_dir)], "beta": [5.0]}, model, tok)
    plain = eng.generate(prompts, greedy).response_ids
    steered = eng.generate(prompts, greedy, decoder=g.factory()).response_ids
    assert eng.generate(prompts, greedy, decoder=g.factory(beta=[0.0])).response_ids == plain  # per call
    mixed = eng.generate(prompts, greedy, decoder=g.factory(beta=[torch.tensor([0.0, 5.0, 0.0, 5.0])])).response_ids
    assert [mixed[0], mixed[2]] == [plain[0], plain[2]] and [mixed[1], mixed[3]] == [steered[1], steered[3]]
    assert steered != plain


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory):
    """A LoRA adapter over the tiny model with random B (a zero-B adapter would be the base model)."""
    from peft import LoraConfig, get_peft_model

    from rlcustom.models.loading import load_causal_lm

    pm = get_peft_model(load_causal_lm(str(tiny_dir)), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    pm.save_pretrained(path)
    return path


def test_dera_lora_flag_form(gen, plain, adapter_dir):
    # lambda 0 is the base model; lambda 1 the adapted one (which decodes differently)
    assert _tokens(gen("--decoder", "dera_lora", "--adapter", str(adapter_dir), "--lam", "0")) == plain
    assert _tokens(gen("--decoder", "dera_lora", "--adapter", str(adapter_dir), "--lam", "1")) != plain
