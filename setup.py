"""BalanceBeam: MetaCLIP curation of image-text data as an Apache Beam pipeline.

Also the `--setup_file` Dataflow workers install: it ships both top-level
packages, `beam_pipeline` and `transforms`, with every subpackage (find_packages:
a subpackage left out would be an ImportError on the workers only).
"""

from pathlib import Path

import setuptools

HERE = Path(__file__).parent


def requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setuptools.setup(
    name="balancebeam",
    version="0.1.0",
    description="MetaCLIP curation of image-text training data as a portable Apache Beam pipeline",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["beam_pipeline", "beam_pipeline.*", "transforms", "transforms.*"]),
    python_requires=">=3.10",
    install_requires=requirements(),
    entry_points={
        "console_scripts": [
            "balancebeam-curate=beam_pipeline.curate:command",
        ]
    },
)
