"""Flex Template entry point: FLEX_TEMPLATE_PYTHON_PY_FILE in templates/Dockerfile.

Dataflow's template launcher runs `python main.py --name=value ...` with the job's parameters
(the curation options of templates/metadata.json) and its own Beam options (--runner,
--project, --region, --staging_location, --temp_location, --template_location,
--sdk_container_image, ...). `beam_pipeline.curate.run` parses them strictly, builds the
pipeline, submits it and returns at once: a Dataflow job does not need its launcher.

Two defaults make a launch safe even when a parameter is left out:
  --runner=DataflowRunner   never run the whole curation inside the launcher VM;
  --sdk_container_image     the image this file is in (BALANCEBEAM_SDK_CONTAINER_IMAGE, set at
                            image build time), so the workers can import beam_pipeline and
                            transforms.
An explicit flag always wins.  To try the image locally: `python /template/main.py
--runner=DirectRunner --input ... --metadata ... --output_dir ...`.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

IMAGE_VARIABLE = "BALANCEBEAM_SDK_CONTAINER_IMAGE"


def launcher_argv(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The launcher's arguments plus the defaults above, where the flag is absent."""
    argv = list(argv)
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    if "--runner" not in given:
        argv.append("--runner=DataflowRunner")
    image = environ.get(IMAGE_VARIABLE, "").strip()
    if image and not given & {"--sdk_container_image", "--worker_harness_container_image"}:
        argv.append(f"--sdk_container_image={image}")
    return argv


def main() -> None:
    from beam_pipeline.curate import main as curate_main

    sys.argv = [sys.argv[0], *launcher_argv(sys.argv[1:], os.environ)]
    curate_main()


if __name__ == "__main__":
    main()
