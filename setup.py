"""Maps the top-level part folders to ``loradock.<part>`` (the design card's package-dir layout).

Written as code rather than a static list so that a sub-package added inside a part
(``serving/engines/``, say) is installed without anyone editing a package list.
"""

from setuptools import find_packages, setup

PARTS = {
    "loradock": "loradock",
    "loradock.registry": "registry",
    "loradock.training": "training",
    "loradock.serving": "serving",
    "loradock.evals": "evals",
    "loradock.spaces": "spaces",
}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in PARTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

# Shipped data (task data sets, lm-eval task YAMLs, job YAMLs, the Space's files) travels with the code.
DATA = ["*.yaml", "*.yml", "*.jsonl", "*.json", "*.md", "*.txt", "*.csv", "*.html", "*.css", "**/*"]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={name: DATA for name in packages},
    include_package_data=True,
)
