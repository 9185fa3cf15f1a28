"""Which float precision a network trains and predicts in: bfloat16 where the device computes it
natively, float32 elsewhere (`resolve_precision`), and the autocast context that applies it."""

from __future__ import annotations

import torch

from digitlab.errors import DigitlabError

PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively, so that bf16 autocast is faster than float32.

    On a CPU without AVX-512 BF16 or AMX, oneDNN emulates bf16 and training runs 6-10x slower than
    float32 (benchmarks/neural_speed.py on an AVX2 EPYC). Asks both the hardware (cpuinfo, as torch
    reads it) and what torch may use here: ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 turn it off."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    if torch.device(device).type != "cpu" or torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False  # ATen limited to AVX2 (or not x86): its bf16 kernels are emulated
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return hardware and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """'auto' -> 'bf16' where the device computes it natively, else 'fp32'; 'fp32'/'bf16' as asked."""
    if precision not in PRECISIONS:
        raise DigitlabError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the forward pass when `precision` is 'bf16'; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
