#!/usr/bin/env bash
# Validates every Kubernetes manifest under scripts/deploy/k8s offline against the schemas that
# the pinned kubernetes-validate ships (strict: an unknown field fails too), for the Kubernetes
# version given (default: one AKS supports). Installs kubernetes-validate into a venv under
# target/ the first time (PyPI), then checks the hardening (k8s-policy.py). Run by scripts/test.sh; exits 1 when a manifest is invalid.
# Usage: scripts/deploy/check-k8s.sh [KUBERNETES_VERSION]
set -euo pipefail
cd "$(dirname "$0")/../.."
tool_version=1.37.0
k8s_version=${1:-1.32.0}
venv=target/tools/kubernetes-validate-$tool_version

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "check-k8s: installing python3-venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$tool_version"
fi

mapfile -t files < <(find scripts/deploy/k8s -name '*.yaml' | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-k8s: no manifests found" >&2; exit 2; }
"$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "${files[@]}"
"$venv/bin/python" scripts/deploy/k8s-policy.py "${files[@]}"
echo "check-k8s: ${#files[@]} files valid for Kubernetes $k8s_version and hardened"
