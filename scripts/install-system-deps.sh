#!/usr/bin/env bash
# Debian packages the test suite needs; a no-op when they are already there.
#
# wordnet-base: the WordNet 3.0 database (in /usr/share/wordnet) that
# `python -m beam_pipeline.metadata build --wordnet` reads when nltk has no
# WordNet data of its own (nltk's downloader needs internet access).
set -euo pipefail

WORDNET_DIR=/usr/share/wordnet

if [ -f "$WORDNET_DIR/data.noun" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: $WORDNET_DIR is missing and there is no apt-get here;" \
         "install WordNet 3.0 yourself (or nltk's wordnet data); the WordNet tests will be skipped" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-system-deps: $WORDNET_DIR is missing; run \`apt-get install wordnet-base\` as root" \
             "(the WordNet tests will be skipped until then)" >&2
        exit 0
    fi
    SUDO="sudo"
fi

# Refresh the package lists only when apt does not know the package yet.
if ! apt-cache show wordnet-base >/dev/null 2>&1; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wordnet-base
