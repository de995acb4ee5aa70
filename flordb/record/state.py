"""Capture, serialize and restore the state of checkpointed objects.

Three steps, so the expensive ones can leave the training thread:

``capture(objects)``   on the training thread: a consistent in-memory copy of
                       every object's state and of the RNG states. Training may
                       mutate the objects as soon as it returns.
``serialize(copy)``    anywhere (the checkpoint writer thread): bytes per name.
``restore(objects, blobs)``  loads the bytes back INTO the live objects, in
                       place, and sets the RNG states.

What is captured, by object type (first match wins):

=====================================  ===================  ==================
object                                 captured as          format
=====================================  ===================  ==================
has ``state_dict``/``load_state_dict``  state_dict, tensors   ``torch_state_dict``
(``nn.Module``, optimizers, LR           ``detach().clone()``d  (``torch.save``), or
schedulers, ...)                       (on their device),   ``pickled_state_dict``
                                       other leaves deep-   (cloudpickle) when
                                       copied               torch is absent or
                                                            cannot save it
``numpy.ndarray``                      ``arr.copy()``       ``numpy`` (``np.save``;
                                                            object arrays:
                                                            ``cloudpickle``)
anything else                          cloudpickle bytes    ``cloudpickle``
                                       right away
RNG (python, numpy legacy global,      their states         ``rng`` (JSON) under
torch CPU, torch CUDA if initialized)                       name ``__rng__``
=====================================  ===================  ==================

GPU tensors are cloned on their device (a fast device-to-device copy on the
training stream, so it is ordered before any later in-place update); the copy to
host memory happens in ``serialize`` (``torch.save`` moves them), off the
training thread. ``torch.cuda.get_rng_state_all()`` is captured only when CUDA
is already initialized: before that no CUDA random draw can have happened, and
capturing would create a CUDA context in processes that never use the GPU.

torch and numpy are used only if the user already imported them
(``sys.modules``), so importing FlorDB never pays their import time.
"""

from __future__ import annotations

import base64
import copy as _copy
import importlib
import io
import json
import pickle
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import cloudpickle

from flordb.errors import StoreError

RNG_NAME = "__rng__"

FMT_TORCH = "torch_state_dict"
FMT_PICKLED_SD = "pickled_state_dict"
FMT_NUMPY = "numpy"
FMT_PICKLE = "cloudpickle"
FMT_RNG = "rng"
FORMATS = (FMT_TORCH, FMT_PICKLED_SD, FMT_NUMPY, FMT_PICKLE, FMT_RNG)

_KIND_SD = "state_dict"  # capture kind; the format is chosen by serialize


def _imported(name: str):
    """The module if the user's process imported it, fully initialized; else None.

    Another thread of the user's may be importing it right now (FlorDB's own
    threads import nothing): ``sys.modules`` then holds a half-made module
    without ``ndarray``. ``import`` waits on that import's
    module lock, so what we return is always complete.
    """
    if name not in sys.modules:
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def _torch():
    return _imported("torch")


def _numpy():
    return _imported("numpy")


@dataclass
class StateCopy:
    """A consistent in-memory copy of registered objects and RNG states.

    ``entries`` maps object name to ``(kind, payload)``: kind is
    ``"state_dict"`` (payload: a cloned state dict), ``"numpy"`` (an array
    copy) or ``"cloudpickle"`` (bytes). ``rng`` holds the RNG states.
    """

    entries: dict[str, tuple[str, Any]] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    variables: dict | None = None  # plain variables of the main loop's frame (record/carry.py)

    def names(self) -> list[str]:
        return list(self.entries)


# --------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------
def _has_state_dict(obj: Any) -> bool:
    if isinstance(obj, type):
        return False
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def _same_layout(a: Any, b: Any) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and a.layout == b.layout
        and a.stride() == b.stride()
        and not a.requires_grad
        and not b.is_sparse
    )


