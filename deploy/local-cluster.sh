#!/usr/bin/env bash
# Runs a holdfast cluster on this machine: N holdfastd, each with its own free ports, socket,
# data directory and shared-memory directory, sharing one cluster file; data over UCX tcp on lo.
#
#   deploy/local-cluster.sh start N [--k K] [--m M] [--dir DIR] [--budget SIZE] [--retain N]
#                                   [--bin DIR] [--timeout SECONDS]
#   deploy/local-cluster.sh status  [--dir DIR] [--json]
#   deploy/local-cluster.sh stop    [--dir DIR]
#
# start: N must be a multiple of K+M (default M=1, K=N-1: one group; N=1 runs one daemon alone).
#   Waits until every daemon answers GetStatus and, in a cluster, sees every member of its group
#   up; then prints where everything is. Fails (and stops what it started) otherwise.
# status: one line per node (pid, up, versions, memory, health, group members up); --json:
#   `holdfast status --json` of each node as a JSON object keyed by node id. Exit 1 when a node
#   does not answer.
# stop: SIGTERM, wait (then SIGKILL after 20 s), remove every file: shared memory, data, logs.
#
# DIR (default /tmp/holdfast-local) gets: cluster.yaml, cluster.env (shell variables, for
# scripts: `. DIR/cluster.env`), cluster.json (the same as JSON), and nI/{holdfastd.yaml,
# holdfastd.sock, holdfastd.log, data/} per node. Segments go to /dev/shm/holdfast-local-*/nI.
# Binaries: --bin DIR or $HOLDFAST_BIN (holdfastd and the `holdfast` CLI in it or below it),
# else the first build directory of the source tree that has them.
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "local-cluster.sh: $*" >&2; exit 1; }
say() { echo "local-cluster.sh: $*"; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

cmd="${1:-}"
[[ -n "$cmd" ]] || { usage >&2; exit 2; }
shift
nodes=""
if [[ "$cmd" == start ]]; then
  nodes="${1:-}"
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "start needs a node count N >= 1, got '${nodes}'"
  shift
fi
dir="/tmp/holdfast-local" k="" m="" budget="1GiB" retain=2 bin="${HOLDFAST_BIN:-}"
timeout=60 json=0
while (($#)); do
  case "$1" in
    --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
    --k) k="${2:?--k needs a number}"; shift 2 ;;
    --m) m="${2:?--m needs a number}"; shift 2 ;;
    --budget) budget="${2:?--budget needs a size, e.g. 2GiB}"; shift 2 ;;
    --retain) retain="${2:?--retain needs a number}"; shift 2 ;;
    --bin) bin="${2:?--bin needs a directory}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    --json) json=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")"

# ---- binaries -------------------------------------------------------------------------------
find_tool() {  # find_tool NAME: print its path, or nothing
  local name="$1" d
  if [[ -n "$bin" ]]; then
    find "$bin" -maxdepth 4 -type f -name "$name" -perm -u+x 2>/dev/null | head -n1
    return
  fi
  for d in "$src"/build-release "$src"/build "$src"/build-rel "$src"/build-*; do
    [[ -d "$d" ]] || continue
    find "$d" -maxdepth 4 -type f -name "$name" -perm -u+x 2>/dev/null | head -n1 | grep . &&
      return
  done
  return 0
}
tools() {
  holdfastd="$(find_tool holdfastd)"
  cli="$(find_tool holdfast)"
  [[ -n "$holdfastd" ]] || die "no holdfastd found${bin:+ under $bin}; build it or pass --bin DIR"
  [[ -n "$cli" ]] || die "no holdfast CLI found${bin:+ under $bin} (target holdfast)"
}

