"""The cuda backend's kernels, compiled for the CPU emulator (simt_emulator.h) and called through ctypes.

``build(directory)`` compiles ``emulated_attention.cpp`` (the kernels of ``csrc/cuda/attention_fwd.cuh``
with the emulator's primitives) with the host C++ compiler; ``Emulated.attention_fwd`` runs them on CPU
tensors with the arguments ``attention_fwd_cuda`` takes, registering every tensor's storage so that
an access outside them fails the launch.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KIND_BANDED, KIND_GLOBAL = 0, 1
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's include directory (for cuda_fp16.h / cuda_bf16.h), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates += ["/usr/local/cuda", *sorted(map(str, Path("/usr/local").glob("cuda-*")), reverse=True)]
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return None


def build(directory: Path) -> Path:
    """Compiles the emulated kernels into ``directory`` and returns the shared library's path. Processes
    that share ``directory`` (pytest-xdist workers) build it once: the first takes a lock and the others
    wait for it, then load the same file."""
    include = cuda_include_dir()
    if include is None:
        raise FileNotFoundError("no CUDA toolkit headers (cuda_fp16.h) found; set CUDA_HOME")
    directory.mkdir(parents=True, exist_ok=True)
    lib = directory / "libled_emulated_attention.so"
    partial = directory / "libled_emulated_attention.so.partial"
    cmd = [
        os.environ.get("CXX", "g++"), "-std=c++17", "-O2", "-fPIC", "-shared",
        "-Wall", "-Wextra", "-Werror", "-DLED_SIMT_EMULATOR",
        f"-I{ROOT / 'csrc' / 'cuda'}", f"-I{ROOT / 'csrc' / 'include'}", f"-I{HERE}", f"-I{include}",
        str(HERE / "emulated_attention.cpp"), "-o", str(partial),
    ]  # fmt: skip
    with open(directory / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the emulated kernels failed:\n{' '.join(cmd)}\n{done.stderr}")
        partial.rename(lib)  # whole or absent, for the processes that look for it later
    return lib


class EmulatorError(RuntimeError):
    """A launch the emulator refused or that failed inside (bounds, deadlock, bad arguments)."""


def _storage_range(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


class Emulated:
    def __init__(self, lib_path: Path) -> None:
        lib = ctypes.CDLL(str(lib_path))
        u64, i64 = ctypes.c_uint64, ctypes.c_int64
        lib.led_emu_register_range.argtypes = [u64, u64]
        lib.led_emu_clear_ranges.argtypes = []
        lib.led_emu_set_seed.argtypes = [u64]
        lib.led_emu_launch_count.argtypes = []
        lib.led_emu_launch_count.restype = u64
        lib.led_emu_fwd_workspace_bytes.argtypes = [ctypes.c_int, i64, i64, i64, i64, i64]
        lib.led_emu_fwd_workspace_bytes.restype = u64
        lib.led_emu_attention_fwd.argtypes = [
            ctypes.c_int, *([u64] * 7), *([i64] * 7), ctypes.c_double, ctypes.POINTER(i64), ctypes.c_int,
            u64, u64, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        lib.led_emu_attention_fwd.restype = ctypes.c_int
        lib.led_emu_attention_layer_fwd.argtypes = [
            *([u64] * 11), *([i64] * 6), ctypes.c_double, ctypes.POINTER(i64), ctypes.c_int, u64, u64,
            ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        lib.led_emu_attention_layer_fwd.restype = ctypes.c_int
        lib.led_emu_bwd_workspace_bytes.argtypes = [ctypes.c_int, i64, i64, i64, i64, i64]
        lib.led_emu_bwd_workspace_bytes.restype = u64
        lib.led_emu_attention_bwd.argtypes = [
            ctypes.c_int, *([u64] * 11), *([i64] * 7), ctypes.c_double, ctypes.POINTER(i64), ctypes.c_int,
            u64, u64, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        lib.led_emu_attention_bwd.restype = ctypes.c_int
        lib.led_emu_attention_layer_bwd.argtypes = [
            ctypes.POINTER(u64), *([i64] * 6), ctypes.c_double, ctypes.POINTER(i64), ctypes.c_int,
            u64, u64, u64, u64, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]  # fmt: skip
        lib.led_emu_attention_layer_bwd.restype = ctypes.c_int
        lib.led_emu_key_flags.argtypes = [
            u64,
            i64,
            i64,
            u64,
            u64,
            i64,
            i64,
            i64,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.led_emu_key_flags.restype = ctypes.c_int
        lib.led_emu_wgmma_check.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.led_emu_wgmma_check.restype = ctypes.c_int
        self.lib = lib

    def launch_count(self) -> int:
        """Kernel launches run so far (by any call)."""
        return int(self.lib.led_emu_launch_count())

    def workspace_bytes(self, kind: int, b: int, h: int, g: int, n: int, d: int) -> int:
        return int(self.lib.led_emu_fwd_workspace_bytes(kind, b, h, g, n, d))

    def _launch(self, fn, seed: int, *args) -> None:
        """fn(*args, error, error_len) with the launches' schedules seeded by ``seed``; the registered
        ranges cleared after it; a failure raised as EmulatorError."""
        error = ctypes.create_string_buffer(1024)
        self.lib.led_emu_set_seed(seed)
        rc = fn(*args, error, len(error))
        self.lib.led_emu_clear_ranges()
        if rc != 0:
            raise EmulatorError(error.value.decode())

    def _register(self, tensors, ranges):
        self.lib.led_emu_clear_ranges()
        for ptr, nbytes in ranges if ranges is not None else map(_storage_range, tensors):
            self.lib.led_emu_register_range(ptr, nbytes)

    def attention_fwd(
        self,
        kind: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_flags: torch.Tensor,
        global_idx: torch.Tensor | None,
        window: int,
        scale: float,
        *,
        seed: int = 0,
        ranges: list[tuple[int, int]] | None = None,
        layer: bool = False,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel A (kind 0: rows of q (B, N, H, D)) or B (kind 1: slots of q (B, G, H, D)) forward.

        Returns (out, lse): out (B, M, H, D) in q's dtype and lse (B, H, 2, M) float32, both
        NaN-poisoned before the launch. ``ranges`` replaces the registered tensor ranges (for
        testing the bounds check itself). ``layer``: the layer mode (cpu_attention.h); kernel B then
        reads q (B, N, H, D) at the global positions and writes them into ``out`` (B, N, H, D, given).
        """
        b, m, h, d = q.shape
        n = k.shape[1]
        g = 0 if global_idx is None else global_idx.shape[1]
        if layer and kind == KIND_GLOBAL:
            m = g
        if out is None:
            out = torch.full((b, m, h, d), float("nan"), dtype=q.dtype)
        lse = torch.full((b, h, 2, m), float("nan"), dtype=torch.float32)
        flags = key_flags.to(torch.int8).contiguous()
        gidx = None if global_idx is None else global_idx.to(torch.int32).contiguous()
        ws_bytes = self.workspace_bytes(kind, b, h, g, n, d)
        workspace = torch.full((max(ws_bytes // 4, 1),), float("nan"), dtype=torch.float32)
        tensors = [q, k, v, out, lse, flags, workspace] + ([gidx] if gidx is not None else [])
        self._register(tensors, ranges)
        strides = (ctypes.c_int64 * 12)(*(s for t in (q, k, v, out) for s in t.stride()[:3]))
        self._launch(
            self.lib.led_emu_attention_fwd, seed,
            kind, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), flags.data_ptr(),
            0 if gidx is None else gidx.data_ptr(), b, m, n, h, d, g, window, scale, strides,
            _DTYPE_CODES.get(q.dtype, -1), workspace.data_ptr(), ws_bytes, int(layer),
        )  # fmt: skip
        return out, lse

    def attention_layer_fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_global: torch.Tensor,
        k_global: torch.Tensor,
        v_global: torch.Tensor,
        key_flags: torch.Tensor,
        global_idx: torch.Tensor,
        window: int,
        scale: float,
        *,
        seed: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's forward (``attention_layer_fwd_cuda``): kernel A over q, k, v (B, N, H, D), then kernel
        B's slots of q_global written into A's output, in one launch where the kernels can share it.

        Returns (out (B, N, H, D), lse (B, H, 2, N), glse (B, H, 2, G)), NaN-poisoned before the launch, as
        is the workspace.
        """
        b, n, h, d = q.shape
        g = global_idx.shape[1]
        out = torch.full((b, n, h, d), float("nan"), dtype=q.dtype)
        lse = torch.full((b, h, 2, n), float("nan"), dtype=torch.float32)
        glse = torch.full((b, h, 2, g), float("nan"), dtype=torch.float32)
        flags = key_flags.to(torch.int8).contiguous()
        gidx = global_idx.to(torch.int32).contiguous()
        ws_bytes = self.workspace_bytes(KIND_GLOBAL, b, h, g, n, d)
        workspace = torch.full((max(ws_bytes // 4, 1),), float("nan"), dtype=torch.float32)
        inputs = (q, k, v, q_global, k_global, v_global)
        self._register([*inputs, out, lse, glse, flags, gidx, workspace], None)
        strides = (ctypes.c_int64 * 21)(*(s for t in (*inputs, out) for s in t.stride()[:3]))
        self._launch(
            self.lib.led_emu_attention_layer_fwd, seed,
            *(t.data_ptr() for t in inputs), out.data_ptr(), lse.data_ptr(), glse.data_ptr(),
            flags.data_ptr(), gidx.data_ptr(), b, n, h, d, g, window, scale, strides,
            _DTYPE_CODES.get(q.dtype, -1), workspace.data_ptr(), ws_bytes,
        )  # fmt: skip
        return out, lse, glse

    def attention_bwd(
        self,
        kind: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        dout: torch.Tensor,
        lse: torch.Tensor,
        key_flags: torch.Tensor,
        global_idx: torch.Tensor | None,
        window: int,
        scale: float,
        *,
        seed: int = 0,
        layer: bool = False,
        accumulate_kv: bool = False,
        grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backward of :meth:`attention_fwd` (``out``, ``lse``: its results): dq (B, M, H, D), dk and dv
        (B, N, H, D), NaN-poisoned before the launch unless given as ``grads`` (the layer mode's kernel
        B writes into kernel A's dq and, with ``accumulate_kv``, adds to its dk and dv)."""
        b, m, h, d = q.shape
        n = k.shape[1]
        g = 0 if global_idx is None else global_idx.shape[1]
        if layer and kind == KIND_GLOBAL:
            m = g
        if grads is not None:
            dq, dk, dv = grads
        else:
            dq = torch.full(q.shape, float("nan"), dtype=q.dtype)
            dk = torch.full((b, n, h, d), float("nan"), dtype=q.dtype)
            dv = torch.full((b, n, h, d), float("nan"), dtype=q.dtype)
        flags = key_flags.to(torch.int8).contiguous()
        gidx = None if global_idx is None else global_idx.to(torch.int32).contiguous()
        ws_bytes = int(self.lib.led_emu_bwd_workspace_bytes(kind, b, h, g, n, d))
        workspace = torch.full((max(ws_bytes // 4, 1),), float("nan"), dtype=torch.float32)
        tensors = [q, k, v, out, dout, lse, dq, dk, dv, flags, workspace] + (
            [gidx] if gidx is not None else []
        )
        self._register(tensors, None)
        strides = (ctypes.c_int64 * 24)(
            *(s for t in (q, k, v, out, dout, dq, dk, dv) for s in t.stride()[:3])
        )
        self._launch(
            self.lib.led_emu_attention_bwd, seed,
            kind, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr(), lse.data_ptr(),
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), flags.data_ptr(),
            0 if gidx is None else gidx.data_ptr(), b, m, n, h, d, g, window, scale, strides,
            _DTYPE_CODES.get(q.dtype, -1), workspace.data_ptr(), ws_bytes, int(layer), int(accumulate_kv),
        )  # fmt: skip
        return dq, dk, dv

    def attention_layer_bwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_global: torch.Tensor,
        k_global: torch.Tensor,
        v_global: torch.Tensor,
        out: torch.Tensor,
        dout: torch.Tensor,
        lse: torch.Tensor,
        glse: torch.Tensor,
        key_flags: torch.Tensor,
        global_idx: torch.Tensor,
        window: int,
        scale: float,
        *,
        shared: bool = False,
        seed: int = 0,
    ) -> tuple[torch.Tensor, ...]:
        """The layer's backward (``attention_layer_bwd_cuda``; ``out``, ``lse``, ``glse``: the layer's
        forward): dq, dk, dv (B, N, H, D), NaN-poisoned before the launch, and unless ``shared`` (kernel B's
        gradients then go into them, dk / dv added) dq_global (zero-filled: B writes its global rows),
        dk_global and dv_global (NaN-poisoned). Both workspaces are NaN-poisoned too."""
        b, n, h, d = q.shape
        g = global_idx.shape[1]

        def nan(t):
            return torch.full(t.shape, float("nan"), dtype=t.dtype)

        grads = [nan(q), nan(k), nan(v)]
        targets = grads if shared else [torch.zeros_like(q_global), nan(k_global), nan(v_global)]
        flags = key_flags.to(torch.int8).contiguous()
        gidx = global_idx.to(torch.int32).contiguous()
        ws = []
        for kind in (KIND_BANDED, KIND_GLOBAL):
            nbytes = int(self.lib.led_emu_bwd_workspace_bytes(kind, b, h, g, n, d))
            ws.append((torch.full((max(nbytes // 4, 1),), float("nan"), dtype=torch.float32), nbytes))
        inputs = [q, k, v, q_global, k_global, v_global, out, dout, lse, glse]
        own_targets = [] if shared else targets
        self._register([*inputs, *grads, *own_targets, flags, gidx, ws[0][0], ws[1][0]], None)
        ptrs = [t.data_ptr() for t in (*inputs, *grads, *targets, flags, gidx)]
        strided = (q, k, v, q_global, k_global, v_global, out, dout, *grads, *targets)
        strides = (ctypes.c_int64 * 42)(*(s for t in strided for s in t.stride()[:3]))
        self._launch(
            self.lib.led_emu_attention_layer_bwd, seed,
            (ctypes.c_uint64 * 18)(*ptrs), b, n, h, d, g, window, scale, strides,
            _DTYPE_CODES.get(q.dtype, -1), ws[0][0].data_ptr(), ws[0][1], ws[1][0].data_ptr(), ws[1][1],
            int(shared),
        )  # fmt: skip
        return tuple(grads) if shared else (*grads, *targets)

    def wgmma_check(self, mode: int) -> None:
        """The emulator's check kernel of warpgroup products (emulated_attention.cpp, wgmma_check_kernel)."""
        error = ctypes.create_string_buffer(1024)
        if self.lib.led_emu_wgmma_check(mode, error, len(error)) != 0:
            raise EmulatorError(error.value.decode())


class EmulatedExtension:
    """The CUDA entry points of ``led_kernels._C`` (same names and arguments) backed by the emulated
    kernels, for host tensors: set ``led_kernels.ops.cuda._kernels`` to one to run the ``cuda`` backend's
    Python layer (ops, autograd, registration) on the CPU. Global accesses are not range-checked here
    (only pointers cross this interface); :class:`Emulated` checks them."""

    def __init__(self, emulated: Emulated) -> None:
        self.lib = emulated.lib
        self.calls: list[str] = []

    def attention_cuda_workspace_bytes(self, backward, kind, b, h, g, n, d):
        fn = self.lib.led_emu_bwd_workspace_bytes if backward else self.lib.led_emu_fwd_workspace_bytes
        return int(fn(kind, b, h, g, n, d))

    def _call(self, fn, name, head, strides, tail, stream):
        """fn(*head, the (b, n, h) strides flattened, *tail, error, error_len), as the binding ``name`` calls
        the kernels."""
        assert stream == 0, "host tensors run on no stream"
        flat = (ctypes.c_int64 * (3 * len(strides)))(*(s for triple in strides for s in triple))
        error = ctypes.create_string_buffer(1024)
        self.lib.led_emu_clear_ranges()
        rc = fn(*head, flat, *tail, error, len(error))
        if rc != 0:
            raise ValueError(error.value.decode())
        self.calls.append(name)

    def key_flags_cuda(self, pad_ptr, pad_sb, pad_sn, gidx_ptr, flags_ptr, b, n, g, stream):
        assert stream == 0, "host tensors run on no stream"
        error = ctypes.create_string_buffer(1024)
        self.lib.led_emu_clear_ranges()
        if self.lib.led_emu_key_flags(
            pad_ptr, pad_sb, pad_sn, gidx_ptr, flags_ptr, b, n, g, error, len(error)
        ):
            raise ValueError(error.value.decode())
        self.calls.append("key_flags")

    def attention_fwd_cuda(self, kind, *args):
        # the binding's arguments; its trailing `layer` is optional there, always given here
        *head, qs, ks, vs, os_, dtype_code, ws_ptr, ws_bytes, stream, layer = args
        strides = (qs, ks, vs, os_)
        fn = self.lib.led_emu_attention_fwd
        self._call(fn, "fwd", (kind, *head), strides, (dtype_code, ws_ptr, ws_bytes, int(layer)), stream)

    def attention_layer_fwd_cuda(self, *args):
        *head, qs, ks, vs, qgs, kgs, vgs, os_, dtype_code, ws_ptr, ws_bytes, stream = args
        strides = (qs, ks, vs, qgs, kgs, vgs, os_)
        fn = self.lib.led_emu_attention_layer_fwd
        self._call(fn, "layer_fwd", head, strides, (dtype_code, ws_ptr, ws_bytes), stream)

    def attention_bwd_cuda(self, kind, *args):
        head, modes = args[:-2], args[-2:]  # the binding's trailing layer, accumulate_kv (given here)
        *head, qs, ks, vs, os_, dos, dqs, dks, dvs, dtype_code, ws_ptr, ws_bytes, stream = head
        strides = (qs, ks, vs, os_, dos, dqs, dks, dvs)
        fn = self.lib.led_emu_attention_bwd
        tail = (dtype_code, ws_ptr, ws_bytes, *map(int, modes))
        self._call(fn, "bwd", (kind, *head), strides, tail, stream)

    def attention_layer_bwd_cuda(self, *args):
        ptrs, sizes, rest = args[:18], args[18:25], args[25:]  # (sizes: b, n, h, d, g, window, scale)
        strides, (dtype_code, ws_ptr, ws_bytes, gws_ptr, gws_bytes, stream, accumulate_kv) = (
            rest[:14],
            rest[14:],
        )
        head = ((ctypes.c_uint64 * 18)(*ptrs), *sizes)
        tail = (dtype_code, ws_ptr, ws_bytes, gws_ptr, gws_bytes, int(accumulate_kv))
        self._call(self.lib.led_emu_attention_layer_bwd, "layer_bwd", head, strides, tail, stream)


__all__ = [
    "Emulated",
    "EmulatedExtension",
    "EmulatorError",
    "KIND_BANDED",
    "KIND_GLOBAL",
    "build",
    "cuda_include_dir",
]