def _clone_tree(obj: Any, memo: dict[Any, Any], reuse: Any = None) -> Any:
    """Deep copy of a state dict: tensors detach().clone()d (aliasing kept).

    ``reuse`` is an earlier copy of the same tree that nobody uses any more:
    its tensors are overwritten with ``copy_`` where shapes match, which avoids
    allocating (and page-faulting) fresh memory on every checkpoint.
    """
    torch = _torch()
    np = _numpy()
    if torch is not None and isinstance(obj, torch.Tensor):
        try:  # the same memory seen twice (tied weights: state_dict detaches each)
            key = (
                obj.device, obj.dtype, obj.untyped_storage().data_ptr(),
                obj.storage_offset(), tuple(obj.shape), obj.stride(),
            )
        except (RuntimeError, NotImplementedError):  # sparse etc.
            key = id(obj)
        got = memo.get(key)
        if got is None:
            if (
                isinstance(reuse, torch.Tensor)
                and ("reused", id(reuse)) not in memo
                and _same_layout(reuse, obj)
            ):
                got = reuse.copy_(obj.detach())
                memo[("reused", id(reuse))] = reuse
            else:
                got = obj.detach().clone()
            memo[key] = got
            memo[("src", id(obj))] = obj  # keep it alive so its id is not reused
        return got
    if np is not None and isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        out = obj.__class__() if type(obj) is not dict else {}
        old = reuse if isinstance(reuse, dict) else {}
        for k, v in obj.items():
            out[k] = _clone_tree(v, memo, old.get(k))
        meta = getattr(obj, "_metadata", None)  # nn.Module.state_dict() versions
        if meta is not None:
            try:
                out._metadata = _copy.deepcopy(meta)
            except AttributeError:
                pass
        return out
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        old = reuse if type(reuse) is type(obj) and len(reuse) == len(obj) else (None,) * len(obj)
        return type(obj)(_clone_tree(v, memo, o) for v, o in zip(obj, old))
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return obj
    return _copy.deepcopy(obj)


def capture_rng() -> dict[str, Any]:
    rng: dict[str, Any] = {"python": random.getstate()}
    np = _numpy()
    if np is not None:
        rng["numpy"] = np.random.get_state()
    torch = _torch()
    if torch is not None:
        rng["torch"] = torch.get_rng_state()
        cuda = getattr(torch, "cuda", None)
        if cuda is not None and cuda.is_available() and cuda.is_initialized():
            rng["cuda"] = cuda.get_rng_state_all()
    return rng


def capture_one(obj: Any, reuse: tuple[str, Any] | None = None) -> tuple[str, Any]:
    if _has_state_dict(obj):
        old = reuse[1] if reuse is not None and reuse[0] == _KIND_SD else None
        return _KIND_SD, _clone_tree(obj.state_dict(), {}, old)
    np = _numpy()
    if np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return FMT_PICKLE, cloudpickle.dumps(obj)
        return FMT_NUMPY, obj.copy()
    return FMT_PICKLE, cloudpickle.dumps(obj)


def capture(
    objects: dict[str, Any],
    *,
    on_error: Callable[[str, BaseException], None] | None = None,
    reuse: StateCopy | None = None,
) -> StateCopy:
    """Copy the state of ``objects`` and the RNG states (synchronous).

    Without ``on_error`` a failure raises; with it, the failing object is left
    out of the copy and ``on_error(name, exc)`` is called. ``reuse``: a former
    copy that is no longer needed (already serialized); its tensor buffers are
    recycled, so it must not be used afterwards.
    """
    old = reuse.entries if reuse is not None else {}
    out = StateCopy()
    for name, obj in objects.items():
        if name == RNG_NAME:
            raise StoreError(f"{RNG_NAME!r} is reserved for the RNG states")
        try:
            out.entries[name] = capture_one(obj, old.get(name))
        except Exception as e:
            if on_error is None:
                raise
            on_error(name, e)
    out.rng = capture_rng()
    return out


# --------------------------------------------------------------------------
# serialize
# --------------------------------------------------------------------------
def _torch_save(sd: Any) -> bytes:
    torch = _torch()
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def serialize_one(kind: str, payload: Any) -> tuple[str, bytes]:
    if kind == _KIND_SD:
        if _torch() is not None:
            try:
                return FMT_TORCH, _torch_save(payload)
            except Exception:
                pass  # e.g. a lambda inside: fall back to cloudpickle
        return FMT_PICKLED_SD, cloudpickle.dumps(payload)
    if kind == FMT_NUMPY:
        np = _numpy()
        buf = io.BytesIO()
        np.save(buf, payload, allow_pickle=False)
        return FMT_NUMPY, buf.getvalue()
    if kind == FMT_PICKLE:
        return FMT_PICKLE, payload
    raise StoreError(f"unknown capture kind {kind!r}")


