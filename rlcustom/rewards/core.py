"""Python reward functions: small, readable rules a config names by string.

A reward function scores one sample::

    fn(prompt: str, completion: str, *, response_ids: list[int], **row_fields, **kwargs) -> float

``prompt``/``completion`` are text; ``response_ids`` are the generated token ids
(the EOS token included when the sample stopped on it); ``row_fields`` are the prompt
record's other columns (``answer``, ``tests``, ...: those the function names, or all of
them if it takes ``**kwargs``; see :mod:`rlcustom.rewards.signature`); ``kwargs`` come
from the config (``reward.kwargs``) and win on a clash. The built-in rules declare their keyword arguments
explicitly, so a misspelt kwarg fails loudly (as a :class:`RewardFunctionError`
naming the function and the sample) instead of being ignored.

Add your own either by registering it::

    from rlcustom.registry import REWARDS

    @REWARDS.register("my_reward")
    def my_reward(prompt, completion, *, response_ids, **kw) -> float: ...

or by naming it in a config as ``"my_package.my_module:my_reward"``
(:func:`resolve_reward`). Model rewards (a Bradley-Terry reward model, the
length-normalised log-likelihood of L3M) and HTTP endpoints are served by
:class:`rlcustom.actors.reward.RewardActor` (``actors/reward.py`` in the repository).
"""
from __future__ import annotations

import importlib
import math
import re
from typing import Any, Callable, Mapping, Sequence

from rlcustom.errors import NonFiniteError, RLCustomError
from rlcustom.registry import REWARDS

__all__ = [
    "RewardFunctionError", "NonFiniteRewardError", "RewardSpecError", "resolve_reward", "apply_reward",
    "check_reward_value", "prompt_snippet",
    "length_tokens", "length_words", "count_token", "contains", "politeness", "no_refusal",
]

RewardFn = Callable[..., float]


class RewardFunctionError(RLCustomError, RuntimeError):
    """A reward raised or returned something that is not a finite number; names the reward and the sample."""


class NonFiniteRewardError(RewardFunctionError, NonFiniteError):
    """A reward returned NaN/inf. The trainer skips that step (no update) and counts it in
    ``skipped/nonfinite_reward``; ``optim.max_consecutive_nonfinite`` such steps in a row stop the run."""


class RewardSpecError(RLCustomError, ValueError):
    """A reward spec names nothing that can be found or imported; names the spec."""


# --------------------------------------------------------------------------- resolution


def resolve_reward(spec: str | RewardFn) -> RewardFn:
    """A reward function from a registered name (``"length_tokens"``) or ``"module.path:function"``.

    ``function`` may be dotted (``"pkg.mod:Class.method"``). A callable is returned
    unchanged. Errors are :class:`RewardSpecError` naming ``spec``.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise RewardSpecError(f"reward spec must be a registered name or 'module.path:function', got {spec!r}")
    spec = spec.strip()
    if spec in REWARDS:
        return REWARDS.get(spec)
    if ":" not in spec:
        try:
            REWARDS.get(spec)  # for the close-match hint
        except KeyError as e:
            raise RewardSpecError(f"reward {spec!r}: {e.args[0]}; or give 'module.path:function'") from None
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise RewardSpecError(f"reward {spec!r}: expected 'module.path:function'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any import failure (even sys.exit) is reported the same way
        raise RewardSpecError(f"reward {spec!r}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RewardSpecError(f"reward {spec!r}: module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise RewardSpecError(f"reward {spec!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def reward_name(spec: str | RewardFn) -> str:
    if isinstance(spec, str):
        return spec
    return getattr(spec, "__qualname__", None) or getattr(spec, "__name__", None) or repr(spec)


def prompt_snippet(prompt: Any, n: int = 60) -> str:
    """The prompt's last ``n`` characters on one line (its end is what differs between chat prompts)."""
    text = " ".join(str(prompt).split())
    return repr(text if len(text) <= n else "..." + text[-n:])


def check_reward_value(value: Any, name: str, index: int, prompt: Any = None) -> float:
    """``float(value)``; a non-number is a :class:`RewardFunctionError`, NaN/inf a
    :class:`NonFiniteRewardError`, both naming the reward and the sample (and its prompt, when given)."""
    where = f" (prompt {prompt_snippet(prompt)})" if prompt is not None else ""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (str, bytes)):  # float("0.5") would pass: a string is not a reward, whatever it says
        raise RewardFunctionError(
            f"reward {name!r} failed on sample {index}: returned {value!r} ({type(value).__name__}), "
            f"expected a number{where}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise RewardFunctionError(
            f"reward {name!r} failed on sample {index}: returned {value!r} ({type(value).__name__}), "
            f"expected a number{where}") from None
    if not math.isfinite(out):
        raise NonFiniteRewardError(
            f"reward {name!r} failed on sample {index}: returned non-finite value {out} (rewards must be finite)"
            f"{where}")
    return out


