"""Fills deploy/autoscaler/wheelhouse/ on the host for the Python inside the daemon's image, so
that the image builds with no package index reachable from its containers.

Two halves, one file (deploy/build-images.sh runs both):

  docker run -i --rm <the Dockerfile's venv stage> /opt/autoscaler/bin/python - describe < fetch-wheels.py
      prints the image's Python as JSON: its PEP 508 marker environment and wheel tags;
  | python3 fetch-wheels.py download REPO WHEELHOUSE
      reads that JSON and runs the host's pip to download binary wheels of the project's
      dependencies and build requirements for that Python.

pip's --python-version and --platform choose which wheels fit, but pip still evaluates the
markers of dependencies against the Python that runs it (pypa/pip#11010): a host on 3.11.7
would skip redis' `async-timeout; python_full_version < "3.11.3"`, which the image's 3.11.2
needs. So the download evaluates markers in the image's environment instead. Only which files
to fetch is decided here: the image's own pip resolves and installs from them, and fails the
build if one is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def describe() -> None:
    """In the image: its marker environment and its wheel tags, most specific first."""
    from pip._vendor.packaging import markers, tags

    supported = list(tags.sys_tags())
    print(json.dumps({
        "environment": markers.default_environment(),
        "interpreter": supported[0].interpreter,
        "abis": list(dict.fromkeys(tag.abi for tag in supported)),
        "platforms": list(dict.fromkeys(tag.platform for tag in supported if tag.platform != "any")),
    }))


def requirements(repo: Path) -> list[str]:
    """The project's dependencies and its build backend's, from pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # a host Python before 3.11
        from pip._vendor import tomli as tomllib
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    return [*pyproject["project"]["dependencies"], *pyproject["build-system"]["requires"]]


def download(target: dict, repo: str, wheelhouse: str) -> int:
    from pip._internal.cli.main import main as pip_main
    from pip._vendor.packaging import markers

    environment = target["environment"]
    # pip evaluates every marker through this function (see the module's docstring).
    markers.default_environment = lambda: dict(environment)
    interpreter = target["interpreter"]  # e.g. cp311
    argv = [
        "download", "--quiet", "--disable-pip-version-check", "--dest", wheelhouse,
        "--only-binary=:all:", "--python-version", environment["python_full_version"],
        "--implementation", interpreter[:2],
        *(f"--abi={abi}" for abi in target["abis"]),
        *(f"--platform={platform}" for platform in target["platforms"]),
        *requirements(Path(repo)),
    ]
    return pip_main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["describe"]:
        describe()
    elif sys.argv[1:2] == ["download"] and len(sys.argv) == 4:
        sys.exit(download(json.load(sys.stdin), sys.argv[2], sys.argv[3]))
    else:
        sys.exit("usage: fetch-wheels.py describe | fetch-wheels.py download REPO WHEELHOUSE")
