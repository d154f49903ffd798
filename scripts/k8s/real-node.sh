#!/usr/bin/env bash
# A REAL node beside the local control plane of scripts/k8s/cluster.sh: kubelet + containerd (Debian's,
# with its own root, state and socket, never Docker's) + a CNI bridge on a host-only bridge + kube-proxy
# (iptables) + CoreDNS (Service DNS), all host processes. Pods run as containers of the project's images,
# loaded from the Docker engine; kwok's fake nodes stay for everything that needs many pods: the node is
# tainted, so only pods that tolerate the taint land on it (see real_pod_placement in devenv/clusters.py).
#
# Usage: scripts/k8s/real-node.sh up|down|status|load IMAGE...|name
#   up      start the control plane (cluster.sh up) and the node; load civic-runner:dev and
#           civic-operator:dev (skipped when unchanged); a second `up` says so and does nothing else
#   down    stop everything and leave nothing behind: processes, mounts, the bridge and veths, iptables
#           chains (KUBE-*, CNI-*), the sysctls the kubelet and the CNI plugin changed, cgroups, netns
#   status  print the node's processes and Ready condition; exit 0 when all run and the node is Ready
#   load    `docker save IMAGE... | ctr import` into the node's containerd
#   name    print the node's name
# Root only. Everything lives in $CIVIC_CACHE/realnode (kept between runs: the image store makes a warm
# `up` a few seconds); nothing listens beyond loopback and the bridge address; nothing is routed off
# the machine (no masquerading, no forward DNS). Progress lines go to stderr.
#
# Env: CIVIC_CACHE, CIVIC_CLUSTER_NAME (default civic), CIVIC_REAL_NODE (node name, default civic-real),
#      CIVIC_REAL_NODE_IP (default 10.88.0.1, on a /24), CIVIC_REAL_NODE_BRIDGE (default civicbr0),
#      CIVIC_REAL_NODE_IMAGES (default "civic-runner:dev civic-operator:dev").
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
NODE="${CIVIC_REAL_NODE:-civic-real}"
NODE_IP="${CIVIC_REAL_NODE_IP:-10.88.0.1}"
SUBNET="${NODE_IP%.*}.0/24"
BRIDGE="${CIVIC_REAL_NODE_BRIDGE:-civicbr0}"
IMAGES="${CIVIC_REAL_NODE_IMAGES:-civic-runner:dev civic-operator:dev}"
TAINT_KEY=civic-workers.dev/real-node
D="${CACHE_ROOT}/realnode"
RUN="$D/run"
LOGS="$D/logs"
SOCK="$RUN/containerd.sock"
PAUSE_IMAGE=localhost/civic/pause:3.10
# What the kubelet writes at start (protectKernelDefaults=false), what the CNI bridge plugin turns on, and
# what kube-proxy would touch: saved before the first start, put back after the kubelet's start and on down.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max)
# The values the kubelet sets (pkg/kubelet/cm setupKernelTunables); it writes only those that differ.
KUBELET_SYSCTLS=(vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1
  kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000)
T0=$(date +%s.%N)

log() { printf '[%s +%4.1fs] real-node: %s\n' "$(date '+%H:%M:%S')" "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BIN=""
KC=""
setup() {
  BIN="$("${SCRIPT_DIR}/build-binaries.sh" | tail -n 1)"
  for b in kubelet kube-proxy coredns kubectl; do [[ -x "$BIN/$b" ]] || die "$BIN/$b missing (scripts/k8s/build-binaries.sh)"; done
  KC="$("${SCRIPT_DIR}/cluster.sh" kubeconfig)"
}
kubectl_() { "$BIN/kubectl" --kubeconfig "$KC" "$@"; }
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

# alive PID: running and not a zombie (as in cluster.sh).
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}
pid_alive() { local pid; pid="$(cat "$RUN/$1.pid" 2>/dev/null || true)"; [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; }
stop_pid() { # NAME [GRACE_SECONDS]: TERM the recorded process, KILL after grace, drop the pid file
  local f="$RUN/$1.pid" pid i
  pid="$(cat "$f" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-10} * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$f"
}
start_bg() { # NAME CMD...: a session of its own (no terminal signals), log appended, pid recorded
  local name="$1"; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/$name.pid"
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# The cluster this node joined (its API server's address and CA): a recreated cluster needs a new node.
cluster_id() { sed -n 's/^ *\(server\|certificate-authority\(-data\)\?\): //p' "$KC" | sha256sum | cut -c1-16; }

write_configs() {
  mkdir -p "$D/etc" "$D/cni/net.d" "$D/containerd/opt"
  cat >"$D/etc/containerd.toml" <<EOF
# Generated by scripts/k8s/real-node.sh. containerd 1.6 (Debian): own root/state/socket, CRI for the kubelet.
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$D/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # exec/logs streaming on loopback (the API server is on this host), a random port
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # pod network namespaces under our state dir, not /var/run/netns (down unmounts them)
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    # No CAP_SYS_RESOURCE on these machines: runc cannot lower oom_score_adj (the pause container asks
    # -998) and the sandbox fails with "can't get final child's PID from pipe". Clamp to ours.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$D/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = "$D/containerd/state/runc"
          SystemdCgroup = false
EOF
  # cniVersion 0.4.0: clear of containerd 1.6.0's 1.0.0 bug (containerd#6876). No ipMasq: pods get no
  # way off the machine. No portmap: no pod here uses hostPort (and it would add CNI-HOSTPORT chains).
  cat >"$D/cni/net.d/10-civic-real.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "civic-real",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$D/cni/ipam"
      }
    }
  ]
}
EOF
  cat >"$D/etc/kubelet.yaml" <<EOF
