#!/usr/bin/env bash
# Smoke test of the local control plane (scripts/k8s/cluster.sh):
# Deployment -> 3 Running pods on fake nodes, scale to 5, delete + GC,
# CRD with a scale subresource + `kubectl scale` on a custom resource,
# kube-apiserver restart. Prints timings. Leaves the cluster up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${ROOT}/scripts/k8s/cluster.sh"
NS="civic-smoke"

log() { printf '[%s] %s\n' "$(date '+%H:%M:%S')" "$*"; }
now_ms() { date +%s%3N; }
fail() { log "FAIL: $*"; exit 1; }

t0=$(now_ms)
KUBECONFIG="$("$CLUSTER" up)"
export KUBECONFIG
eval "$("$CLUSTER" env)"
log "cluster up in $(( $(now_ms) - t0 ))ms"

kubectl get nodes -o wide
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null

# wait_running N: until exactly N pods of app=web are Running on fake nodes
wait_running() {
  local want="$1" deadline=$(( $(date +%s) + 120 )) n
  while :; do
    n=$(kubectl -n "$NS" get pods -l app=web \
      -o jsonpath='{range .items[*]}{.status.phase} {.spec.nodeName}{"\n"}{end}' \
      | awk '$1 == "Running" && $2 ~ /^node-/' | wc -l)
    [[ "$n" == "$want" ]] && return 0
    (( $(date +%s) < deadline )) || fail "want $want Running pods, have $n"
    sleep 0.2
  done
}

t=$(now_ms)
kubectl -n "$NS" create deployment web --image=nginx --replicas=3 >/dev/null
wait_running 3
log "3 pods Running in $(( $(now_ms) - t ))ms"
kubectl -n "$NS" get pods -o wide

t=$(now_ms)
kubectl -n "$NS" scale deployment web --replicas=5 >/dev/null
wait_running 5
log "scaled to 5 Running in $(( $(now_ms) - t ))ms"

t=$(now_ms)
kubectl -n "$NS" delete deployment web >/dev/null
deadline=$(( $(date +%s) + 120 ))
until [[ -z "$(kubectl -n "$NS" get pods,replicasets -o name)" ]]; do
  (( $(date +%s) < deadline )) || fail "pods/replicasets not garbage-collected"
  sleep 0.2
done
log "deployment deleted, replicaset + pods garbage-collected in $(( $(now_ms) - t ))ms"

# CRD with a scale subresource.
t=$(now_ms)
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.civic.example
spec:
  group: smoke.civic.example
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
EOF
kubectl wait --for=condition=Established crd/widgets.smoke.civic.example --timeout=60s >/dev/null
kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: smoke.civic.example/v1
kind: Widget
metadata: {name: w1}
spec: {replicas: 1}
EOF
kubectl -n "$NS" scale widget w1 --replicas=4 >/dev/null
got=$(kubectl -n "$NS" get widget w1 -o jsonpath='{.spec.replicas}')
[[ "$got" == 4 ]] || fail "custom resource scale: spec.replicas=$got"
got=$(kubectl -n "$NS" get --raw "/apis/smoke.civic.example/v1/namespaces/${NS}/widgets/w1/scale")
[[ "$got" == *'"replicas":4'* ]] || fail "scale subresource: $got"
log "CRD + kubectl scale on custom resource OK in $(( $(now_ms) - t ))ms"
kubectl delete crd widgets.smoke.civic.example >/dev/null

# API server restart: data survives (etcd), clients reconnect.
t=$(now_ms)
"$CLUSTER" restart-apiserver
kubectl get namespace "$NS" >/dev/null || fail "namespace lost after restart"
log "kube-apiserver restarted in $(( $(now_ms) - t ))ms"
# controller-manager, scheduler and kwok reconnected by themselves
t=$(now_ms)
kubectl -n "$NS" create deployment web --image=nginx --replicas=2 >/dev/null
wait_running 2
log "after restart: 2 pods Running in $(( $(now_ms) - t ))ms"

kubectl delete namespace "$NS" --wait=false >/dev/null
log "smoke test passed"
