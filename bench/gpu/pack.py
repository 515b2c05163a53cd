"""Build the GPU kit on a machine with PyPI, for a GPU machine without it (Python 3.12, torch in its image).

Resolves vLLM, LangGraph and Halo's dependencies for cp312 manylinux, keeps the image's torch stack (stub
wheels stand in for it while resolving), leaves out what the image already holds (image_packages.txt) and what
offline serving of dense models never loads (LEAVE_OUT), downloads the rest, adds Halo's wheel built from the
committed tree (HEAD), repacks every wheel uncompressed without the files DROP names (so xz compresses them
well), and tars them with SmolLM2's tokenizer and a TPC-H file into ``kit.tar.xz``, split into parts of
``--part-mib`` under ``bench/gpu/parts/`` (ignored by git) with its SHA-256. Halo's own wheel goes there
beside them (``pack.py halo`` rebuilds only it: it travels with every call, the parts once a lease).

    .venv/bin/python bench/gpu/pack.py              # then see bench/gpu/README.md
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = [
    "vllm==0.25.1",  # the last vLLM that pins the image's torch (2.11.0)
    "langgraph>=1.2,<2",
    "langchain-openai>=1.7,<2",
]
IMAGE_TORCH = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64"]
PLATFORMS += ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_31_x86_64"]
PLATFORMS += ["manylinux_2_34_x86_64", "manylinux_2_26_x86_64", "manylinux_2_12_x86_64"]
PLATFORMS += ["manylinux2010_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"]
# Not loaded by vLLM's offline engine or `vllm serve` for dense bf16 models on Hopper (measured: see
# ../shared/gpu/vllm_h200.md in the workspace): kernels for other formats, video, compilers, telemetry.
LEAVE_OUT = {
    "flashinfer-cubin",
    "tilelang",
    "tokenspeed-mla",
    "tokenspeed-triton",
    "nvidia-cutlass-dsl",
    "nvidia-cutlass-dsl-libs-base",
    "nvidia-cutlass-dsl-libs-cu13",
    "quack-kernels",
    "humming-kernels",
    "nvidia-cuda-nvcc",
    "nvidia-nvvm",
    "nvidia-cuda-crt",
    "nvidia-cuda-tileiras",
    "nvidia-cuda-cccl",
    "cuda-python",
    "cuda-tile",
    "torchcodec",
    "pynvvideocodec",
    "fastsafetensors",
    "z3-solver",
    "nvidia-cudnn-frontend",
    "sentry-sdk",
    "fastapi-cloud-cli",
}
# Files inside wheels that are never loaded there: FlashAttention 2 (Hopper uses FA3), DeepGEMM builds for
# other Pythons, PuLP's CBC for other systems.
DROP = [
    "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so",
    "vllm/third_party/deep_gemm/_C.cpython-31[0134]-*",
    "pulp/solverdir/cbc/osx/*",
    "pulp/solverdir/cbc/win/*",
    "pulp/solverdir/cbc/linux/arm64/*",
]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages() -> set[str]:
    words = []
    for line in (HERE / "image_packages.txt").read_text().splitlines():
        if not line.startswith("#"):
            words += line.split()
    return {norm(w) for w in words}


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def target_args() -> list[str]:
    out = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for p in PLATFORMS:
        out += ["--platform", p]
    return out


def stub_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel ``name==version+stub``: satisfies ``==version`` pins and brings no dependencies."""
    dist = f"{name}-{version}+stub"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}+stub\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: halo\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        for k, v in files.items():
            z.writestr(k, v)


def resolve(build: Path, requirements: list[str]) -> list[tuple[str, str]]:
    """(name, version) of every wheel the requirements need on cp312, the image's torch stack stubbed."""
    stubs = build / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    for name, version in IMAGE_TORCH.items():
        stub_wheel(stubs, name, version)
    report = build / "resolve.json"
    pins = [f"{n}=={v}+stub" for n, v in IMAGE_TORCH.items()]
    pip(
        "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
        "--find-links", str(stubs), "--target", str(build / "unused"), *target_args(), *pins, *requirements,
    )  # fmt: skip
    items = json.loads(report.read_text())["install"]
    return [(it["metadata"]["name"], it["metadata"]["version"]) for it in items]


