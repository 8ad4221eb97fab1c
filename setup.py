"""Only what pyproject.toml cannot say: the repository's top-level models/ and docs/ (the JSON schemas) are
installed inside the `edge` package, as `edge.models` and `edge.schemas`, so that no top-level `models`
package lands in site-packages. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["edge", "edge.*", "enroll", "enroll.*", "district", "district.*"]), "edge.models", "edge.schemas"],
    package_dir={"edge.models": "models", "edge.schemas": "docs"},
)
