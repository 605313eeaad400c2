#!/usr/bin/env bash
# Installs holdfast on this machine after a Release build:
#   the binaries     PREFIX/bin/holdfastd, PREFIX/bin/holdfast (the CLI, when built)
#   the service      holdfastd.service, sysusers.d/holdfast.conf, tmpfiles.d/holdfast.conf,
#                    dev-shm-holdfast.mount (the segments' huge-page tmpfs; enabled, mounted
#                    at the next boot, never now)
#   the config       /etc/holdfast/holdfastd.yaml (only if absent: never overwritten),
#                    /etc/holdfast/cluster.example.yaml
#   the docs         PREFIX/share/doc/holdfast/
# then creates the `holdfast` user and group (systemd-sysusers, or groupadd/useradd),
# the shared-memory directory /dev/shm/holdfast (systemd-tmpfiles, or install -d), and
# runs `systemctl daemon-reload` when systemd is running. Idempotent: running it again
# changes nothing but the files it owns. It never starts or restarts the service.
#
# Usage: deploy/install.sh [--build DIR] [--prefix DIR] [--destdir DIR]
#   --build DIR    the Release build directory (default: build-release in the source tree);
#                  build it with
#                    cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release
#                    cmake --build build-release --target holdfastd holdfast
#   --prefix DIR   where binaries and docs go (default /usr/local)
#   --destdir DIR  stage everything under DIR instead of / (also $DESTDIR): for packaging
#                  and tests; the user is then created in DIR/etc, and systemctl is not run.
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
build="$src/build-release"
prefix="/usr/local"
destdir="${DESTDIR:-}"