# free_ports COUNT: COUNT distinct TCP ports free on 127.0.0.1 right now, drawn below the
# kernel's ephemeral range: a node restarted later binds its port again, and an outgoing
# connection must not have taken it as its source port meanwhile.
free_ports() {
  /usr/bin/python3 - "$1" <<'PY'
import random, socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        high = max(11000, int(f.read().split()[0]))
except (OSError, ValueError, IndexError):
    high = 32768
socks = []
for _ in range(1000):
    if len(socks) == int(sys.argv[1]):
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000, high)))
        socks.append(s)
    except OSError:
        s.close()
if len(socks) < int(sys.argv[1]):
    sys.exit("local-cluster: not enough free TCP ports on 127.0.0.1")
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

load_env() {
  [[ -f "$dir/cluster.env" ]] || die "no cluster in $dir (no cluster.env)"
  # shellcheck disable=SC1091
  . "$dir/cluster.env"
}

# The pid is ours only if it is a holdfastd started with this node's config.
node_pid() {  # node_pid I: print the running pid of node I, or nothing
  local pidvar="HOLDFAST_PID_$1" cfgvar="HOLDFAST_CONFIG_$1" pid
  pid="${!pidvar:-}"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 0
  if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "--config ${!cfgvar} "; then echo "$pid"; fi
}

status_of() {  # status_of I: `holdfast status --json` of node I (exit 1: no answer)
  local sockvar="HOLDFAST_SOCKET_$1"
  local out
  # `status` exits 6/7 for HEALTH_WARN/ERR and still prints the status; 3: no answer.
  out="$("$HOLDFAST_CLI" --socket "${!sockvar}" --timeout 5 status --json 2>/dev/null)" || true
  [[ -n "$out" ]] || return 1
  echo "$out"
}

healthy() {  # healthy I: node I answers and sees every member of its group up
  local st
  st="$(status_of "$1")" || return 1
  /usr/bin/python3 -c '
import json, sys
st = json.loads(sys.argv[1]); want = sys.argv[2]
if st["node_id"] != want: sys.exit(1)
c = st.get("cluster")
sys.exit(0 if c is None or (c["members"] and all(p["state"] == "up" for p in c["members"]))
         else 1)
' "$st" "$2"
}

stop_nodes() {  # SIGTERM all, wait up to 20 s, SIGKILL the rest
  local i pid pids=() deadline
  for ((i = 0; i < HOLDFAST_NODES; i++)); do
    pid="$(node_pid "$i")"
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid did not stop within 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
}

remove_all() {
  [[ -n "${HOLDFAST_SHM_ROOT:-}" && "$HOLDFAST_SHM_ROOT" == /dev/shm/holdfast-local-* ]] &&
    rm -rf "$HOLDFAST_SHM_ROOT"
  rm -rf "$dir"
}

