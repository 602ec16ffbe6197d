#!/usr/bin/env bash
# Debian packages the test suite needs; a no-op when they are already there.
set -euo pipefail
