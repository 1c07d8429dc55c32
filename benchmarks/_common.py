"""Shared by the benchmark scripts: the machine, wall-clock timing, peak extra memory.

Timings interleave the implementations round by round (so a slow minute of the machine hits
every implementation alike) and report the median. Peak memory on the CPU is the resident
set's high-water mark above what was resident before the call (``/proc/self/clear_refs``),
with glibc's malloc forced to map every allocation of 64 KiB and more (``MALLOC_MMAP_THRESHOLD_``,
set by :func:`reexec_with_exact_rss`), so freed memory leaves the resident set at once and a
later implementation cannot reuse an earlier one's pages unseen. On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the call.
"""

import contextlib
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def reexec_with_exact_rss() -> None:
    """Restart this script with ``MALLOC_MMAP_THRESHOLD_=65536`` unless it is already set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])


@contextlib.contextmanager
def memory_cap(margin_bytes: int = 2 * 2**30):
    """Inside, an allocation beyond the machine's available memory fails with an error.

    Linux would otherwise grant a peer's huge allocation and then kill the whole benchmark
    when its pages are touched; with the address space capped (soft limit, restored on exit),
    the allocation raises ``RuntimeError`` and the peer is reported as failing.
    """
    meminfo = open("/proc/meminfo").read()
    available = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _rss_bytes("VmSize") + max(available - margin_bytes, 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def machine(device: torch.device) -> str:
    """One line naming the hardware and software a figure was measured on."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or "cpu"
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        hardware = f"{cpu}, {torch.get_num_threads()} threads (os.cpu_count() = {os.cpu_count()})"
    return f"{hardware}; torch {torch.__version__}, Python {platform.python_version()}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round by round.

    A function that raises is dropped (its entry becomes the exception) after its first call.
    """
    results: dict[str, list[float] | BaseException] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            if isinstance(results[name], BaseException):
                continue
            synchronize(device)
            start = time.perf_counter()
            try:
                fn()
                synchronize(device)
            except (RuntimeError, MemoryError) as err:
                results[name] = err
                continue
            if round_ >= warmup:
                results[name].append(time.perf_counter() - start)
    return {
        name: value if isinstance(value, BaseException) else statistics.median(value)
        for name, value in results.items()
    }


def _rss_bytes(field: str) -> int:
    status = open("/proc/self/status").read()
    return int(re.search(field + r":\s+(\d+) kB", status).group(1)) * 1024


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated above the current level at the peak of one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current VmRSS
        f.write("5")
    before = _rss_bytes("VmRSS")
    fn()
    return _rss_bytes("VmHWM") - before


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, columns padded for reading in a terminal."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cifar10_jpeg_root() -> Path:
    """CIFAR-10 in ImageFolder layout (``train/`` and ``test/``, a folder per class):
    ``$INFONCE_CIFAR10_ROOT``, or the tarball ``$INFONCE_CIFAR10_TARBALL`` (holding
    ``cifar10-jpeg/{train,test}/<class>/<image>``) extracted once to a temporary folder.

    Raises:
        FileNotFoundError: neither is set (or the tarball is missing).
    """
    if os.environ.get("INFONCE_CIFAR10_ROOT"):
        return Path(os.environ["INFONCE_CIFAR10_ROOT"])
    tarball = Path(os.environ.get("INFONCE_CIFAR10_TARBALL", ""))
    if not tarball.is_file():
        raise FileNotFoundError(
            "no CIFAR-10 copy: set INFONCE_CIFAR10_ROOT to a folder with train/ and test/ class "
            "folders, or INFONCE_CIFAR10_TARBALL to a tarball of cifar10-jpeg/{train,test}/, "
            "or pass --root"
        )
    target = Path(tempfile.gettempdir()) / "infonce-bench-data"
    root = target / "cifar10-jpeg"
    if not (root / "test").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(target)], check=True)
    return root
