#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/kubernetes offline (docs/kubernetes.md):
#
# 1. kubernetes-validate --strict (PyPI) against the schemas of Kubernetes 1.29 and 1.34:
#    every built-in object, with unknown fields refused.
# 2. The snapshot.storage.k8s.io/v1 objects (VolumeSnapshotClass, VolumeSnapshot), which
#    kubernetes-validate has no schema for (it only warns "Couldn't find schema" and passes
#    them): checked against the fields, required fields and enums of the v1 schemas in
#    kubernetes-csi/external-snapshotter's client/config/crd/, unknown fields refused.
# 3. Every image pinned (a tag other than latest, or a digest), in the manifests and in
#    deploy/Containerfile's base images.
# 4. References between the files: the driver name, classes, service accounts, roles,
#    ConfigMap keys, every $(VAR) in a container's arguments defined in its env, and
#    kustomization.yaml listing every manifest.
# 5. Negative controls: broken copies of a real manifest (a misspelt field in a container,
#    a string where an integer belongs) must FAIL kubernetes-validate on both versions, and
#    broken objects must fail checks 2 to 4; otherwise the script fails.
#
# Needs python3 with pip (installs kubernetes-validate, which brings PyYAML and jsonschema,
# when missing); no cluster, no network beyond that install. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

DIR=deploy/kubernetes
VERSIONS=(1.29 1.34)
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "installing kubernetes-validate (pip)"
    python3 -m pip install --quiet kubernetes-validate || { echo "FAIL: cannot install kubernetes-validate"; exit 1; }
fi
kv() { python3 -m kubernetes_validate "$@"; }
echo "kubernetes-validate $(kv --version 2>&1 | tail -1)"
for v in "${VERSIONS[@]}"; do
    python3 - "$v" <<'PY' || { echo "FAIL: this kubernetes-validate has no schemas for Kubernetes $1"; exit 1; }
import os, sys, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
sys.exit(0 if os.path.isdir(os.path.join(d, f"v{sys.argv[1]}.0-local-strict")) else 1)
PY
done

mapfile -t FILES < <(find "$DIR" -name '*.yaml' ! -name kustomization.yaml | sort)
[ "${#FILES[@]}" -gt 0 ] || { echo "FAIL: no manifests under $DIR"; exit 1; }
echo "manifests: ${FILES[*]}"

# Kinds kubernetes-validate cannot check, which check 2 below covers.
CRD_KINDS="VolumeSnapshotClass VolumeSnapshot"

# --- 1. kubernetes-validate --strict, per Kubernetes version ---------------------------------
for v in "${VERSIONS[@]}"; do
    out=$(kv --strict -k "$v" "${FILES[@]}" 2>&1)
    rc=$?
    n_pass=$(grep -c ' passed for resource ' <<<"$out")
    if [ "$rc" -eq 0 ]; then
        ok "kubernetes-validate --strict -k $v: $n_pass objects valid"
    else
        bad "kubernetes-validate --strict -k $v (exit $rc):"
        grep -v ' passed for resource ' <<<"$out" | sed 's/^/    /'
    fi
    # Objects without a schema are only warned about: each must be a kind checked below.
    while read -r kind; do
        [ -n "$kind" ] || continue
        if [[ " $CRD_KINDS " == *" $kind "* ]]; then
            echo "    (no schema in kubernetes-validate for $kind: checked against the CRD below)"
        else
            bad "kubernetes-validate -k $v has no schema for kind $kind, and nothing else checks it"
        fi
    done < <(sed -n "s/.*Couldn't find schema for kind \([A-Za-z]*\) .*/\1/p" <<<"$out" | sort -u)
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- 2-4 (and their negative controls): the checks in Python ---------------------------------
python3 - "$DIR" <<'PY' | tee "$TMP/python.out"
import copy, glob, os, re, sys
import yaml, jsonschema

root = sys.argv[1]
failures = 0
passes = 0

def ok(msg):
    global passes
    passes += 1
    print(f"ok: {msg}")