def serialize_rng(rng: dict[str, Any]) -> tuple[str, bytes]:
    """RNG states as JSON of plain numbers, lists and base64 text: loading it runs no code."""
    version, internal, gauss = rng["python"]
    plain: dict[str, Any] = {"python": [int(version), [int(x) for x in internal], gauss]}
    if "numpy" in rng:
        kind, keys, pos, has_gauss, cached = rng["numpy"][:5]
        plain["numpy"] = [str(kind), [int(k) for k in keys.tolist()], int(pos), int(has_gauss), float(cached)]
    if "torch" in rng:
        plain["torch"] = _b64(rng["torch"].numpy().tobytes())
    if "cuda" in rng:
        plain["cuda"] = [_b64(s.cpu().numpy().tobytes()) for s in rng["cuda"]]
    return FMT_RNG, json.dumps(plain, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def serialize(copy: StateCopy) -> dict[str, tuple[str, bytes]]:
    """Bytes for every captured object (name -> (format, bytes)), RNG under ``__rng__``."""
    out = {name: serialize_one(kind, payload) for name, (kind, payload) in copy.entries.items()}
    out[RNG_NAME] = serialize_rng(copy.rng)
    return out


# --------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------
def _load_torch(data: bytes) -> Any:
    import torch  # restore is off the hot path; the blob needs torch

    try:  # weights_only: tensors, numbers, strings and containers; no code runs on load
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StoreError(f"a torch checkpoint could not be loaded safely (weights_only): {_line(exc)}") from None


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _update_in_place(live: Any, loaded: Any) -> Any:
    """Make ``live`` hold ``loaded``'s state if possible; return the value to use."""
    if live is loaded or type(live) is not type(loaded):
        return loaded
    np = _numpy()
    if np is not None:
        if isinstance(live, np.random.Generator):
            live.bit_generator.state = loaded.bit_generator.state
            return live
        if isinstance(live, np.random.RandomState):
            live.set_state(loaded.get_state())
            return live
        if isinstance(live, np.ndarray):
            return _copy_array(live, loaded)
    if isinstance(live, dict):
        live.clear()
        live.update(loaded)
        return live
    if isinstance(live, (list, bytearray)):
        live[:] = loaded
        return live
    if isinstance(live, set):
        live.clear()
        live.update(loaded)
        return live
    if hasattr(live, "__dict__") and not isinstance(live, type):
        try:
            vars(live).clear()
            vars(live).update(vars(loaded))
        except TypeError:  # mappingproxy etc.
            return loaded
        slots = [s for k in type(live).__mro__ for s in getattr(k, "__slots__", ())]
        for s in slots:
            if s in ("__dict__", "__weakref__"):
                continue
            if hasattr(loaded, s):
                setattr(live, s, getattr(loaded, s))
        return live
    return loaded  # immutable (int, str, tuple, ...): the caller rebinds


def _copy_array(live: Any, loaded: Any) -> Any:
    if (
        live.shape == loaded.shape
        and live.dtype == loaded.dtype
        and live.flags.writeable
    ):
        live[...] = loaded
        return live
    return loaded


def restore_rng(data: bytes) -> None:
    """Set the RNG states from :func:`serialize_rng`'s JSON (never unpickled)."""
    try:
        st = json.loads(data)
        version, internal, gauss = st["python"]
        python_state = (int(version), tuple(int(x) for x in internal), None if gauss is None else float(gauss))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise StoreError("the RNG checkpoint is not in FlorDB's JSON format (an older or foreign blob);"
                         " it is not loaded, so the replay cannot restore random states: record the run again")
    random.setstate(python_state)
    if "numpy" in st:
        import numpy as np

        kind, keys, pos, has_gauss, cached = st["numpy"]
        np.random.set_state((str(kind), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss),
                             float(cached)))
    if "torch" in st or "cuda" in st:
        import torch

        if "torch" in st:
            torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(st["torch"])), dtype=torch.uint8))
        if "cuda" in st and torch.cuda.is_available():
            states = [torch.frombuffer(bytearray(base64.b64decode(b)), dtype=torch.uint8) for b in st["cuda"]]
            n = min(len(states), torch.cuda.device_count())
            for i in range(n):
                torch.cuda.set_rng_state(states[i], i)


