#!/usr/bin/env bash
# Installs what the test suite needs that is not a Python package, from the system's
# package manager (Debian/Ubuntu apt), and only what is missing: PostgreSQL (the case
# tests start their own server from its binaries) and Chromium with ChromeDriver (the
# console's browser tests drive it headless). Nothing is downloaded at test time.
# Idempotent: a second run installs nothing. Run as root, or with sudo available.
set -euo pipefail

want=(postgresql chromium chromium-driver)
missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present (${want[*]})"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system packages: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: installed ${missing[*]}"