def bad(msg):
    global failures
    failures += 1
    print(f"FAIL: {msg}")

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

paths = sorted(glob.glob(f"{root}/**/*.yaml", recursive=True))
docs = []          # (path, object) of every Kubernetes object
kustomization = None
for p in paths:
    for d in load(p):
        if d.get("kind") == "Kustomization":
            kustomization = (p, d)
        else:
            docs.append((p, d))

# --- 2. snapshot.storage.k8s.io/v1, after external-snapshotter's client/config/crd/ ----------
# The v1 openAPIV3Schema of each CRD, strict: additionalProperties false wherever the CRD
# lists the properties of an object.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}
CRD_SCHEMAS = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "deletionPolicy", "driver"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": METADATA,
            "deletionPolicy": {"type": "string", "enum": ["Delete", "Retain"]},
            "driver": {"type": "string"},
            "parameters": STRING_MAP,
        },
    },
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["source"],
                "additionalProperties": False,
                "properties": {
                    "source": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "persistentVolumeClaimName": {"type": "string"},
                            "volumeSnapshotContentName": {"type": "string"},
                        },
                        "oneOf": [{"required": ["persistentVolumeClaimName"]},
                                  {"required": ["volumeSnapshotContentName"]}],
                    },
                    "volumeSnapshotClassName": {"type": "string", "minLength": 1},
                },
            },
        },
    },
}

def crd_errors(obj):
    schema = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if schema is None:
        return None
    v = jsonschema.Draft7Validator(schema)
    return [("/".join(map(str, e.absolute_path)) or "(top level)") + ": " + e.message for e in v.iter_errors(obj)]

crd_count = 0
for p, d in docs:
    if d.get("kind") in ("VolumeSnapshotClass", "VolumeSnapshot"):
        errs = crd_errors(d)
        if errs is None:
            bad(f"{p}: {d.get('kind')} {d.get('apiVersion')}: no schema known (only snapshot.storage.k8s.io/v1)")
        elif errs:
            bad(f"{p}: {d['kind']} {d['metadata'].get('name')}: " + "; ".join(errs))
        else:
            crd_count += 1
ok(f"{crd_count} snapshot.storage.k8s.io/v1 objects match the CRD schemas")

# Negative controls of the CRD check.
good_class = next(d for _, d in docs if d.get("kind") == "VolumeSnapshotClass")
broken = copy.deepcopy(good_class)
broken["deletionPolicy"] = "Keep"
broken["drivr"] = broken.pop("driver")
errs = crd_errors(broken)
if errs and any("Keep" in e for e in errs) and any("drivr" in e for e in errs) and any("'driver' is a required" in e for e in errs):
    ok("negative control: a VolumeSnapshotClass with a bad deletionPolicy and a misspelt driver fails (" + "; ".join(errs) + ")")
else:
    bad(f"negative control: the broken VolumeSnapshotClass was not refused as expected: {errs}")
snap = next((d for _, d in docs if d.get("kind") == "VolumeSnapshot"), None)
if snap is not None:
    broken = copy.deepcopy(snap)
    broken["spec"]["source"] = {"persistentVolumeClaimName": "a", "volumeSnapshotContentName": "b"}
    errs = crd_errors(broken)
    if errs:
        ok("negative control: a VolumeSnapshot with two sources fails")
    else:
        bad("negative control: a VolumeSnapshot with two sources passed")

# --- 3. images pinned --------------------------------------------------------------------
def pod_spec(obj):
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return (spec.get("template") or {}).get("spec")

def containers(obj):
    ps = pod_spec(obj) or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in ps.get(key) or []:
            yield c

def pinned(image):
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return tag not in ("", "latest") and "$" not in tag

def image_problems(objs):
    probs = []
    for p, d in objs:
        for c in containers(d):
            img = c.get("image", "")
            if not pinned(img):
                probs.append(f"{p}: {d['kind']} {d['metadata']['name']} container {c.get('name')}: image '{img}' is not pinned")
    return probs

