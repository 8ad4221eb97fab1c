"""An installed meal-edge works without its checkout (issue 9): build the wheel, install it in a fresh venv and run
it from an unrelated folder with HOME pointing at an empty folder.

The wheel is installed with the new venv's own pip, --no-deps --no-index; the venv reaches the third-party
dependencies (dlib, onnxruntime, ...) through a path file naming the project venv's site-packages (installing
them again would download ~300 MB). A path file adds that folder to sys.path but runs
none of the .pth files in it, so the checkout's editable-install hook stays off: the `edge` package that runs is
the wheel's own copy (the test checks where it was imported from), and the checkout is nowhere on the path.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # pip's own build isolation (setuptools from PyPI or pip's cache), as any packager builds it
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    [whl] = out.glob("meal_edge-*.whl")
    return whl


def test_the_wheel_ships_package_data_and_no_top_level_models_tests_or_bench(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("meal_edge-")}
    # our packages only: names like models, tests or bench would collide with other projects in site-packages
    assert {"edge", "enroll"} <= tops <= {"edge", "enroll", "district"}, tops
    for shipped in (
        "edge/models/manifest.toml",
        "edge/models/calibration.toml",
        "edge/models/calibration-nomirror.toml",
        "edge/default-config.toml",
        "edge/schemas/events.schema.json",
        "edge/schemas/status.schema.json",
        "edge/screens/templates/staff/list.html",
        "edge/screens/templates/display/page.html",
        "edge/screens/static/staff.js",
        "edge/py.typed",
    ):
        assert shipped in names, shipped
    assert not [n for n in names if n.endswith(".onnx")]


def test_installed_wheel_runs_from_an_unrelated_folder_with_an_empty_home(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    # the dependencies: the project venv's site-packages (see the module doc)
    (site / "zz_meal_edge_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    home = tmp_path / "home"
    work = tmp_path / "somewhere-else"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
    }
    run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env=env, cwd=work)
    me = env_dir / "bin" / "meal-edge"
    assert me.exists()

    where = run([str(py), "-c", "import edge, edge.paths as p; print(edge.__file__); print(p.PROJECT_MODELS_DIR)"],
                env=env, cwd=work).stdout.splitlines()
    assert Path(where[0]).is_relative_to(site) and Path(where[1]).is_relative_to(site), where
    assert not any(Path(w).is_relative_to(REPO) for w in where), where
    before = files_under(site)

    cfg = work / "meal-edge.toml"
    cfg.write_text(run([str(me), "default-config"], env=env, cwd=work).stdout)
    checked = run([str(me), "check-config", str(cfg)], env=env, cwd=work)
    assert "OK" in checked.stdout and "thresholds" in checked.stdout, checked.stdout

    demo = run([str(me), "demo"], env=env, cwd=work, timeout=900)
    assert "MEAL" in demo.stdout and "Grace Hopper" in demo.stdout and '"event_id"' in demo.stdout, demo.stdout[-2000:]

    state = home / ".local" / "state" / "meal-edge"
    built = run([str(me), "--config", str(cfg), "models", "build"], env=env, cwd=work)
    onnx = state / "models" / "dlib_face_recognition_resnet_model_v1.onnx"
    assert f"built {onnx}" in built.stdout, built.stdout
    assert onnx.is_file()
    verified = run([str(me), "--config", str(cfg), "models", "verify", "--no-parity"], env=env, cwd=work)
    assert "verified" in verified.stdout, verified.stdout

    # nothing was written inside the installed package, and nothing into the folder it ran from but the config
    assert files_under(site) == before
    assert sorted(p.name for p in work.iterdir()) == ["meal-edge.toml"]