def apply_reward(
    spec: str | RewardFn,
    prompts: Sequence[str],
    completions: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    kwargs: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    fields: Sequence[Mapping[str, Any]] | None = None,
    info: list | None = None,
) -> list[float]:
    """Score each sample with one reward function; errors name the reward and the sample index.

    An exception inside the function becomes ``reward 'NAME' failed on sample I:
    ExcType: message (prompt '...end of the prompt')`` (the original is chained as
    ``__cause__``); a non-numeric return value is reported the same way, a NaN/inf one
    as :class:`NonFiniteRewardError` (the trainer skips that step).
    """
    fn = resolve_reward(spec)
    name = name or reward_name(spec)
    if not (len(prompts) == len(completions) == len(response_ids)):
        raise ValueError(f"reward {name!r}: got {len(prompts)} prompts, {len(completions)} completions and "
                         f"{len(response_ids)} response_ids; they must be equally long")
    from rlcustom.rewards.signature import accepted_fields, call_kwargs

    kw, accepted = dict(kwargs or {}), accepted_fields(fn)
    out: list[float] = []
    for i, (p, c, ids) in enumerate(zip(prompts, completions, response_ids)):
        try:  # the sample's row fields (answer, tests, ...) that fn names, then the config's kwargs
            value = fn(p, c, response_ids=list(ids), **call_kwargs(accepted, fields[i] if fields else None, kw))
        except RewardFunctionError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as e:  # noqa: BLE001 - user code: any failure, even
            # sys.exit() or a stray KeyboardInterrupt, is this reward's failure on this sample (not a dead actor)
            msg = str(e).splitlines()[0] if str(e) else ""
            raise RewardFunctionError(f"reward {name!r} failed on sample {i}: {type(e).__name__}: {msg} "
                                      f"(prompt {prompt_snippet(p)})") from e
        out.append(check_reward_value(value, name, i, p))
        if info is not None:  # why a verifiable reward scored what it did, a composite's parts (Scored)
            info.append((getattr(value, "reason", None), getattr(value, "parts", None)))
    return out


# --------------------------------------------------------------------------- rule rewards


@REWARDS.register("length_tokens")
def length_tokens(prompt: str, completion: str, *, response_ids: Sequence[int], scale: float = 1.0) -> float:
    """``scale * |y|``: the number of response tokens (EOS included when the sample stopped on it).

    L3M's length constraints (Sec. 6.2) are ``r_1 = |y| >= l_low`` and
    ``r_2 = -|y| >= -l_high``: use ``scale=-1`` for the second.
    """
    return float(scale) * len(response_ids)


@REWARDS.register("length_words")
def length_words(prompt: str, completion: str, *, response_ids: Sequence[int] = (), scale: float = 1.0) -> float:
    """``scale *`` the number of whitespace-separated words of the completion."""
    return float(scale) * len(completion.split())


@REWARDS.register("count_token")
def count_token(prompt: str, completion: str, *, response_ids: Sequence[int], token_id: int | Sequence[int]) -> float:
    """How many times ``token_id`` (or any of a list of ids) occurs in ``response_ids``."""
    ids = {int(token_id)} if isinstance(token_id, (int, float)) else {int(t) for t in token_id}
    return float(sum(1 for t in response_ids if t in ids))


@REWARDS.register("target_length")
def target_length(prompt: str, completion: str, *, response_ids: Sequence[int] = (), target: int = 20,
                  unit: str = "words") -> float:
    """1 at exactly ``target`` words (or tokens), falling linearly to 0 at 0 or 2x target: "answer in about N words"."""
    n = len(response_ids) if unit == "tokens" else len(completion.split())
    return max(0.0, 1.0 - abs(n - target) / target)


@REWARDS.register("token_range")
def token_range(prompt: str, completion: str, *, response_ids: Sequence[int], lo: int = 0, hi: int = 1000) -> float:
    """Fraction of response tokens whose id is in ``[lo, hi)`` (0 for an empty response).

    With a BPE vocabulary ordered by merge frequency, low ids are short, common pieces: a dense
    signal even for an untrained model, which is why the integration tests use it.
    """
    if not response_ids:
        return 0.0
    return sum(lo <= t < hi for t in response_ids) / len(response_ids)


@REWARDS.register("contains")
def contains(prompt: str, completion: str, *, response_ids: Sequence[int] = (), text: str,
             case_sensitive: bool = True) -> float:
    """1.0 if ``text`` occurs in the completion, else 0.0."""
    if not case_sensitive:
        return float(text.lower() in completion.lower())
    return float(text in completion)


POLITE_PHRASES = ("please", "thank you", "thanks", "sorry", "appreciate", "kindly", "you're welcome",
                  "you are welcome", "excuse me", "pardon")
_POLITE_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p in POLITE_PHRASES) + r")\b", re.IGNORECASE)


@REWARDS.register("politeness")
def politeness(prompt: str, completion: str, *, response_ids: Sequence[int] = (), cap: int | None = None) -> float:
    """Number of polite phrases in the completion (whole words, case-insensitive; see ``POLITE_PHRASES``),
    at most ``cap`` when given. "Thank you, thanks!" scores 2."""
    n = len(_POLITE_RE.findall(completion))
    return float(n if cap is None else min(n, int(cap)))


REFUSAL_PHRASES = ("i can't", "i cannot", "i can not", "i won't", "i will not", "i'm not able to",
                   "i am not able to", "i'm unable to", "i am unable to", "as an ai", "i'm sorry, but",
                   "i am sorry, but")


def _normalise_quotes(s: str) -> str:
    return s.replace("\u2019", "'").replace("\u2018", "'")


@REWARDS.register("no_refusal")
def no_refusal(prompt: str, completion: str, *, response_ids: Sequence[int] = ()) -> float:
    """1.0 unless the completion contains a refusal phrase (``REFUSAL_PHRASES``, case-insensitive), else 0.0."""
    c = _normalise_quotes(completion).lower()
    return 0.0 if any(p in c for p in REFUSAL_PHRASES) else 1.0