images = sorted({c.get("image") for _, d in docs for c in containers(d)})
probs = image_problems(docs)
containerfile = "deploy/Containerfile"
if os.path.exists(containerfile):
    text = open(containerfile).read()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    for ref in re.findall(r"^FROM\s+(\S+)", text, re.M):
        name = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)
        images.append(f"{name} (Containerfile)")
        if not pinned(name):
            probs.append(f"{containerfile}: FROM {ref} ({name}) is not pinned")
else:
    probs.append(f"{containerfile} is missing")
if probs:
    for x in probs:
        bad(x)
else:
    ok(f"{len(images)} images pinned: " + ", ".join(images))
latest = [("negative-control.yaml", {"kind": "Pod", "metadata": {"name": "x"},
          "spec": {"containers": [{"name": "a", "image": "busybox:latest"}, {"name": "b", "image": "busybox"}]}})]
if len(image_problems(latest)) == 2:
    ok("negative control: images busybox:latest and busybox are refused as unpinned")
else:
    bad("negative control: unpinned images were not refused")

# --- 4. references between the files ---------------------------------------------------------
def named(kind, name=None, namespace=None):
    return [d for _, d in docs if d.get("kind") == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]

def reference_problems(objs):
    global docs
    saved, docs = docs, objs
    try:
        probs = []
        drivers = [d["metadata"]["name"] for d in named("CSIDriver")]
        if len(drivers) != 1:
            probs.append(f"expected one CSIDriver, found {drivers}")
        driver = drivers[0] if drivers else None
        for sc in named("StorageClass"):
            if sc.get("provisioner") != driver:
                probs.append(f"StorageClass {sc['metadata']['name']}: provisioner {sc.get('provisioner')} is not the CSIDriver {driver}")
        for vsc in named("VolumeSnapshotClass"):
            if vsc.get("driver") != driver:
                probs.append(f"VolumeSnapshotClass {vsc['metadata']['name']}: driver {vsc.get('driver')} is not the CSIDriver {driver}")
        for p, d in docs:
            for t in (d.get("spec") or {}).get("volumeClaimTemplates") or []:
                sc = t["spec"].get("storageClassName")
                if sc and not named("StorageClass", sc):
                    probs.append(f"{p}: claim template {t['metadata']['name']} names StorageClass {sc}, which no manifest defines")
            if d.get("kind") == "VolumeSnapshot":
                c = d["spec"].get("volumeSnapshotClassName")
                if c and not named("VolumeSnapshotClass", c):
                    probs.append(f"{p}: VolumeSnapshot names class {c}, which no manifest defines")
            ps = pod_spec(d)
            if ps is None:
                continue
            ns = d["metadata"].get("namespace")
            sa = ps.get("serviceAccountName")
            if sa and not named("ServiceAccount", sa, ns):
                probs.append(f"{p}: {d['kind']} {d['metadata']['name']} uses ServiceAccount {sa}, not defined in {ns}")
            for c in containers(d):
                env = {e["name"]: e for e in c.get("env") or []}
                for e in env.values():
                    ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                    if ref:
                        cms = named("ConfigMap", ref["name"], ns)
                        if not cms or ref["key"] not in (cms[0].get("data") or {}):
                            probs.append(f"{p}: container {c['name']}: ConfigMap {ref['name']} key {ref['key']} is not defined")
                for arg in (c.get("command") or []) + (c.get("args") or []):
                    for var in re.findall(r"\$\((\w+)\)", str(arg)):
                        if var not in env:
                            probs.append(f"{p}: container {c['name']}: $({var}) in its arguments is not in its env (Kubernetes would pass it verbatim)")
                if driver:
                    for arg in c.get("args") or []:
                        m = re.match(r"--kubelet-registration-path=(.*)", str(arg))
                        if m and f"/plugins/{driver}/" not in m.group(1):
                            probs.append(f"{p}: registration path {m.group(1)} is not under plugins/{driver}/")
        for p, d in docs:
            if d.get("kind") in ("ClusterRoleBinding", "RoleBinding"):
                rk, rn = d["roleRef"]["kind"], d["roleRef"]["name"]
                if not named(rk, rn, d["metadata"].get("namespace") if rk == "Role" else None):
                    probs.append(f"{p}: {d['kind']} {d['metadata']['name']} refers to {rk} {rn}, which no manifest defines")
                for s in d.get("subjects") or []:
                    if s["kind"] == "ServiceAccount" and not named("ServiceAccount", s["name"], s.get("namespace")):
                        probs.append(f"{p}: {d['kind']} {d['metadata']['name']} binds ServiceAccount {s.get('namespace')}/{s['name']}, which no manifest defines")
        return probs
    finally:
        docs = saved

