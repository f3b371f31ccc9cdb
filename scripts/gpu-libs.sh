# Shared-library resolver for prebuilt binaries on a machine they were not built on (sourced by
# scripts/gpu-check.sh; usable alone: `source scripts/gpu-libs.sh; resolve_shared_libs BIN...`).
#
# The GPU bundle (scripts/gpu-bundle.sh) carries no RUNPATH and not CUDA's own libraries
# (libcudart, libcublas, libcublasLt: hundreds of MB); the GPU machine has them somewhere — the
# CUDA toolkit, the driver's folder, or Python wheels (nvidia-*-cu13 under site-packages). For each
# library that `ldd` reports "not found", this searches the machine for its soname, puts the folder
# first on LD_LIBRARY_PATH, and logs what it found. It also logs the machine: OS, glibc, GPUs.
#
# Environment: GPTJ_LIB_SEARCH_ROOTS (space-separated folders searched first, then the defaults);
# GPTJ_LIB_FALLBACK (a folder appended last when a binary needs a newer libstdc++ than the system's:
# the bundle's lib-fallback/).

log_machine_facts() {
  local os glibc
  os=$( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>/dev/null | head -1 || echo unknown)
  echo "machine: $(uname -srm); os: $os; $glibc; $(nproc 2>/dev/null || echo ?) cores"
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout -k 2 20 nvidia-smi -L 2>&1 | sed 's/^/machine: /'
  else
    echo "machine: no nvidia-smi on PATH"
  fi
}

# Prints the sonames that `ldd` cannot find for the given binaries, one per line.
missing_shared_libs() {
  local bin
  for bin in "$@"; do ldd "$bin" 2>/dev/null | awk '/=> not found/ {print $1}'; done | sort -u
}

# Folders to search, most likely first; only those that exist.
lib_search_roots() {
  local roots=(${GPTJ_LIB_SEARCH_ROOTS:-} /usr/local/cuda/lib64 /usr/local/cuda/targets /usr/local/nvidia
               /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/lib)
  local d
  for d in /usr/local/cuda-*; do roots+=("$d"); done
  if command -v python3 >/dev/null 2>&1; then
    while read -r d; do roots+=("$d/nvidia"); done < <(timeout 20 python3 -c \
      'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
  fi
  roots+=(/opt /usr/lib /usr/local /lib)
  for d in "${roots[@]}"; do [ -d "$d" ] && echo "$d"; done | awk '!seen[$0]++'
}

# resolve_shared_libs BIN...: finds every missing library, exports LD_LIBRARY_PATH; returns 1 when
# some library is still missing afterwards (each named on stdout).
resolve_shared_libs() {
  local round soname root found dir added=() bin
  for bin in "$@"; do
    [ -f "$bin" ] || { echo "libs: no such binary: $bin"; return 1; }
  done
  for round in 1 2 3; do  # a found library may itself need another
    local missing
    missing=$(missing_shared_libs "$@")
    [ -z "$missing" ] && break
    for soname in $missing; do
      found=""
      while read -r root; do
        found=$(timeout 30 find "$root" -name "$soname" \( -type f -o -type l \) 2>/dev/null | head -1)
        [ -n "$found" ] && break
      done < <(lib_search_roots)
      if [ -n "$found" ]; then
        dir=$(dirname "$found")
        export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        added+=("$dir")
        echo "libs: $soname -> $found"
      else
        echo "libs: $soname not found on this machine (searched: $(lib_search_roots | tr '\n' ' '))"
      fi
    done
  done
  # A binary built against a newer libstdc++ than the system's: append the bundle's copy.
  if [ -n "${GPTJ_LIB_FALLBACK:-}" ] && ldd "$@" 2>&1 | grep -q "version \`GLIBCXX_"; then
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$GPTJ_LIB_FALLBACK"
    echo "libs: the system's libstdc++ is too old for these binaries: using $GPTJ_LIB_FALLBACK"
  fi
  local still
  still=$(missing_shared_libs "$@")
  if [ -n "$still" ]; then
    echo "libs: STILL MISSING: $(echo $still)"
    return 1
  fi
  echo "libs: every shared library resolved${added[*]:+ (added to LD_LIBRARY_PATH: ${added[*]})}"
  return 0
}
