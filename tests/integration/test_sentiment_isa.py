"""The int8 sentiment model gives the same probabilities on an AVX2-only CPU as on the VNNI one it
was measured on: the shipped model's int8 export, loaded under qemu's Haswell CPU (AVX2, no VNNI:
ONNX Runtime picks its kernels by CPUID, which qemu answers), reproduces its training probes. As
a control, the same weights quantized without reduce_range (the earlier export) miss them there:
the emulation really runs the kernels that diverge."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models.sentiment.serving import EXPORT_REVISION, PROBE_TOLERANCE, active_version, load_version, read_meta
from tests.helpers import REPO

QEMU = shutil.which("qemu-x86_64")
REGISTRY = REPO / "models" / "registry"

CHECK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from models.sentiment.serving import OnnxScorer, Tokens, default_base_dir, read_meta
    root, version, onnx = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    meta = read_meta(root, version)
    probes = meta["probes"]["onnx-int8"]
    scorer = OnnxScorer(onnx, Tokens(default_base_dir(), int(meta["max_len"])), version,
                        float(meta.get("temperature", 1.0)), "onnx-int8")
    probs, _ = scorer.predict([p["text"] for p in probes])
    print(json.dumps(float(np.abs(probs - np.array([p["probs"] for p in probes])).max())))
    """
)


def _under_haswell(onnx: Path, version: str) -> float:
    qemu = [QEMU or "qemu-x86_64", "-cpu", "Haswell"]
    out = subprocess.run(
        [*qemu, sys.executable, "-c", CHECK, str(REGISTRY), version, str(onnx)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "TRADEFLEET_SENTIMENT_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_int8_reproduces_its_probes_on_an_avx2_only_cpu(tmp_path: Path) -> None:
    if QEMU is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-user is missing: `make test` installs it (apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 is not installed (make test installs it)")
    version = active_version(REGISTRY)
    assert version is not None
    load_version(REGISTRY, version, "onnx-int8", tmp_path)  # exported here, probes checked here
    served = tmp_path / f"{version}.onnx-int8.{EXPORT_REVISION}.onnx"
    assert served.exists()
    assert _under_haswell(served, version) <= PROBE_TOLERANCE

    # The control: full-range int8 weights, the export before reduce_range, on the same CPU.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    load_version(REGISTRY, version, "onnx", tmp_path)
    fp32 = tmp_path / f"{version}.onnx.{EXPORT_REVISION}.onnx"
    full_range = tmp_path / "full-range-int8.onnx"
    quantize_dynamic(str(fp32), str(full_range), weight_type=QuantType.QInt8, per_channel=True)
    meta = read_meta(REGISTRY, version)
    assert meta["serving"]["engine"] == "onnx-int8"
    assert _under_haswell(full_range, version) > PROBE_TOLERANCE