# Globals a pickled state dict may name: containers and numbers, nothing that runs code.
_PLAIN_GLOBALS = frozenset({
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "deque"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"), ("builtins", "slice"),
    ("builtins", "range"), ("builtins", "bytearray"), ("builtins", "list"), ("builtins", "dict"),
    ("builtins", "tuple"), ("builtins", "int"), ("builtins", "float"), ("builtins", "bool"), ("builtins", "str"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
})


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_plain_pickle(name: str, data: bytes) -> Any:
    """A pickled state dict holds data only: anything that names other code is refused."""
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as exc:
        raise StoreError(f"checkpoint object {name!r}: its state dict is not plain data ({_line(exc)});"
                         " FlorDB does not unpickle code from the store") from None


def _check_needs_pickle(name: str, live: Any) -> None:
    """cloudpickle is loaded only into a registered object that is itself saved that way.

    A state-dict object or a plain numpy array never is, so a ``cloudpickle``
    blob claimed for one (a planted catalog row) is refused unread.
    """
    np = _numpy()
    if _has_state_dict(live) or (np is not None and isinstance(live, np.ndarray) and not live.dtype.hasobject):
        raise StoreError(f"checkpoint object {name!r} claims format {FMT_PICKLE!r}, which FlorDB never writes"
                         f" for a {type(live).__name__}; refusing to unpickle it")


def restore(
    objects: dict[str, Any],
    blobs: dict[str, tuple[str, bytes]],
    *,
    rng: bool = True,
) -> dict[str, Any]:
    """Load ``blobs`` (as made by :func:`serialize`) into the live ``objects``.

    State-dict objects get ``load_state_dict`` (tensors loaded on CPU, moved to
    the object's device by ``load_state_dict``); numpy arrays are overwritten in
    place (``arr[...] = saved``) when shape and dtype match; dicts, lists, sets
    and objects with ``__dict__`` are updated in place. Returns name -> restored
    value for every name in ``objects``: where that value ``is not`` the live
    object (immutable values such as ints, strings, tuples; arrays whose shape
    changed) the caller must rebind the name to it. RNG states are restored
    when ``rng`` is true and the blobs contain them.
    """
    out: dict[str, Any] = {}
    for name, live in objects.items():
        if name not in blobs:
            raise StoreError(f"the checkpoint has no object {name!r}")
        fmt, data = blobs[name]
        if fmt == FMT_TORCH or fmt == FMT_PICKLED_SD:
            if not _has_state_dict(live):  # checked before loading: the format must fit the object
                raise StoreError(
                    f"checkpoint object {name!r} is a state dict but the live object"
                    f" ({type(live).__name__}) has no load_state_dict"
                )
            sd = _load_torch(data) if fmt == FMT_TORCH else _load_plain_pickle(name, data)
            live.load_state_dict(sd)
            out[name] = live
        elif fmt == FMT_NUMPY:
            import numpy as np

            loaded = np.load(io.BytesIO(data), allow_pickle=False)
            out[name] = _copy_array(live, loaded) if isinstance(live, np.ndarray) else loaded
        elif fmt == FMT_PICKLE:
            _check_needs_pickle(name, live)
            out[name] = _update_in_place(live, cloudpickle.loads(data))
        else:
            raise StoreError(f"checkpoint object {name!r} has unknown format {fmt!r}")
    if rng and RNG_NAME in blobs:
        fmt, data = blobs[RNG_NAME]
        if fmt != FMT_RNG:
            raise StoreError(f"{RNG_NAME!r} has format {fmt!r}, expected {FMT_RNG!r}")
        restore_rng(data)
    return out
