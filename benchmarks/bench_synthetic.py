"""Synthetic generator: speed, peak memory, and calibration against the real stacks.

1. Time and peak RSS to generate one 128x512x512 volume at ratio 8 (targets: < 30 s, < 4 GiB on 2 cores), measured
   in a child process so that the peak belongs to the generation alone.
2. Calibration table: median neighbour-section correlation, noise correlation and mitochondria contrast of
   synthetic volumes at ratios 1, 4, 8, 12 beside the real stacks in ../shared/data (skipped, with a note, when
   absent).

    python benchmarks/bench_synthetic.py [--shape 128 512 512] [--skip-large]
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _generate(shape, ratio, queue) -> None:
    from reisoseg.synthetic import generate_volume

    start = time.perf_counter()
    volume = generate_volume(tuple(shape), ratio, seed=0)
    queue.put((time.perf_counter() - start, float((volume.labels == 1).mean())))


def timed_generation(shape, ratio) -> dict:
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_generate, args=(shape, ratio, queue))
    process.start()
    seconds, mito_fraction = queue.get()
    process.join()
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # kB on Linux
    return {"shape": list(shape), "ratio": ratio, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_gib, 2),
            "mitochondria_fraction": round(mito_fraction, 4)}


def real_stacks() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each real stack's image and mitochondria mask."""
    import imageio.v3 as iio
    import tifffile

    def read(pattern: str, reader) -> np.ndarray | None:
        files = sorted(glob.glob(str(SHARED_DATA / pattern)))
        return np.stack([reader(f) for f in files]) if files else None

    stacks = {}
    gerhard = read("gerhard2013_L3vnc_sstem/stack1/raw/*.tif", tifffile.imread)
    if gerhard is not None:
        labels = read("gerhard2013_L3vnc_sstem/stack1/labels/*.png", iio.imread)
        stacks["Gerhard 2013 ssTEM (r ~ 10)"] = (gerhard, labels == 191)
    cdeep3m = read("cdeep3m_mito_sbem/training/images/*.png", iio.imread)
    if cdeep3m is not None:
        labels = read("cdeep3m_mito_sbem/training/labels/*.png", iio.imread)
        stacks["CDeep3M SBEM (r ~ 7)"] = (cdeep3m, (labels[..., 0] if labels.ndim == 4 else labels) > 0)
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 512, 512))
    parser.add_argument("--skip-large", action="store_true", help="only the calibration table")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_synthetic.json"))
    args = parser.parse_args()
    from reisoseg.synthetic import generate_volume
    from reisoseg.synthetic.calibration import (
        mitochondria_contrast,
        neighbour_section_correlation,
        noise_correlation,
    )

    report: dict = {}
    if not args.skip_large:
        report["generation"] = timed_generation(args.shape, 8)
        g = report["generation"]
        print(f"generate {g['shape']} at r=8: {g['seconds']} s, peak RSS {g['peak_rss_gib']} GiB "
              f"(targets < 30 s, < 4 GiB)")
    rows = []
    for ratio in (1, 4, 8, 12):
        volumes = [generate_volume((20, 256, 256), ratio, seed=seed) for seed in (1, 2)]
        values = [v.image for v in volumes]
        rows.append({"data": f"synthetic r={ratio}",
                     "neighbour_correlation": float(np.median([neighbour_section_correlation(v) for v in values])),
                     "noise_correlation": float(np.median([noise_correlation(v) for v in values])),
                     "mitochondria_contrast": float(np.median([mitochondria_contrast(v.image, v.labels == 1)
                                                               for v in volumes]))})
    stacks = real_stacks()
    if not stacks:
        print(f"note: no real stacks at {SHARED_DATA}; calibration table shows synthetic rows only")
    for name, (stack, mitochondria) in stacks.items():
        rows.append({"data": name, "neighbour_correlation": neighbour_section_correlation(stack),
                     "noise_correlation": noise_correlation(stack),
                     "mitochondria_contrast": mitochondria_contrast(stack, mitochondria)})
    report["calibration"] = rows
    print(f"{'data':<30} {'neighbour-section corr':>22} {'noise lag-1 corr':>17} {'mito contrast':>14}")
    for row in rows:
        print(f"{row['data']:<30} {row['neighbour_correlation']:>22.3f} {row['noise_correlation']:>17.3f} "
              f"{row['mitochondria_contrast']:>14.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