# ---- start ----------------------------------------------------------------------------------
start() {
  if [[ -e "$dir/cluster.env" ]]; then
    die "$dir already holds a cluster; run: $0 stop --dir $dir"
  fi
  [[ ! -e "$dir" || -z "$(ls -A "$dir")" ]] || die "$dir exists and is not empty"
  if ((nodes > 1)); then
    m="${m:-1}"
    k="${k:-$((nodes - m))}"
  fi
  if [[ -n "$k$m" ]]; then
    [[ "$k" =~ ^[1-9][0-9]*$ && "$m" =~ ^[1-9][0-9]*$ ]] ||
      die "--k and --m must be positive integers, got k='$k' m='$m'"
    ((nodes % (k + m) == 0)) ||
      die "$nodes nodes do not form groups of k+m = $((k + m)); use a multiple of $((k + m))"
  fi
  tools
  mkdir -p "$dir"
  local shm_root ports i
  shm_root="$(mktemp -d /dev/shm/holdfast-local-XXXXXX)"
  read -r -a ports <<< "$(free_ports $((2 * nodes)))"

  {
    echo "# deploy/local-cluster.sh: a $nodes-node holdfast cluster; . this file in scripts"
    echo "HOLDFAST_CLUSTER_DIR=$dir"
    echo "HOLDFAST_NODES=$nodes"
    echo "HOLDFAST_K=${k:-0}"
    echo "HOLDFAST_M=${m:-0}"
    echo "HOLDFAST_CLUSTER_FILE=$([[ -n "$k" ]] && echo "$dir/cluster.yaml")"
    echo "HOLDFAST_SHM_ROOT=$shm_root"
    echo "HOLDFASTD=$holdfastd"
    echo "HOLDFAST_CLI=$cli"
    echo "HOLDFAST_NODE_IDS=\"$(for ((i = 0; i < nodes; i++)); do printf 'n%d ' "$i"; done | sed 's/ $//')\""
  } > "$dir/cluster.env"

  if [[ -n "$k" ]]; then
    {
      echo "# written by deploy/local-cluster.sh (docs/cluster.md)"
      echo "cluster_id: local"
      echo "code: {k: $k, m: $m}"
      echo "window: 1MiB"
      echo "nodes:"
      for ((i = 0; i < nodes; i++)); do
        echo "  - {id: n$i, control: 127.0.0.1:${ports[2 * i]}, data: 127.0.0.1:${ports[2 * i + 1]}}"
      done
    } > "$dir/cluster.yaml"
  fi

  for ((i = 0; i < nodes; i++)); do
    local nd="$dir/n$i"
    mkdir -p "$nd" "$shm_root/n$i"
    cat > "$nd/holdfastd.yaml" <<EOC
# written by deploy/local-cluster.sh; see deploy/holdfastd.example.yaml
node_id: n$i
socket: $nd/holdfastd.sock
data_dir: $nd/data
shm: {dir: $shm_root/n$i, prefix: holdfast}
memory: {budget: $budget}
snapshots: {retain: $retain}
cluster: {file: "$([[ -n "$k" ]] && echo "$dir/cluster.yaml")"}
transport: {tls: tcp, net_devices: lo}
EOC
    # setsid: the daemons outlive this script and ignore the terminal's Ctrl-C.
    setsid "$holdfastd" --config "$nd/holdfastd.yaml" < /dev/null >> "$nd/holdfastd.log" 2>&1 &
    {
      echo "HOLDFAST_PID_$i=$!"
      echo "HOLDFAST_CONFIG_$i=$nd/holdfastd.yaml"
      echo "HOLDFAST_SOCKET_$i=$nd/holdfastd.sock"
      echo "HOLDFAST_ENDPOINT_$i=unix:$nd/holdfastd.sock"
      echo "HOLDFAST_LOG_$i=$nd/holdfastd.log"
      echo "HOLDFAST_DATA_$i=$nd/data"
      echo "HOLDFAST_SHM_$i=$shm_root/n$i"
      if [[ -n "$k" ]]; then echo "HOLDFAST_CONTROL_$i=127.0.0.1:${ports[2 * i]}"; fi
    } >> "$dir/cluster.env"
  done
  write_json
  load_env

  local deadline=$((SECONDS + timeout)) waiting pid
  while :; do
    waiting=()
    for ((i = 0; i < nodes; i++)); do
      pid="$(node_pid "$i")"
      if [[ -z "$pid" ]]; then
        local logvar="HOLDFAST_LOG_$i"
        echo "local-cluster.sh: n$i exited at start; its log:" >&2
        tail -n 20 "${!logvar}" >&2 || true
        stop_nodes; remove_all
        exit 1
      fi
      healthy "$i" "n$i" || waiting+=("n$i")
    done
    ((${#waiting[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      echo "local-cluster.sh: not healthy within $timeout s: ${waiting[*]}; logs in $dir" >&2
      stop_nodes
      exit 1  # logs kept for a look; `stop` removes them
    fi
    sleep 0.2
  done

  say "$nodes holdfastd up${k:+ (${k}+${m} per group)} in $dir"
  for ((i = 0; i < nodes; i++)); do
    local sv="HOLDFAST_SOCKET_$i" lv="HOLDFAST_LOG_$i" pv="HOLDFAST_PID_$i"
    printf '  n%d  pid %-7s socket %s  log %s\n' "$i" "${!pv}" "${!sv}" "${!lv}"
  done
  if [[ -n "$k" ]]; then echo "  cluster file $dir/cluster.yaml"; fi
  echo "  variables    . $dir/cluster.env   (or $dir/cluster.json)"
  echo "  status       $0 status --dir $dir"
  echo "  stop         $0 stop --dir $dir"
}

write_json() {
  /usr/bin/python3 - "$dir/cluster.env" "$dir/cluster.json" <<'PY'
import json, shlex, sys
env = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if line and not line.startswith("#"):
        key, _, value = line.partition("=")
        env[key] = " ".join(shlex.split(value))
n = int(env["HOLDFAST_NODES"])
out = {"dir": env["HOLDFAST_CLUSTER_DIR"], "k": int(env["HOLDFAST_K"]), "m": int(env["HOLDFAST_M"]),
       "cluster_file": env["HOLDFAST_CLUSTER_FILE"], "shm_root": env["HOLDFAST_SHM_ROOT"],
       "holdfastd": env["HOLDFASTD"], "cli": env["HOLDFAST_CLI"], "nodes": []}
for i in range(n):
    out["nodes"].append({
        "id": f"n{i}", "pid": int(env[f"HOLDFAST_PID_{i}"]), "config": env[f"HOLDFAST_CONFIG_{i}"],
        "socket": env[f"HOLDFAST_SOCKET_{i}"], "endpoint": env[f"HOLDFAST_ENDPOINT_{i}"],
        "log": env[f"HOLDFAST_LOG_{i}"], "data_dir": env[f"HOLDFAST_DATA_{i}"],
        "shm_dir": env[f"HOLDFAST_SHM_{i}"], "control": env.get(f"HOLDFAST_CONTROL_{i}", "")})
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
PY
}

# ---- status ---------------------------------------------------------------------------------
status() {
  load_env
  local i st rc=0 all="{}"
  for ((i = 0; i < HOLDFAST_NODES; i++)); do
    local pid
    pid="$(node_pid "$i")"
    if [[ -n "$pid" ]] && st="$(status_of "$i")"; then
      if ((json)); then
        all="$(/usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=json.loads(sys.argv[3]); print(json.dumps(d))' "$all" "n$i" "$st")"
      else
        /usr/bin/python3 -c '
import json, sys
st = json.loads(sys.argv[1])
versions = sum(int(j["versions"]) for j in st["jobs"])
line = "%4s  pid %-7s up  %d jobs, %d versions, %.2f of %.2f GiB, %s" % (
    st["node_id"], sys.argv[2], len(st["jobs"]), versions,
    int(st["memory"]["used_bytes"]) / 2**30, int(st["memory"]["budget_bytes"]) / 2**30,
    st["health"]["status"])
c = st.get("cluster")
if c:
    up = sum(1 for p in c["members"] if p["state"] == "up")
    line += "; group %d, %d/%d members up" % (c["group"], up, len(c["members"]))
    if c["rebuild"]["state"] != "REBUILD_STATE_IDLE":
        line += ", rebuild " + c["rebuild"]["state"].removeprefix("REBUILD_STATE_").lower()
    if c["last_error"]:
        line += "; last error: " + c["last_error"]
print(line)' "$st" "$pid"
      fi
    else
      rc=1
      ((json)) || printf '%4s  %s\n' "n$i" "${pid:+pid $pid, }not answering"
    fi
  done
  ((json)) && echo "$all"
  return $rc
}

# ---- stop -----------------------------------------------------------------------------------
stop() {
  if [[ ! -f "$dir/cluster.env" ]]; then
    say "no cluster in $dir; nothing to stop"
    return 0
  fi
  load_env
  stop_nodes
  remove_all
  say "stopped; removed $dir and its shared memory"
}

case "$cmd" in
  start) start ;;
  status) status ;;
  stop) stop ;;
  -h|--help|help) usage ;;
  *) die "unknown command '$cmd'; expected start, status or stop" ;;
esac