probs = reference_problems(docs)
if probs:
    for x in probs:
        bad(x)
else:
    ok("references agree: driver name, classes, service accounts, roles, ConfigMap keys, $(VAR)s")
broken = copy.deepcopy(docs)
for _, d in broken:
    if d.get("kind") == "StorageClass":
        d["provisioner"] = "csi.example.com"
    for c in containers(d):
        if c.get("args"):
            c["args"] = list(c["args"]) + ["--oops=$(NOT_DEFINED)"]
            break
probs = reference_problems(broken)
if any("csi.example.com" in x for x in probs) and any("NOT_DEFINED" in x for x in probs):
    ok("negative control: a wrong provisioner and an undefined $(VAR) are caught")
else:
    bad(f"negative control: broken references were not caught: {probs}")

if kustomization is None:
    bad(f"{root}/kustomization.yaml is missing")
else:
    kp, k = kustomization
    listed = set(k.get("resources") or [])
    missing = [r for r in listed if not os.path.exists(os.path.join(os.path.dirname(kp), r))]
    manifests = {os.path.relpath(p, os.path.dirname(kp)) for p in paths
                 if os.path.dirname(p) == os.path.dirname(kp) and p != kp}
    unlisted = sorted(manifests - listed)
    if missing or unlisted:
        bad(f"{kp}: lists missing files {missing}, leaves out {unlisted}")
    else:
        ok(f"{kp} lists all {len(listed)} manifests of {os.path.dirname(kp)} (not examples/)")

print(f"python-checks: {passes} passed, {failures} failed")
PY
counts=$(sed -n 's/^python-checks: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$TMP/python.out")
if [ -n "$counts" ]; then
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
else
    bad "the Python checks did not finish"
fi

# --- 5. negative controls for kubernetes-validate --------------------------------------------
# Broken copies of server.yaml in a temporary directory: each must fail, for the reason given.
python3 - "$DIR/server.yaml" "$TMP" <<'PY'
import sys, yaml
src, out = sys.argv[1], sys.argv[2]
def deployment(ds):
    return next(d for d in ds if d["kind"] == "Deployment")
# A misspelt field in a container spec: volumeMounts -> volumeMount.
ds = list(yaml.safe_load_all(open(src)))
c = deployment(ds)["spec"]["template"]["spec"]["containers"][0]
c["volumeMount"] = c.pop("volumeMounts")
yaml.safe_dump_all(ds, open(f"{out}/misspelt-field.yaml", "w"), sort_keys=False)
# A wrong type: replicas as a string.
ds = list(yaml.safe_load_all(open(src)))
deployment(ds)["spec"]["replicas"] = "one"
yaml.safe_dump_all(ds, open(f"{out}/wrong-type.yaml", "w"), sort_keys=False)
PY
for v in "${VERSIONS[@]}"; do
    for case in "misspelt-field:'volumeMount' was unexpected" "wrong-type:'one' is not of type 'integer'"; do
        name=${case%%:*}
        want=${case#*:}
        out=$(kv --strict -k "$v" "$TMP/$name.yaml" 2>&1)
        rc=$?
        if [ "$rc" -ne 0 ] && grep -qF "$want" <<<"$out"; then
            ok "negative control: $name copy of server.yaml fails kubernetes-validate --strict -k $v ($want)"
        else
            bad "negative control: $name copy of server.yaml did not fail as expected on -k $v (exit $rc): $out"
        fi
    done
done

echo "validate-manifests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
