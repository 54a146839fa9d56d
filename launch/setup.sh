#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for cllm: installs the Debian packages it builds against,
# fetches the default model, and builds into build/. Safe to run again (skips what is done).
#   CLLM_BUILD_TYPE (default Release) and CLLM_CMAKE_ARGS (extra cmake flags) tune the build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(build-essential cmake ninja-build pkg-config python3 python3-pip unzip curl
          libopenblas-dev libsentencepiece-dev libhdf5-dev nlohmann-json3-dev libgtest-dev
          libopenmpi-dev openmpi-bin libboost-dev
          python3-torch python3-h5py python3-numpy python3-pytest)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash launch/fetch_model.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${CLLM_BUILD_TYPE:-Release}" ${CLLM_CMAKE_ARGS:-} >/dev/null
ninja -C build -j"$(nproc)"
echo "built: build/cllm"
