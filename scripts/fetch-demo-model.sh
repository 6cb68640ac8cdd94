#!/usr/bin/env bash
# Install the demo model (Qwen2.5-Coder-0.5B-Instruct, a model that refuses) into
# models/qwen2.5-coder-0.5b-instruct/. See scripts/fetch-model.sh for the other models.
exec "$(dirname "$0")/fetch-model.sh" qwen2.5-coder-0.5b-instruct "$@"
