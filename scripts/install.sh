#!/usr/bin/env bash
# Create .venv/ and install quantsweep into it, torch pinned to its CPU build.
# Usage: bash scripts/install.sh [pip target, default ".[dev]"; "-e .[dev]" for an editable install;
# pip options may come first, in the same argument: "--no-compile .[dev]"]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# constraints.txt pins torch==2.13.0 (the CPU build) and the transformers range optimum-onnx supports.
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet -c constraints.txt ${1:-.[dev]}
# setuptools builds in the source tree; what it leaves there (build/, src/*.egg-info) is not needed
rm -rf build src/*.egg-info
echo "quantsweep installed in .venv/ ($(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("quantsweep"))'))"
# An editable install maps packages through an import hook that Hydra's plugin scan
# (pkgutil over the hydra_plugins namespace) does not see; put launchers/ on the path.
case " ${1:-} " in
*" -e "*)
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$PWD/launchers" >"$site/quantsweep-launchers.pth"
  ;;
esac
