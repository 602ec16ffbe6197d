#!/usr/bin/env bash
# BalanceBeam's Dataflow Flex Template: build the image, build the template, run a job.
#
#   bash templates/flex_template.sh image     # Cloud Build: templates/Dockerfile -> $IMAGE
#   bash templates/flex_template.sh build     # template spec (gs://) from $IMAGE + metadata.json
#   bash templates/flex_template.sh run [more gcloud flags, e.g. --parameters overwrite=true]
#
# Settings (environment variables):
#   PROJECT, REGION, BUCKET      required: the Cloud project, its Dataflow region, a gs:// bucket
#                                (no gs:// prefix) for the template, staging and temp files
#   REPOSITORY                   Artifact Registry Docker repository (default: balancebeam)
#   TAG                          image and template version (default: the current git commit)
#   IMAGE, TEMPLATE_FILE         derived from the above unless set
#   run only: INPUT (one glob), METADATA, OUTPUT_DIR (all gs://), THRESHOLD (20000), SEED (0),
#             MACHINE_TYPE (n2-standard-4), MAX_WORKERS (20), JOB_NAME
#   DRY_RUN=1                    print the commands instead of running them
#
# One-time set-up:  gcloud artifacts repositories create "$REPOSITORY" \
#   --repository-format=docker --location="$REGION" --project="$PROJECT"
# Details and sizing: docs/scale-out.md.
set -euo pipefail

cd "$(dirname "$0")/.."

need() {
    local name
    for name in "$@"; do
        if [ -z "${!name:-}" ]; then
            echo "error: set $name (see the top of templates/flex_template.sh)" >&2
            exit 2
        fi
    done
}

run() {
    if [ -n "${DRY_RUN:-}" ]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}

need PROJECT REGION BUCKET
REPOSITORY=${REPOSITORY:-balancebeam}
TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || date +%Y%m%d-%H%M%S)}
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/balancebeam:$TAG}
TEMPLATE_FILE=${TEMPLATE_FILE:-gs://$BUCKET/templates/balancebeam-$TAG.json}

case "${1:-}" in
image)
    # Build context: the repository root (setup.py, requirements.txt, both packages).
    run gcloud builds submit . \
        --config templates/cloudbuild.yaml \
        --substitutions "_IMAGE=$IMAGE" \
        --project "$PROJECT"
    ;;
build)
    # The launcher and the workers use the same image ($IMAGE).
    run gcloud dataflow flex-template build "$TEMPLATE_FILE" \
        --image "$IMAGE" \
        --sdk-language PYTHON \
        --metadata-file templates/metadata.json \
        --project "$PROJECT"
    ;;
run)
    shift
    need INPUT METADATA OUTPUT_DIR
    # Submits the job and returns: the launcher does not wait for the job, and neither does
    # this command. stats.json under OUTPUT_DIR marks a finished run.
    run gcloud dataflow flex-template run "${JOB_NAME:-balancebeam-$(date +%Y%m%d-%H%M%S)}" \
        --template-file-gcs-location "$TEMPLATE_FILE" \
        --project "$PROJECT" \
        --region "$REGION" \
        --staging-location "gs://$BUCKET/staging" \
        --temp-location "gs://$BUCKET/tmp" \
        --worker-machine-type "${MACHINE_TYPE:-n2-standard-4}" \
        --max-workers "${MAX_WORKERS:-20}" \
        --parameters "input=$INPUT" \
        --parameters "metadata=$METADATA" \
        --parameters "output_dir=$OUTPUT_DIR" \
        --parameters "threshold=${THRESHOLD:-20000}" \
        --parameters "seed=${SEED:-0}" \
        --parameters "sdk_container_image=$IMAGE" \
        "$@"
    ;;
*)
    echo "usage: bash templates/flex_template.sh image|build|run [gcloud flags]" >&2
    exit 2
    ;;
esac
