"""What a release ships, as far as this machine can build it (no Docker engine): the two Bentos with their
generated Dockerfiles (what `bentoml containerize` builds in the release workflow), the kingmaker
package the k8s/Dockerfile installs, and the chart's `helm test` script against a real serving stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from .bentos_support import serving_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "kingmaker"


def _helper(name: str) -> str:
    """The value of a one-line `define` in the chart's _helpers.tpl (e.g. the pod uid of an image)."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    match = re.search(r'define "' + re.escape(name) + r'" -\}\}(.*?)\{\{- end', text)
    assert match, name
    return match.group(1).strip()


@pytest.fixture(scope="module")
def bentos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`bentoml build` of both bentofiles into a throwaway BENTOML_HOME; role -> the Bento folder."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    out = {}
    for role in ("scorer", "router"):
        subprocess.run([bentoml, "build", "-f", f"bentos/bentofile.{role}.yaml", "--version", "it", "-o", "tag", "."],
                       cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=600)
        out[role] = home / "bentos" / f"kingmaker-{role}" / "it"
    return out


@pytest.mark.parametrize(("role", "service"), [("scorer", "bentos.scorer:Scorer"), ("router", "bentos.router:Router")])
def test_each_bento_has_a_dockerfile_that_serves_it_as_the_chart_expects(bentos: dict[str, Path], role: str,
                                                                          service: str) -> None:
    bento = bentos[role]
    assert yaml.safe_load((bento / "bento.yaml").read_text())["service"] == service
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]' in dockerfile
    # the entry point serves the Bento when run without arguments, on BentoML's default port 3000
    assert 'set -- bentoml serve "$@" "$BENTO_PATH"' in (bento / "env" / "docker" / "entrypoint.sh").read_text()
    assert "EXPOSE 3000" in dockerfile  # the chart's containerPort
    assert "\nUSER bentoml\n" in dockerfile
    assert f"ARG BENTO_USER_UID={_helper('kingmaker.bentoUid')}" in dockerfile  # the chart's runAsUser
    assert (bento / "src" / "bentos" / f"{role}.py").is_file()


def test_the_scorer_image_defaults_to_the_champion_and_passive_openmp(bentos: dict[str, Path]) -> None:
    dockerfile = (bentos["scorer"] / "env" / "docker" / "Dockerfile").read_text()
    assert "ARG OMP_WAIT_POLICY=PASSIVE" in dockerfile and "ENV OMP_WAIT_POLICY=$OMP_WAIT_POLICY" in dockerfile
    assert "ARG KINGMAKER_MODEL_URI=models:/fraud-detector@champion" in dockerfile


def test_the_router_image_leaves_the_model_code_out(bentos: dict[str, Path]) -> None:
    src = bentos["router"] / "src"
    assert not (src / "bentos" / "scorer.py").exists() and not (src / "training").exists()
    requirements = (bentos["router"] / "env" / "python" / "requirements.txt").read_text()
    assert "xgboost" not in requirements and "mlflow" not in requirements


def test_the_kingmaker_image_installs_the_package_from_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """The k8s/Dockerfile build step (pip install of the copied sources), as a wheel: no Docker here."""
    dockerfile = (ROOT / "k8s" / "Dockerfile").read_text()
    context = tmp_path / "context"
    copied = re.findall(r"^COPY (?!--from)(\S+)(?: \S+)* \S+$", dockerfile, re.MULTILINE)
    assert {"pyproject.toml", "kingmaker", "k8s"} <= set(copied)
    for src in copied:
        (context / src).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / src).is_dir():
            subprocess.run(["cp", "-r", str(ROOT / src), str(context / src)], check=True)
        else:
            (context / src).write_bytes((ROOT / src).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "wheel"), str(context)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("kingmaker-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"kingmaker/cli.py", "k8s/kube.py", "drift_service/cli.py", "bentos/router.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kingmaker = kingmaker.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE) and _helper("kingmaker.kingmakerUid") == "10001"


def test_the_helm_test_script_passes_against_a_real_router_and_fails_readably(serving_home: Path,
                                                                               tmp_path: Path) -> None:
    script = CHART / "files" / "helm-test.py"
    with serving_stack(serving_home, tmp_path, {"challenger_weight": 0.5}) as stack:
        ok = subprocess.run([sys.executable, str(script), "--predict", "--timeout", "60", stack.router.url],
                            capture_output=True, text=True, timeout=120, check=False)
        bad = subprocess.run([sys.executable, str(script), "--timeout", "3", stack.router.url,
                              "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^ok   http://127\.0\.0\.1:\d+: (champion|challenger) arm, fraud-detector v\d+$", ok.stdout,
                     re.MULTILINE), ok.stdout
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stdout.splitlines()[0].startswith("ok ") and bad.stdout.splitlines()[1].startswith("FAIL ")
