#!/usr/bin/env bash
# A one-node Ray head on 127.0.0.1, for `rlcustom submit` from this machine.
#
#   cluster/start-local-head.sh                  start; auth disabled (loopback only); prints RAY_ADDRESS
#   cluster/start-local-head.sh --token          start with Ray token auth (RAY_AUTH_MODE=token)
#   cluster/start-local-head.sh --stop           stop the head started with the same --temp-dir
#
# Options: --temp-dir DIR (default /tmp/rlcustom-ray; keep it short: Ray's socket paths live under it)
#          --port P (GCS, 6379)  --dashboard-port P (8265)  --num-cpus N  --ray PATH (the `ray` to run)
#          --free-ports  pick unused ports for the other components (agents, client server, metrics,
#                        node/object manager) instead of Ray's fixed defaults (52365, 10001, ...),
#                        so this head can run beside another Ray on the same machine
#          -- ARGS...   passed to `ray start` as they are (e.g. --ray-client-server-port 10011)
#
# Auth: Ray 2.60 turns token auth on when RAY_AUTH_MODE is unset and a token exists
# (~/.ray/auth_token, which any earlier `ray.init()` here writes); then `ray job submit` without the
# token fails with "Missing authentication token". This head binds to 127.0.0.1 only, so it is
# started with RAY_AUTH_MODE=disabled unless --token is given. With --token, clients need the token:
# `rlcustom submit` sends $RAY_AUTH_TOKEN, the file at $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token.
#
# Stopping never runs `ray stop` (that stops every Ray on the machine): it ends, by pid, the
# processes whose command line names this head's temp dir, and their children.
#
# Jobs run with the Python of the `ray` that started the head: run this with the project's venv
# (the default is the `ray` beside $PYTHON, then .venv/bin/ray of this repository, then PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
temp_dir="/tmp/rlcustom-ray"
port=6379
dash_port=8265
num_cpus=""
ray_bin=""
mode="start"
auth="disabled"
extra=()
free_ports=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stop) mode="stop"; shift ;;
    --token) auth="token"; shift ;;
    --temp-dir) temp_dir="$2"; shift 2 ;;
    --temp-dir=*) temp_dir="${1#*=}"; shift ;;
    --port) port="$2"; shift 2 ;;
    --dashboard-port) dash_port="$2"; shift 2 ;;
    --num-cpus) num_cpus="$2"; shift 2 ;;
    --ray) ray_bin="$2"; shift 2 ;;
    --free-ports) free_ports=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "start-local-head.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
temp_dir="${temp_dir%/}"

# ---------------------------------------------------------------- stop: by pid, this head only
head_pids() {
  # processes whose command line names "$temp_dir/" or "$temp_dir" as a whole word (not this script),
  # plus the Ray client server, which names only the head's GCS address (port saved at start)
  local pid cmd gcs_port=""
  [[ -s "$temp_dir/rlcustom-head.port" ]] && gcs_port="$(cat "$temp_dir/rlcustom-head.port")"
  while read -r pid cmd; do
    cmd="$cmd "
    [[ "$cmd" == *start-local-head.sh* ]] && continue
    if [[ "$cmd" == *"$temp_dir/"* || "$cmd" == *"$temp_dir "* ]] ||
       [[ -n "$gcs_port" && "$cmd" == *ray.util.client.server* && "$cmd" == *":$gcs_port "* ]]; then
      echo "$pid"
    fi
  done < <(ps -eo pid=,args= -ww)
}

with_children() {
  # the given pids plus all their descendants (e.g. a job's driver under its supervisor)
  local -A keep=() parent=()
  local pid ppid changed=1
  while read -r pid ppid; do parent[$pid]=$ppid; done < <(ps -eo pid=,ppid=)
  for pid in "$@"; do keep[$pid]=1; done
  while [[ $changed -eq 1 ]]; do
    changed=0
    for pid in "${!parent[@]}"; do
      [[ -n "${keep[$pid]:-}" ]] && continue
      if [[ -n "${keep[${parent[$pid]}]:-}" ]]; then keep[$pid]=1; changed=1; fi
    done
  done
  echo "${!keep[@]}"
}

