"""The hardening the manifests promise, checked (run by check-k8s.sh with kubernetes-validate's
PyYAML): every pod non-root with seccomp RuntimeDefault and no service-account token, every
container with a read-only root, no privilege escalation and no capabilities, no password in
args or env, and no RBAC objects at all. Prints each breach; exits 1 if there is one."""
import sys

import yaml

problems = []


def check_pod(where, spec):
    sc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    if sc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        at = f"{where} container {c.get('name')}"
        csc = c.get("securityContext") or {}
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{at}: capabilities do not drop ALL")
        words = c.get("args", []) + c.get("command", [])
        words += [f"{e.get('name')}={e.get('value', '')}" for e in c.get("env", [])]
        if any("password" in w.lower() for w in words):
            problems.append(f"{at}: a password in args, command or env")


for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        where = f"{path}: {kind}/{name}"
        if kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{where}: bluegreen needs no Kubernetes API rights")
        if kind == "ServiceAccount" and d.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        if kind in ("Job", "Deployment"):
            check_pod(where, d["spec"]["template"]["spec"])

for p in problems:
    print(f"ERROR {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