def repack(src: Path, dst: Path) -> int:
    """Copy a wheel uncompressed without the DROP members (their RECORD lines go too); bytes dropped."""
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        gone = {i.filename for i in zin.infolist() if any(fnmatch.fnmatch(i.filename, p) for p in DROP)}
        for info in zin.infolist():
            if info.filename in gone:
                dropped += info.file_size
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "".join(f"{line}\n" for line in lines if line.split(",")[0] not in gone).encode()
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
    return dropped


def halo_wheel(build: Path, out: Path) -> None:
    """Halo's wheel from the committed tree (HEAD), never from uncommitted work."""
    src = build / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))


def pack_deps(build: Path, parts: Path, part_mib: int) -> None:
    """The dependencies' wheels, SmolLM2's tokenizer and TPC-H as kit.tar.xz parts (sent once a lease)."""
    halo_deps = [
        "lark>=1.2.2",
        "sqlglot>=30,<31",
        "pulp>=3.3,<4",
        "duckdb==1.5.5",
        "duckdb-extension-tpch==1.5.5",
    ]
    wanted = resolve(build, REQUIREMENTS + halo_deps)
    skip = image_packages() | {norm(n) for n in LEAVE_OUT} | set(IMAGE_TORCH)
    chosen = sorted((n, v) for n, v in wanted if norm(n) not in skip)
    raw = build / "download"
    raw.mkdir(parents=True, exist_ok=True)
    pip("download", "--quiet", "--no-deps", "-d", str(raw), *target_args(), *(f"{n}=={v}" for n, v in chosen))
    kit = build / "kit"
    shutil.rmtree(kit, ignore_errors=True)
    (kit / "wheels").mkdir(parents=True)
    keep = {norm(n) for n, _ in chosen}
    wheels = [w for w in sorted(raw.glob("*.whl")) if norm(w.name.split("-")[0]) in keep]
    dropped = sum(repack(w, kit / "wheels" / w.name) for w in wheels)
    sys.path.insert(0, str(REPO))
    from halo.datagen import tpch
    from halo.runtime.engines.model_cache import tokenizer_dir

    shutil.copytree(tokenizer_dir(), kit / "cache" / "tokenizers" / "smollm2")
    tpch.generate(kit / "tpch.duckdb", sf=0.01)
    tarball = build / "kit.tar.xz"
    with tarball.open("wb") as f:
        tar = subprocess.Popen(["tar", "-C", str(kit), "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-T0", "-6", "-c"], stdin=tar.stdout, stdout=f, check=True)
        tar.wait()
    for old in parts.glob("kit.*"):
        old.unlink()
    size = part_mib << 20
    digest = hashlib.sha256()
    with tarball.open("rb") as f:
        i = 0
        while chunk := f.read(size):
            digest.update(chunk)
            (parts / f"kit.tar.xz.{i:02d}").write_bytes(chunk)
            i += 1
    (parts / "kit.sha256").write_text(f"{digest.hexdigest()}  kit.tar.xz\n")
    print(f"{len(wheels)} wheels ({dropped / 2**20:.0f} MiB of unused files dropped)")
    print(f"{tarball.stat().st_size / 2**20:.1f} MiB in {i} part(s) of {part_mib} MiB under {parts}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="?", choices=["all", "deps", "halo"], default="all")
    ap.add_argument("--part-mib", type=int, default=58, help="part size (the run tool carries 64 MiB a call)")
    ap.add_argument("--build", type=Path, default=HERE / "build")
    ap.add_argument("--parts", type=Path, default=HERE / "parts")
    args = ap.parse_args(argv)
    args.parts.mkdir(parents=True, exist_ok=True)
    if args.what in ("all", "deps"):
        pack_deps(args.build, args.parts, args.part_mib)
    if args.what in ("all", "halo"):
        for old in args.parts.glob("halo-*.whl"):
            old.unlink()
        halo_wheel(args.build, args.parts)
        print(f"halo wheel: {next(args.parts.glob('halo-*.whl'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
