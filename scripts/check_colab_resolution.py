"""Ask pip to resolve colab_setup.sh's install set as a Colab GPU runtime would, and fail on any
conflict: Unsloth (requirements-colab.txt) and requirements.txt in one resolution, for Python
3.12 on manylinux x86_64, with torch and torchvision pinned to a Colab release.

    python3 scripts/check_colab_resolution.py            the torch versions in COLAB_TORCH
    python3 scripts/check_colab_resolution.py 2.9.0      one torch version
    python3 scripts/check_colab_resolution.py --pins F   also write F: the versions resolved with
                                                         the last torch, as pip constraints
                                                         (scripts/colab_set_tests.sh installs them)

Colab's torch is already installed there, so pip only has to keep it. Here it is stood in for by
an empty local wheel of the same version ("2.9.0+colab", which satisfies torch==2.9.0): pip then
resolves everything else from the registry without downloading CUDA wheels it cannot get here
(the registry lacks some of torch's pinned nvidia-* wheels). llama-cpp-python is left out: PyPI
has only its source, and colab_setup.sh installs it in a step of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# torch releases a Colab runtime has shipped or may ship within Unsloth's range, with the
# torchvision built for each. Resolved in CI; README lists them.
COLAB_TORCH = {"2.9.0": "0.24.0", "2.10.0": "0.25.0", "2.12.0": "0.27.0"}
PLATFORMS = [f"manylinux_2_{x}_x86_64" for x in range(35, 16, -1)] + [
    "manylinux2014_x86_64", "linux_x86_64"]


def stub_wheel(folder: Path, name: str, version: str) -> Path:
    """An installable wheel with no files and no dependencies: the stand-in for a preinstalled
    package."""
    info = f"{name}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: lorahelpers\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
    return path


def torch_range() -> str:
    text = (ROOT / "requirements-colab.txt").read_text()
    return re.search(r"^# torch-range: *(\S+)", text, re.M).group(1)


def unsloth_requirement() -> str:
    text = (ROOT / "requirements-colab.txt").read_text()
    return re.search(r"^(unsloth\S*)", text, re.M).group(1)


def resolve(torch: str, torchvision: str, work: Path) -> dict:
    """pip's report of the install set, or SystemExit with pip's own words."""
    links = work / f"links-{torch}"
    links.mkdir()
    stub_wheel(links, "torch", f"{torch}+colab")
    stub_wheel(links, "torchvision", f"{torchvision}+colab")
    constraints = work / f"constraints-{torch}.txt"
    constraints.write_text(f"torch=={torch}\ntorchvision=={torchvision}\n")
    requirements = work / "requirements.txt"
    requirements.write_text("".join(line for line in (ROOT / "requirements.txt").open()
                                    if not line.startswith("llama-cpp-python")))
    report = work / f"report-{torch}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
           "--target", str(work / "target"), "--report", str(report), "--quiet",
           "--python-version", "3.12", "--only-binary=:all:", "--find-links", str(links),
           "-c", str(constraints), unsloth_requirement(), "-r", str(requirements)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        said = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                         if not line.startswith("WARNING: Location"))
        raise SystemExit(f"Colab install set does not resolve with torch {torch}:\n{said[-4000:]}")
    return json.loads(report.read_text())


def check(report: dict, torch: str) -> dict[str, str]:
    """{name: version} of the resolution; SystemExit if it replaced torch or if Unsloth's
    declared torch range is not the one colab_setup.sh checks."""
    installed = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]
                 for item in report["install"]}
    versions = {name: meta["version"] for name, meta in installed.items()}
    if versions.get("torch") != f"{torch}+colab":
        raise SystemExit(f"the resolution replaced Colab's torch {torch} with "
                         f"{versions.get('torch')}")
    declared = [r for r in installed["unsloth"].get("requires_dist", [])
                if re.match(r"torch\s*[<>=!]", r)]
    wanted = torch_range()
    spec = declared[0].replace("torch", "", 1).replace(" ", "") if declared else ""
    if sorted(spec.split(",")) != sorted(wanted.split(",")):
        raise SystemExit(f"unsloth {versions['unsloth']} declares torch{spec}, but "
                         f"requirements-colab.txt says torch-range: {wanted}. Fix: update the "
                         "torch-range line, which colab_setup.sh checks before installing.")
    return versions


def pins(versions: dict[str, str], torch: str) -> str:
    """The resolution as pip constraints, one name==version a line; torch and torchvision are
    left out (they stand for Colab's own builds).

    >>> print(pins({"torch": "2.12.0+colab", "trl": "1.15.0"}, "2.12.0"), end="")
    # The Colab GPU install set as pip resolved it for Python 3.12 with torch 2.12.0
    # (scripts/check_colab_resolution.py; torch and torchvision left out).
    trl==1.15.0
    """
    lines = [f"{name}=={version}" for name, version in sorted(versions.items())
             if name not in ("torch", "torchvision")]
    return (f"# The Colab GPU install set as pip resolved it for Python 3.12 with torch {torch}\n"
            "# (scripts/check_colab_resolution.py; torch and torchvision left out).\n"
            + "".join(line + "\n" for line in lines))


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("torch", nargs="?", help="one torch version (default: all of COLAB_TORCH)")
    parser.add_argument("torchvision", nargs="?", help="its torchvision (known ones are filled in)")
    parser.add_argument("--pins", type=Path, help="write the versions resolved with the last "
                        "torch to this file, as pip constraints")
    args = parser.parse_args(argv)
    wanted = COLAB_TORCH
    if args.torch:
        torchvision = args.torchvision or COLAB_TORCH.get(args.torch)
        if torchvision is None:
            raise SystemExit("give the torchvision version too: check_colab_resolution.py "
                             "TORCH TORCHVISION")
        wanted = {args.torch: torchvision}
    with tempfile.TemporaryDirectory() as tmp:
        for torch, torchvision in wanted.items():
            versions = check(resolve(torch, torchvision, Path(tmp)), torch)
            shown = ", ".join(f"{n} {versions[n]}" for n in (
                "unsloth", "transformers", "trl", "peft", "datasets", "accelerate",
                "bitsandbytes", "xformers") if n in versions)
            print(f"torch {torch}: resolves ({len(versions)} packages): {shown}", flush=True)
    if args.pins:
        write_atomically(args.pins, pins(versions, torch))
        print(f"wrote the versions resolved with torch {torch} to {args.pins}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
