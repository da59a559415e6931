"""deploy/docker/Dockerfile builds the image the chart runs: Ray's image of the Ray version and
Python that pyproject.toml pins, the files the package's build reads (and no more), installed as
pyproject.toml declares (not editable, no extras), tagged as the chart's default image. No Docker
here: the Dockerfile is parsed, and the package is built into a wheel from exactly the copied files
(no network: --no-build-isolation, --no-deps) to check that they are enough."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import yaml
from chart_render import CHART, ROOT

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(dockerfile: str | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    lines = (dockerfile or DOCKERFILE.read_text()).splitlines()
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in lines if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def copied(dockerfile: str | None = None) -> list[str]:
    """The sources of every COPY (the last argument is the destination)."""
    out = []
    for name, args in instructions(dockerfile):
        if name == "COPY":
            out += [a for a in args.split() if not a.startswith("--")][:-1]
    return out


def ray_pin() -> str:
    [pin] = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray(\[|=)", d)]
    return pin.split("==")[1]


def test_the_base_is_rays_image_of_the_pinned_ray_and_python():
    [arg] = [a for n, a in instructions() if n == "ARG" and a.startswith("RAY_IMAGE=")]
    python = PYPROJECT["project"]["requires-python"].removeprefix(">=").replace(".", "")
    assert arg == f"RAY_IMAGE=rayproject/ray:{ray_pin()}-py{python}-gpu"
    assert ("FROM", "${RAY_IMAGE}") in instructions()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["ray"]["version"] == ray_pin()  # the chart's RayService names the same Ray


def build_inputs() -> list[str]:
    """What setuptools reads for this package: pyproject.toml, the readme, the package roots."""
    where = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    return sorted({"pyproject.toml", PYPROJECT["project"]["readme"]} | {f"{w}/" for w in where})


def test_it_copies_what_the_build_reads_and_installs_it_as_declared():
    assert sorted(copied()) == build_inputs()
    # the check sees a line that copies more (the tests, a local .venv...)
    more = DOCKERFILE.read_text().replace("WORKDIR /home/ray\n", "COPY --chown=ray:users tests/ tests/\nWORKDIR /home/ray\n")
    assert sorted(copied(more)) != build_inputs()
    [install] = [a for n, a in instructions() if n == "RUN" and "pip install" in a]
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", install), install  # not -e, no extras
    for script in PYPROJECT["project"]["scripts"]:
        assert f"{script} --help" in install  # the console scripts the chart's Jobs run


def test_the_charts_default_image_is_this_build():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == PYPROJECT["project"]["version"] and values["image"]["tag"] == ""
    build = re.search(r"docker build -f deploy/docker/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert build and build.group(1) == f"{values['image']['repository']}:{chart['appVersion']}"
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "**/__pycache__"} <= set(ignored)


def test_the_copied_files_build_the_whole_package(tmp_path):
    """A wheel from the copied files only: every package, the gRPC stubs and the package data."""
    context = tmp_path / "context"
    context.mkdir()
    for source in copied():
        target = context / source
        if source.endswith("/"):
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / source, target)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(context)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("blockrag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("blockrag/cli/app.py", "blockrag/v1/generation_pb2.py", "blockrag/v1/generation_pb2.pyi",
                   "blockrag_services/app.py", "blockrag/kvcache/migrations/script.py.mako"):
        assert module in names, module
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            prefix = package.replace(".", "/") + "/"
            regex = re.compile(re.escape(prefix) + re.escape(pattern).replace(r"\*", "[^/]*") + "$")
            assert any(regex.match(n) for n in names), f"{package}: {pattern} not in the wheel"