stop_round() {
  # TERM this head's processes and their children, 3 s of grace (the GCS server ignores TERM
  # for longer), then KILL what is left. Prints how many it signalled.
  local roots pids alive pid st
  mapfile -t roots < <(head_pids)
  if [[ ${#roots[@]} -eq 0 ]]; then echo 0; return; fi
  read -r -a pids <<< "$(with_children "${roots[@]}")"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 30); do
    alive=()
    for pid in "${pids[@]}"; do
      st=""; { read -r _ _ st _ < "/proc/$pid/stat"; } 2>/dev/null || continue
      [[ "$st" == Z ]] || alive+=("$pid")   # a zombie is gone (its parent may never reap it)
    done
    [[ ${#alive[@]} -eq 0 ]] && break
    sleep 0.1
  done
  if [[ ${#alive[@]} -gt 0 ]]; then kill -KILL "${alive[@]}" 2>/dev/null || true; fi
  echo "${#pids[@]}"
}

if [[ "$mode" == "stop" ]]; then
  total=0
  for _ in 1 2 3; do   # again, for a worker the raylet was starting while we looked
    n="$(stop_round)"
    [[ "$n" -eq 0 ]] && break
    total=$((total + n))
    sleep 0.2
  done
  if [[ $total -eq 0 ]]; then echo "no Ray head running under $temp_dir"
  else echo "stopped the Ray head under $temp_dir ($total processes)"; fi
  exit 0
fi

# ---------------------------------------------------------------- start
if [[ -z "$ray_bin" ]]; then
  if [[ -n "${PYTHON:-}" && -x "$(dirname "$PYTHON")/ray" ]]; then ray_bin="$(dirname "$PYTHON")/ray"
  elif [[ -x "$here/../.venv/bin/ray" ]]; then ray_bin="$here/../.venv/bin/ray"
  else ray_bin="$(command -v ray || true)"; fi
fi
if [[ -z "$ray_bin" || ! -x "$ray_bin" ]]; then
  echo "start-local-head.sh: no 'ray' found (make setup, or pass --ray PATH)" >&2; exit 2
fi
python_bin="$(dirname "$ray_bin")/python"
[[ -x "$python_bin" ]] || python_bin="$(command -v python3)"

if [[ -n "$(head_pids)" ]]; then
  echo "start-local-head.sh: a Ray head is already running under $temp_dir (stop it with --stop)" >&2; exit 1
fi
mkdir -p "$temp_dir"
echo "$port" > "$temp_dir/rlcustom-head.port"

export RAY_USAGE_STATS_ENABLED=0
# Jobs' entrypoints (`rlcustom train ...`) run in a shell with the head's PATH: put this venv first.
export PATH="$(dirname "$ray_bin"):$PATH"
if [[ "$auth" == "token" ]]; then
  export RAY_AUTH_MODE=token
  if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$HOME/.ray/auth_token" ]]; then
    "$ray_bin" get-auth-token --generate > /dev/null   # writes ~/.ray/auth_token; never printed here
  fi
else
  export RAY_AUTH_MODE=disabled
fi

args=(start --head --node-ip-address=127.0.0.1 --port="$port"
      --dashboard-host=127.0.0.1 --dashboard-port="$dash_port" --include-dashboard=true
      --temp-dir="$temp_dir" --disable-usage-stats)
[[ -n "$num_cpus" ]] && args+=(--num-cpus="$num_cpus")
if [[ $free_ports -eq 1 ]]; then
  # ephemeral ports from the kernel (outside Ray's worker range 10002-19999), held together so they differ
  read -r p1 p2 p3 p4 p5 p6 p7 < <("$python_bin" - "$port" "$dash_port" <<'EOF'
import socket, sys
taken = {int(a) for a in sys.argv[1:]}
socks, ports = [], []
while len(ports) < 7:
    s = socket.socket()
    s.bind(("", 0))
    p = s.getsockname()[1]
    socks.append(s)
    if p not in taken and not 10002 <= p <= 19999:
        ports.append(p)
print(*ports)
EOF
)
  args+=(--dashboard-agent-listen-port="$p1" --dashboard-agent-grpc-port="$p2" --runtime-env-agent-port="$p3"
         --metrics-export-port="$p4" --ray-client-server-port="$p5" --node-manager-port="$p6"
         --object-manager-port="$p7")
fi
args+=("${extra[@]}")

log="$temp_dir/start-local-head.log"
if ! "$ray_bin" "${args[@]}" > "$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "start-local-head.sh: 'ray start' failed (full log: $log)" >&2
  exit 1
fi

# The dashboard (which serves the Job API) may come up a few seconds after `ray start` returns.
address="http://127.0.0.1:$dash_port"
"$python_bin" - "$address" <<'EOF' || { echo "start-local-head.sh: dashboard did not answer at $address" >&2; exit 1; }
import sys, time, urllib.request, urllib.error
url = sys.argv[1] + "/api/version"
deadline = time.time() + 90
while True:
    try:
        urllib.request.urlopen(url, timeout=2).read()
        break
    except urllib.error.HTTPError:  # 401/403: up, but wants a token
        break
    except Exception:
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(0.5)
EOF

echo "Ray head up (auth: $auth, temp dir: $temp_dir, GCS 127.0.0.1:$port)"
echo "  submit: rlcustom submit configs/ppo.yaml --address $address"
echo "  stop:   $0 --stop --temp-dir $temp_dir"
echo "RAY_ADDRESS=$address"
