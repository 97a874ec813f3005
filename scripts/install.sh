#!/usr/bin/env bash
# Installs pilot on a systemd host: the release binary, the system units (pilot.service,
# pilot-registry.service), the user unit (pilot.service for `systemctl --user`), the example
# configs /etc/pilot/pilot.toml and registry.toml (never overwriting a file that exists), and
# the state directories /var/lib/pilot and /var/lib/pilot-registry (0700, owned by the `pilot`
# system user, created when missing). Everything installed is listed in a manifest, so
# `--uninstall` removes exactly that and nothing else: an edited config and a state directory
# that holds data (keys!) are kept, and said so.
#
# Usage: scripts/install.sh [--prefix P] [--binary FILE] [--uninstall]
#   --prefix P     where the binary goes (P/bin/pilotctl; default /usr/local); the units'
#                  ExecStart lines are rewritten to match
#   --binary FILE  the pilotctl to install (default target/release/pilotctl: build it first
#                  with `cargo build --release --locked`)
#   --uninstall    remove what an earlier install with the same DESTDIR and prefix put there
# DESTDIR=DIR      install under DIR (for packaging): no user is created, nothing is chowned,
#                  systemd is not told (StateDirectory= in the units fixes owners at start).
set -euo pipefail

PREFIX=/usr/local
BINARY=""
UNINSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    --binary) BINARY="${2:?--binary needs a file}"; shift 2 ;;
    --binary=*) BINARY="${1#--binary=}"; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PREFIX" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac

SRC="$(cd "$(dirname "$0")/.." && pwd)"
D="${DESTDIR:-}"
MANIFEST="$D$PREFIX/share/pilot/install-manifest"
SERVICE_USER=pilot

# The manifest's lines: "file SHA256 PATH" or "dir - PATH" (paths without DESTDIR), in the
# order they were made.
RECORDS=()
record() { RECORDS+=("$1 $2 $3"); }

# make_dirs DIR: creates DIR (without DESTDIR) and the parents that are missing (0755),
# recording each one it made.
make_dirs() {
  local dir="$1" missing=() i
  while [ "$dir" != / ] && [ ! -d "$D$dir" ]; do
    missing+=("$dir")
    dir="$(dirname "$dir")"
  done
  for ((i = ${#missing[@]} - 1; i >= 0; i--)); do
    install -d -m 0755 "$D${missing[i]}"
    record dir - "${missing[i]}"
  done
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# install_file MODE SOURCE DEST [keep]: DEST is without DESTDIR. With `keep`, an existing file
# stays as it is (and is not recorded).
install_file() {
  local mode="$1" src="$2" dest="$3" keep="${4:-}"
  if [ -n "$keep" ] && [ -e "$D$dest" ]; then
    echo "kept     $dest (exists; compare with $src)"
    return
  fi
  make_dirs "$(dirname "$dest")"
  install -m "$mode" "$src" "$D$dest"
  record file "$(sha "$D$dest")" "$dest"
  echo "installed $dest"
}

# A unit with its ExecStart pointed at our binary.
unit_for() {
  local tmp
  tmp="$(mktemp)"
  sed -e "s#/usr/local/bin/pilotctl#$PREFIX/bin/pilotctl#g" \
      -e "s#%h/.cargo/bin/pilotctl#$PREFIX/bin/pilotctl#g" "$SRC/systemd/$1" >"$tmp"
  echo "$tmp"
}

state_dir() {
  local dir="$1"
  if [ -d "$D$dir" ]; then
    echo "kept     $dir (exists)"
    return
  fi
  make_dirs "$(dirname "$dir")"
  install -d -m 0700 "$D$dir"
  if [ -z "$D" ] && [ "$(id -u)" = 0 ]; then
    chown "$SERVICE_USER:$SERVICE_USER" "$dir"
  fi
  record dir - "$dir"
  echo "created  $dir (0700)"
}

do_install() {
  local bin="${BINARY:-$SRC/target/release/pilotctl}"
  if [ ! -x "$bin" ]; then
    echo "install.sh: no binary at $bin: run \`cargo build --release --locked\` first, or give --binary FILE" >&2
    exit 1
  fi
  if [ -e "$MANIFEST" ]; then
    echo "install.sh: $MANIFEST exists: pilot is installed here; run --uninstall first (configs are kept)" >&2
    exit 1
  fi
  [ -z "$D" ] || install -d -m 0755 "$D"
  if [ -z "$D" ] && [ "$(id -u)" = 0 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/pilot --no-create-home \
      --shell /usr/sbin/nologin "$SERVICE_USER"
    echo "created  system user $SERVICE_USER"
  fi
  install_file 0755 "$bin" "$PREFIX/bin/pilotctl"
  local u
  for unit in pilot.service pilot-registry.service; do
    u="$(unit_for "$unit")"
    install_file 0644 "$u" "/etc/systemd/system/$unit"
    rm -f "$u"
  done
  u="$(unit_for pilot-user.service)"
  install_file 0644 "$u" "/etc/systemd/user/pilot.service"
  rm -f "$u"
  make_dirs /etc/pilot
  install_file 0644 "$SRC/config/pilot.toml" /etc/pilot/pilot.toml keep
  install_file 0644 "$SRC/config/registry.toml" /etc/pilot/registry.toml keep
  state_dir /var/lib/pilot
  state_dir /var/lib/pilot-registry
  make_dirs "$PREFIX/share/pilot"
  printf '%s\n' "${RECORDS[@]}" >"$MANIFEST"
  chmod 0644 "$MANIFEST"
  if [ -z "$D" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
  cat <<EOF

pilot is installed. Edit /etc/pilot/pilot.toml (registries, hostname), then:
  systemctl daemon-reload
  systemctl enable --now pilot        # or pilot-registry on a registry host
EOF
}

do_uninstall() {
  if [ ! -e "$MANIFEST" ]; then
    echo "install.sh: no manifest at $MANIFEST: nothing installed with this DESTDIR and prefix" >&2
    exit 1
  fi
  local kind hash path lines
  lines="$(tac "$MANIFEST")"
  rm -f "$MANIFEST"
  # Files first, then directories, the last made first.
  while read -r kind hash path; do
    [ "$kind" = file ] || continue
    if [ ! -e "$D$path" ]; then
      continue
    fi
    if [ "$(sha "$D$path")" != "$hash" ]; then
      echo "kept     $path (changed since it was installed)"
      continue
    fi
    rm -f "$D$path"
    echo "removed  $path"
  done <<<"$lines"
  while read -r kind hash path; do
    [ "$kind" = dir ] || continue
    if rmdir "$D$path" 2>/dev/null; then
      echo "removed  $path"
    elif [ -d "$D$path" ]; then
      echo "kept     $path (not empty: back it up, then remove it yourself)"
    fi
  done <<<"$lines"
  echo "pilot is uninstalled (the system user $SERVICE_USER, if created, is left)."
}

if [ "$UNINSTALL" = 1 ]; then do_uninstall; else do_install; fi