# Generated by scripts/k8s/real-node.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Serves only on the bridge address (= the node IP: the kubelet refuses a loopback node IP).
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# kwokctl's API server presents no kubelet client certificate (logs/exec): let it in. A throwaway test
# node on a host-only bridge; see README "What this machine cannot prove".
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
# These machines have cgroup v1; Kubernetes 1.35 refuses it unless told otherwise (KEP-5573).
failCgroupV1: false
failSwapOn: false
podLogsDir: $D/pod-logs
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
clusterDNS: ["$NODE_IP"]
serializeImagePulls: false
registerNode: true
# kwok's fake nodes take everything that does not ask for this node.
registerWithTaints:
- key: $TAINT_KEY
  value: "true"
  effect: NoSchedule
# Images come from the Docker engine, never a registry: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
maxPods: 60
hairpinMode: hairpin-veth
makeIPTablesUtilChains: false
EOF
  cat >"$D/etc/Corefile" <<EOF
# Generated by scripts/k8s/real-node.sh: cluster names only (no forwarding: nothing leaves the machine).
.:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KC
        pods insecure
        ttl 5
    }
    cache 5
}
EOF
}

save_sysctls() { # once: a second up (or an up after a crash) must not save what the kubelet wrote
  [[ -f "$RUN/sysctl.orig" ]] && return 0
  local k
  for k in "${SYSCTLS[@]}"; do
    [[ -e "/proc/sys/${k//.//}" ]] && echo "$k=$(sysctl -n "$k")"
  done >"$RUN/sysctl.orig.tmp"
  mv "$RUN/sysctl.orig.tmp" "$RUN/sysctl.orig"
}
restore_sysctls() { # [KEYS...]: those saved (all when none given)
  local k v
  [[ -f "$RUN/sysctl.orig" ]] || return 0
  while IFS== read -r k v; do
    if [[ $# -eq 0 ]] || [[ " $* " == *" $k "* ]]; then sysctl -qw "$k=$v" || true; fi
  done <"$RUN/sysctl.orig"
}

# The kubelet writes its kernel tunables once, in its container manager's start, which may come after
# the node is Ready: wait until those it must change are changed, then put them back.
restore_kubelet_sysctls() {
  local kv k v orig changing=() keys=() i
  for kv in "${KUBELET_SYSCTLS[@]}"; do
    k="${kv%%=*}"; v="${kv#*=}"; keys+=("$k")
    orig="$(sed -n "s/^${k//./\\.}=//p" "$RUN/sysctl.orig")"
    [[ "$orig" != "$v" ]] && changing+=("$kv")
  done
  for ((i = 0; i < 300; i++)); do
    local done_=1
    for kv in "${changing[@]}"; do [[ "$(sysctl -n "${kv%%=*}")" == "${kv#*=}" ]] || done_=0; done
    [[ $done_ == 1 ]] && break
    sleep 0.1
  done
  restore_sysctls "${keys[@]}"
  log "host sysctls the kubelet changed (${changing[*]:-none}) put back"
}

pause_image() { # a static pause binary (upstream's pause.c from the k8s.io/kubernetes module) in an OCI archive
  local archive="$D/images/pause.oci.tar" src
  if [[ ! -s "$archive" ]]; then
    src="$(go mod download -json "k8s.io/kubernetes@$("$BIN/kubelet" --version | awk '{print $2}')" \
      | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')/build/pause/linux/pause.c"
    [[ -f "$src" ]] || die "pause.c not found in the Go module cache"
    mkdir -p "$D/images/pause"
    gcc -Os -static -DVERSION=v3.10-civic -o "$D/images/pause/pause" "$src"
    strip "$D/images/pause/pause"
    tar -C "$D/images/pause" -cf "$D/images/pause-layer.tar" pause
    python3 "${SCRIPT_DIR}/mkoci.py" "$archive" "$PAUSE_IMAGE" '{"Entrypoint":["/pause"],"User":"65535:65535"}' \
      "$D/images/pause-layer.tar" >/dev/null
  fi
  ctr_ images ls -q | grep -qx "$PAUSE_IMAGE" || ctr_ images import "$archive" >/dev/null
}

cmd_load() { # IMAGE...: docker save | ctr import, skipped when the Docker image IDs are those loaded last
  local ids want=() img
  command -v docker >/dev/null && docker version >/dev/null 2>&1 \
    || die "no Docker engine (scripts/docker/ensure-docker.sh) to load ${*} from"
  for img in "$@"; do
    docker image inspect "$img" >/dev/null 2>&1 || die "image $img not in the Docker engine (scripts/docker/build-images.sh)"
  done
  ids="$(docker image inspect -f '{{.Id}}' "$@" | paste -sd' ')"
  for img in "$@"; do
    [[ "$img" == */* ]] || img="docker.io/library/$img"
    want+=("$img")
  done
  if [[ -f "$RUN/images.$(echo "$*" | sha256sum | cut -c1-12)" ]] \
    && [[ "$(cat "$RUN/images.$(echo "$*" | sha256sum | cut -c1-12)")" == "$ids" ]] \
    && [[ "$(ctr_ images ls -q | grep -cxF -f <(printf '%s\n' "${want[@]}"))" == "${#want[@]}" ]]; then
    log "images unchanged: $*"
    return 0
  fi
  docker save "$@" | ctr_ images import - >/dev/null
  echo "$ids" >"$RUN/images.$(echo "$*" | sha256sum | cut -c1-12)"
  log "images loaded: $*"
}

all_running() { local p; for p in containerd socat coredns kubelet kube-proxy; do pid_alive "$p" || return 1; done; }

cmd_up() {
  [[ $(id -u) == 0 ]] || die "needs root (bridge, iptables, mounts, cgroups)"
  "${SCRIPT_DIR}/cluster.sh" up >/dev/null
  setup
  mkdir -p "$RUN" "$LOGS" "$D/images"
  if all_running && [[ "$(cat "$RUN/cluster.id" 2>/dev/null)" == "$(cluster_id)" ]] && node_ready; then
    # shellcheck disable=SC2086 # a list of image names
    cmd_load $IMAGES
    log "node $NODE already up and Ready"
    echo "$NODE"
    return 0
  fi
  if [[ -f "$RUN/cluster.id" ]] || ls "$RUN"/*.pid >/dev/null 2>&1; then
    log "a previous node is partly up or joined another cluster; taking it down first"
    cmd_down
    mkdir -p "$RUN" "$LOGS"
  fi
  save_sysctls
  write_configs

  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  log "bridge $BRIDGE $NODE_IP/24"

  start_bg containerd containerd --config "$D/etc/containerd.toml"
  local i
  for ((i = 0; i < 100; i++)); do ctr -a "$SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr -a "$SOCK" version >/dev/null 2>&1 || die "containerd did not start ($LOGS/containerd.log)"
  pause_image
  log "containerd up (pid $(cat "$RUN/containerd.pid")), pause image $PAUSE_IMAGE"
  # shellcheck disable=SC2086
  cmd_load $IMAGES

  # Pods reach the API server (on 127.0.0.1 only) at the kubernetes Service's endpoint, the advertise
  # address cluster.sh gives it (this bridge address), forwarded to loopback.
  local port
  port="$(sed -n 's#.*server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$KC")"
  [[ -n "$port" ]] || die "no API server port in $KC"
  start_bg socat socat "TCP-LISTEN:$port,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$port"
  start_bg coredns "$BIN/coredns" -conf "$D/etc/Corefile"

  mkdir -p "$D/kubelet" "$D/pod-logs"
  start_bg kubelet "$BIN/kubelet" --config "$D/etc/kubelet.yaml" --kubeconfig "$KC" \
    --hostname-override "$NODE" --node-ip "$NODE_IP" --node-labels "$TAINT_KEY=true" \
    --root-dir "$D/kubelet" --cert-dir "$D/kubelet/pki" --v=1
  # iptables mode; the conntrack flags at 0 leave the host's conntrack sysctls alone and
  # --iptables-localhost-nodeports=false keeps it from setting route_localnet=1.
  start_bg kube-proxy "$BIN/kube-proxy" --kubeconfig "$KC" --hostname-override "$NODE" --proxy-mode iptables \
    --cluster-cidr "$SUBNET" --bind-address "$NODE_IP" --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249 --iptables-localhost-nodeports=false \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 --v=1
  cluster_id >"$RUN/cluster.id"
  log "socat (:$port), coredns, kubelet, kube-proxy started"

  for ((i = 0; i < 600; i++)); do
    node_ready && break
    pid_alive kubelet || die "the kubelet exited: $(tail -n 5 "$LOGS/kubelet.log")"
    sleep 0.1
  done
  node_ready || die "node $NODE not Ready after 60 s ($LOGS/kubelet.log)"
  log "node $NODE Ready"
  restore_kubelet_sysctls
  echo "$NODE"
}

cmd_status() {
  setup
  local p rc=0 pid
  for p in containerd socat coredns kubelet kube-proxy; do
    pid="$(cat "$RUN/$p.pid" 2>/dev/null || true)"
    if pid_alive "$p"; then echo "$p: running (pid $pid)"; else echo "$p: not running"; rc=1; fi
  done
  if node_ready; then echo "node $NODE: Ready"; else echo "node $NODE: not Ready"; rc=1; fi
  return $rc
}

iptables_cleanup() { # every KUBE-* and CNI-* chain, and the jumps into them, in every table (v4 and v6)
  local ipt t rule chain chains
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
      # jumps from the built-in chains (rules inside our chains go with their chain)
      { "$ipt" -t "$t" -S | grep -E '^-A [A-Z]+ .*-j (KUBE-|CNI-)' | grep -Ev '^-A (KUBE-|CNI-)' || true; } \
        | while read -r rule; do eval "$ipt -t $t ${rule/-A/-D}" 2>/dev/null || true; done
      chains="$("$ipt" -t "$t" -S | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p')"
      for chain in $chains; do "$ipt" -t "$t" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$ipt" -t "$t" -X "$chain" 2>/dev/null || true; done
    done
  done
}

cmd_down() {
  local f pid
  if [[ ! -d "$D" ]]; then log "no node here"; return 0; fi
  [[ -n "$BIN" ]] || setup
  if pid_alive kubelet && [[ -f "$KC" ]]; then
    # Through the kubelet: SIGTERM, preStop, then CNI DEL for each sandbox (veth and IP released).
    kubectl_ delete pods -A --field-selector "spec.nodeName=$NODE" --wait=true --timeout=40s >/dev/null 2>&1 \
      || kubectl_ delete pods -A --field-selector "spec.nodeName=$NODE" --grace-period=0 --force >/dev/null 2>&1 || true
    log "pods on $NODE deleted"
  fi
  stop_pid kubelet 10
  # A kubelet started again registers afresh, so "Ready" means the new kubelet's Ready.
  [[ -f "$KC" ]] && kubectl_ delete node "$NODE" --ignore-not-found --wait=false --request-timeout=10s >/dev/null 2>&1 || true
  stop_pid kube-proxy 5
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_pid socat 2
  stop_pid coredns 5
  log "kubelet, kube-proxy, socat, coredns stopped"
  if pid_alive containerd; then
    for f in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$f" >/dev/null 2>&1 || true; done
    for f in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ tasks rm -f "$f" >/dev/null 2>&1 || true
      ctr_ containers rm "$f" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd 10
  # The shims of OUR containerd only: the pids it recorded in its own state dir.
  for f in "$D"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  log "containerd and its shims stopped"
  # Mounts under our dir, deepest first: pod volumes (kubelet), rootfs overlays, shm, netns (containerd).
  awk -v d="$D/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # veths left on the bridge (a sandbox whose CNI DEL never ran), then the bridge
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    for f in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$f" 2>/dev/null || true; done
    ip link del "$BRIDGE"
  fi
  iptables_cleanup
  # The kubelet's QoS cgroups (cgroupfs driver, every v1 hierarchy), once no task is left in them.
  for f in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$f" ]] && find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # The kubelet's /var/log/containers symlinks into our pod-logs dir (left when it stops before GC).
  find /var/log/containers -maxdepth 1 -type l -lname "$D/*" -delete 2>/dev/null || true
  # containerd 1.6 keeps shim sockets in /run/containerd/s whatever its state dir: drop what is empty.
  rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null || true
  restore_sysctls
  rm -f "$RUN/sysctl.orig" "$RUN/cluster.id"
  # Runtime state goes; the image store (containerd/root) and the pause archive stay for a warm up.
  rm -rf --one-file-system "$D/kubelet" "$D/pod-logs" "$D/cni/ipam" "$D/containerd/state"
  log "down: no process, mount, bridge, KUBE-/CNI- chain left; sysctls restored"
}

# One up/down at a time (parallel test sessions); the node's processes must not inherit fd 9.
lock() { mkdir -p "$D"; exec 9>"$D/.lock"; flock 9; }

case "${1:-}" in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  load) shift; mkdir -p "$RUN" "$LOGS"; setup; cmd_load "$@" ;;
  name) echo "$NODE" ;;
  *)
    echo "usage: $0 up|down|status|load IMAGE...|name" >&2
    exit 2
    ;;
esac
