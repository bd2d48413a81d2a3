"""Which CPU inference path for EfficientNet-Lite0: eager PyTorch, channels-last, torch.compile,
ONNX Runtime (1 or 2 intra-op threads, thread-pool spinning on/off, batch size).

Model only (no decoding), on random uint8 224x224 batches through the same wrapper the encoder
uses. Prints wall and CPU milliseconds per image; CPU time is the steadier figure on a shared
machine (wall time scales with the share of the cores we get).

    flock /tmp/mc-bench.lock python benchmarks/encoder_paths.py ort eager channels_last
    flock /tmp/mc-bench.lock python benchmarks/encoder_paths.py compile      # slow: compiles
    flock /tmp/mc-bench.lock python benchmarks/encoder_paths.py spin         # ORT threading
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

import numpy as np


def measure(name: str, f, reps: int, bs: int) -> None:
    f()
    c, t = time.process_time(), time.perf_counter()
    for _ in range(reps):
        f()
    cpu = (time.process_time() - c) / (reps * bs) * 1000
    wall = (time.perf_counter() - t) / (reps * bs) * 1000
    print(f"{name}: CPU {cpu:.2f} ms/img, wall {wall:.2f} ms/img ({1000 / wall:.1f} img/s), "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


def onnx_path() -> str:
    from mediacluster.encoders import get_encoder
    from mediacluster.encoders.efficientnet import CROP
    from mediacluster.encoders.onnx_cache import exported_model

    enc = get_encoder("efficientnet-lite0", backend="onnx")
    enc.encode([np.zeros((CROP, CROP, 3), np.uint8)])  # exports on first use
    return str(exported_model(enc.id, lambda p: None))


def main(which: list[str]) -> None:
    warnings.simplefilter("ignore")
    import torch

    from mediacluster.encoders.efficientnet import _build_torch_model
    from mediacluster.encoders.onnx_cache import ort_session

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    bs = 16
    x = np.random.default_rng(0).integers(0, 255, (bs, 224, 224, 3), dtype=np.uint8)
    if "eager" in which or "channels_last" in which or "compile" in which:
        m = _build_torch_model()
    if "eager" in which:
        def f():
            with torch.inference_mode():
                m(torch.from_numpy(x))
        measure("torch eager b16", f, 3, bs)
    if "channels_last" in which:
        mc = _build_torch_model().to(memory_format=torch.channels_last)

        def f():
            with torch.inference_mode():
                mc(torch.from_numpy(x))
        measure("torch channels_last b16", f, 3, bs)
    if "compile" in which:
        t = time.time()
        cm = torch.compile(m)
        with torch.inference_mode():
            cm(torch.from_numpy(x))
        print(f"torch.compile: {time.time() - t:.0f} s to compile", flush=True)

        def f():
            with torch.inference_mode():
                cm(torch.from_numpy(x))
        measure("torch.compile b16", f, 3, bs)
    if "ort" in which:
        p = onnx_path()
        for th in (1, 2):
            s = ort_session(p, th)
            measure(f"onnxruntime {th} thread(s) b16", lambda s=s: s.run(None, {"image": x}), 10, bs)
    if "spin" in which:
        import onnxruntime as ort

        p = onnx_path()

        def sess(th, spin):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = th, 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])

        def concurrent(sessions, b, secs=4.0):
            xb = x[:b]
            for s in sessions:
                s.run(None, {"image": xb})
            cnt = [0] * len(sessions)
            stop = time.perf_counter() + secs

            def work(i):
                while time.perf_counter() < stop:
                    sessions[i].run(None, {"image": xb})
                    cnt[i] += b
            t = time.perf_counter()
            ths = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
            [h.start() for h in ths]
            [h.join() for h in ths]
            return sum(cnt) / (time.perf_counter() - t)

        for b in (4, 8, 16):
            one = sess(1, False)
            res = {
                "2 threads, spinning": concurrent([sess(2, True)], b),
                "2 threads, no spinning": concurrent([sess(2, False)], b),
                "1 thread": concurrent([one], b),
                "1 thread x 2 concurrent calls": concurrent([one, one], b),
            }
            print(f"batch {b}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in res.items())
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ort", "eager", "channels_last"])