die() { echo "install.sh: $*" >&2; exit 1; }
while (($#)); do
  case "$1" in
    --build) build="${2:?--build needs a directory}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done
[[ "$prefix" == /* ]] || die "--prefix must be an absolute path, got '$prefix'"
prefix="${prefix%/}"
[[ -n "$prefix" ]] || die "--prefix / is not supported; use /usr"
if [[ -n "$destdir" ]]; then
  mkdir -p "$destdir"
  destdir="$(cd "$destdir" && pwd)"
  [[ "$destdir" != / ]] || destdir=""
fi
if [[ $(id -u) -ne 0 && -z "$destdir" ]]; then
  die "run as root (sudo $0), or stage into a directory with --destdir"
fi

daemon="$build/smp/holdfastd"
cli="$build/smp/cli/holdfast"
[[ -x "$daemon" ]] || die "no holdfastd in $build; build it first:
  cmake -S $src -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build $build --target holdfastd holdfast"
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null || true)"
if [[ "$build_type" != Release ]]; then
  echo "install.sh: warning: $build is a '${build_type:-unknown}' build, not Release" >&2
fi

# Where systemd looks: /usr/lib and /usr/local/lib are on its search paths,
# other prefixes are not, so their service files go to /etc.
case "$prefix" in
  /usr|/usr/local) sysdir="$prefix/lib" ;;
  *) sysdir="/etc" ;;
esac
unitdir="$sysdir/systemd/system"
docdir="$prefix/share/doc/holdfast"
R="$destdir"  # every installed path is "$R/..."

say() { echo "install.sh: $*"; }
put() {  # put MODE SOURCE TARGET: copy when the content or mode differs
  local mode="$1" from="$2" to="$R$3"
  if [[ -f "$to" ]] && cmp -s "$from" "$to" && [[ "$(stat -c %a "$to")" == "${mode#0}" ]]; then
    return 0
  fi
  install -D -m "$mode" "$from" "$to"
  say "installed $3"
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ---- files --------------------------------------------------------------------------------
put 0755 "$daemon" "$prefix/bin/holdfastd"
if [[ -x "$cli" ]]; then
  put 0755 "$cli" "$prefix/bin/holdfast"
else
  say "no holdfast CLI in $build (target holdfast); skipped"
fi

sed -e "s#^ExecStart=/usr/local/bin/holdfastd #ExecStart=$prefix/bin/holdfastd #" \
    -e "s#^Documentation=file:///usr/local/share/doc/holdfast/#Documentation=file://$docdir/#" \
    "$src/deploy/holdfastd.service" > "$tmp/holdfastd.service"
grep -q "^ExecStart=$prefix/bin/holdfastd " "$tmp/holdfastd.service" ||
  die "deploy/holdfastd.service: its ExecStart= line is not the one this script rewrites"
put 0644 "$tmp/holdfastd.service" "$unitdir/holdfastd.service"
put 0644 "$src/deploy/holdfast.sysusers" "$sysdir/sysusers.d/holdfast.conf"
put 0644 "$src/deploy/holdfast.tmpfiles" "$sysdir/tmpfiles.d/holdfast.conf"
sed -e "s#^Documentation=file:///usr/local/share/doc/holdfast/#Documentation=file://$docdir/#" \
    "$src/deploy/dev-shm-holdfast.mount" > "$tmp/dev-shm-holdfast.mount"
put 0644 "$tmp/dev-shm-holdfast.mount" "$unitdir/dev-shm-holdfast.mount"
# Enabled (a link in holdfastd.service.wants), never started here: mounted at the next boot,
# over the empty directory; started now it would hide the segments a running node holds.
wants="$R$unitdir/holdfastd.service.wants"
if [[ ! -L "$wants/dev-shm-holdfast.mount" ]]; then
  mkdir -p "$wants"
  ln -s ../dev-shm-holdfast.mount "$wants/dev-shm-holdfast.mount"
  say "enabled dev-shm-holdfast.mount (mounted at the next boot, before holdfastd)"
fi

if [[ -e "$R/etc/holdfast/holdfastd.yaml" ]]; then
  say "kept /etc/holdfast/holdfastd.yaml (the example is in $docdir)"
else
  put 0644 "$src/deploy/holdfastd.example.yaml" "/etc/holdfast/holdfastd.yaml"
fi
put 0644 "$src/deploy/cluster.example.yaml" "/etc/holdfast/cluster.example.yaml"
for f in deploy/holdfastd.example.yaml deploy/cluster.example.yaml docs/operations.md; do
  [[ -f "$src/$f" ]] && put 0644 "$src/$f" "$docdir/$(basename "$f")"
done

# ---- the user and group -------------------------------------------------------------------
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers ${R:+--root="$R"} "$R$sysdir/sysusers.d/holdfast.conf"
else
  shadow_root=()
  [[ -n "$R" ]] && shadow_root=(--prefix "$R")
  if ! grep -q '^holdfast:' "$R/etc/group" 2>/dev/null; then
    groupadd "${shadow_root[@]}" --system holdfast
  fi
  if ! grep -q '^holdfast:' "$R/etc/passwd" 2>/dev/null; then
    useradd "${shadow_root[@]}" --system --gid holdfast --home-dir /var/lib/holdfast \
      --no-create-home --shell /usr/sbin/nologin --comment "holdfast snapshot daemon" holdfast
  fi
fi
grep -q '^holdfast:' "$R/etc/passwd" || die "the holdfast user was not created"

# ---- the shared-memory directory ----------------------------------------------------------
if command -v systemd-tmpfiles >/dev/null; then
  systemd-tmpfiles ${R:+--root="$R"} --create "$R$sysdir/tmpfiles.d/holdfast.conf"
else
  install -d -m 2770 -o holdfast -g holdfast "$R/dev/shm/holdfast"
fi

# ---- systemd ------------------------------------------------------------------------------
if [[ -z "$R" && -d /run/systemd/system ]]; then
  systemctl daemon-reload
  say "systemctl daemon-reload done"
elif [[ -z "$R" ]]; then
  say "systemd is not running here: no daemon-reload"
fi

cat <<EON
install.sh: done. Next:
  edit /etc/holdfast/holdfastd.yaml (node_id, memory.budget, cluster.file)
  add each trainer user to the group:  usermod -aG holdfast USER
  start and enable the service:        systemctl enable --now holdfastd
  check it:                            systemctl status holdfastd; journalctl -u holdfastd
EON
