#!/usr/bin/env bash
# Installs the Debian programs the tests drive as real clients, if they are missing:
# curl, wget and ffmpeg (ranges, resume, seeking into an mp4) and chromium (the web page).
# Idempotent: with everything present it installs nothing. Uses sudo when not root.
set -euo pipefail
declare -A package_of=([curl]=curl [wget]=wget [ffmpeg]=ffmpeg [ffprobe]=ffmpeg [chromium]=chromium)
missing=()
for program in "${!package_of[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${package_of[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
echo "installing test tools from Debian: $packages" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
# shellcheck disable=SC2086 # one word per package
$sudo apt-get install -y -q --no-install-recommends $packages >/dev/null
