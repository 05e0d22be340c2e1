#!/usr/bin/env bash
# build-gpu.sh builds rella with GPU support (build tag "rellagpu") on a machine
# that has no GPU and no CUDA toolkit, e.g. a fresh Debian bookworm box or CI.
#
# What it needs at build time: only CUDA *headers* (cuda.h for the driver API,
# cublas_api.h for cublasGemmEx, nvrtc.h for the run-time compiler). The binary
# links no CUDA library: package cuda opens libcuda.so.1, then the libcublas.so.N
# and libnvrtc.so.N of the newest major N the driver supports (never newer) with
# dlopen at run time and looks every entry point up by name. So there is no cuBLAS link stub and no stubs/libcuda.so to carry,
# the soname-versioned cuBLAS symbols of one CUDA release never pin the binary to
# that release, and the GPU binary still runs the CPU commands on machines
# without a driver.
#
# The headers come from Debian's nvidia-cuda-dev (CUDA 11.8, component
# non-free). The script keeps its own apt configuration, lists and cache under
# the kit folder, so the system's sources are never changed. Headers of 11.8
# declare every call the binding uses with the same ABI as CUDA 12 and 13.
#
# Usage: scripts/build-gpu.sh [-o OUTPUT] [--nvrtc]   (default OUTPUT bin/rella-gpu)
#   It also writes the device test binaries of packages cuda and
#   distributed/ncclcomm beside OUTPUT (cuda-gpu.test, ncclcomm-gpu.test). --nvrtc also fetches CUDA 11.8's NVRTC (16 MB) into
#   <kit>/lib, so the kernels can be compiled here without a GPU:
#   CGO_CFLAGS=-I.kit/include LD_LIBRARY_PATH=.kit/lib go test -tags rellagpu -run NVRTC ./cuda
# Environment:
#   RELLA_KIT            kit folder (default <repo>/.kit, git-ignored)
#   RELLA_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   RELLA_CUDA_INCLUDE   use these CUDA headers instead of fetching (a folder
#                        holding cuda.h, cublas_v2.h, nvrtc.h, library_types.h)
#   RELLA_KEEP_DEB       keep the downloaded nvidia-cuda-dev package (770 MB)
# The path of the binary is printed on the last line of output.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/bin/rella-gpu"
with_nvrtc=""
while [ $# -gt 0 ]; do
	case "$1" in
	-o) out="$2"; shift 2 ;;
	--nvrtc) with_nvrtc=1; shift ;;
	-h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "build-gpu.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

kit="${RELLA_KIT:-$root/.kit}"
mirror="${RELLA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
inc="$kit/include"
log() { echo "build-gpu.sh: $*" >&2; }

# needed lists the headers the binding includes, directly or not.
have_headers() {
	local d="$1"
	[ -f "$d/cuda.h" ] && [ -f "$d/cublas_v2.h" ] && [ -f "$d/nvrtc.h" ] && [ -f "$d/library_types.h" ]
}

# apt_setup makes a private apt configuration under the kit (sources with
# bookworm main contrib non-free, its own lists and cache) and runs
# apt-get update with it once; opts holds the options for later apt-get calls.
opts=()
apt_setup() {
	[ ${#opts[@]} -eq 0 ] || return 0
	command -v apt-get >/dev/null || { log "apt-get not found: set RELLA_CUDA_INCLUDE to a folder with CUDA 11.8-13 headers"; exit 1; }
	command -v dpkg-deb >/dev/null || { log "dpkg-deb not found"; exit 1; }
	local apt="$kit/apt"
	mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" \
		"$apt/cache/archives/partial" "$apt/debs"
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	local signed=""
	[ -f "$keyring" ] && signed="[signed-by=$keyring] "
	# Private sources: bookworm with contrib and non-free (nvidia-cuda-dev is in non-free).
	echo "deb ${signed}$mirror bookworm main contrib non-free" >"$apt/etc/sources.list"
	opts=(-q
		-o "Dir::Etc::sourcelist=$apt/etc/sources.list"
		-o "Dir::Etc::sourceparts=$apt/etc/sources.list.d"
		-o "Dir::Etc::preferencesparts=$apt/etc/preferences.d"
		-o "Dir::State::Lists=$apt/lists"
		-o "Dir::Cache=$apt/cache"
		-o "APT::Sandbox::User=root")
	[ "$(id -u)" = 0 ] || opts+=(-o "Debug::NoLocking=1")
	log "apt-get update (private lists in $apt)"
	apt-get "${opts[@]}" update >&2
}

fetch_headers() {
	apt_setup
	local apt="$kit/apt"
	local deb
	deb="$(ls "$apt"/debs/nvidia-cuda-dev_*.deb 2>/dev/null | head -n1 || true)"
	if [ -z "$deb" ]; then
		log "apt-get download nvidia-cuda-dev (about 770 MB; only headers are kept)"
		(cd "$apt/debs" && apt-get "${opts[@]}" download nvidia-cuda-dev >&2)
		deb="$(ls "$apt"/debs/nvidia-cuda-dev_*.deb | head -n1)"
	fi
	log "extracting headers from $(basename "$deb")"
	local tmp="$kit/extract"
	rm -rf "$tmp" && mkdir -p "$tmp"
	# Only the top-level headers (no thrust/cub/crt trees except crt/, which
	# cuda_fp16.h and host_defines.h reach).
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards \
		'./usr/include/*.h' './usr/include/*.hpp' './usr/include/crt/*' \
		'./usr/lib/x86_64-linux-gnu/stubs/libcuda.so' './usr/lib/x86_64-linux-gnu/stubs/libcublas.so' 2>/dev/null || true
	# The stubs are never linked: TestSymbols (go test -tags rellagpu ./cuda)
	# checks that they export every entry point the binding looks up.
	mkdir -p "$kit/stubs"
	cp "$tmp"/usr/lib/x86_64-linux-gnu/stubs/*.so "$kit/stubs/" 2>/dev/null || log "no stub libraries in $deb"
	local src="$tmp/usr/include"
	[ -f "$src/cuda.h" ] || src="$(dirname "$(find "$tmp" -name cuda.h | head -n1)")"
	have_headers "$src" || { log "headers missing from $deb"; exit 1; }
	# Keep only the headers the binding reaches (13 files, about 2 MB).
	rm -rf "$inc" && mkdir -p "$inc"
	local probe="$tmp/probe.c" h
	printf '#include <cuda.h>\n#include <cublas_v2.h>\n#include <nvrtc.h>\n' >"$probe"
	for h in $("${CC:-cc}" -M -I"$src" "$probe" | tr ' \\' '\n\n' | grep "^$src/" | sort -u); do
		mkdir -p "$inc/$(dirname "${h#"$src"/}")"
		cp "$h" "$inc/${h#"$src"/}"
	done
	rm -rf "$tmp"
	# Keep the download only when asked: it is large.
	[ -n "${RELLA_KEEP_DEB:-}" ] || rm -f "$apt"/debs/*.deb
	log "headers in $inc ($(du -sh "$inc" | cut -f1))"
}

# fetch_nvrtc puts CUDA 11.8's run-time compiler (libnvrtc11.2 and its builtins,
# 16 MB) into the kit's lib folder. NVRTC runs on the CPU, so with it the
# embedded kernels can be compiled to PTX for sm_70/sm_80/sm_90 on a machine
# without a GPU (go test -tags rellagpu -run NVRTC ./cuda/, see cuda/README.md).
fetch_nvrtc() {
	apt_setup
	local apt="$kit/apt" lib="$kit/lib" d
	mkdir -p "$lib" "$apt/debs"
	(cd "$apt/debs" && apt-get "${opts[@]}" download libnvrtc11.2 libnvrtc-builtins11.8 >&2)
	for d in "$apt"/debs/libnvrtc11.2_*.deb "$apt"/debs/libnvrtc-builtins11.8_*.deb; do
		local tmp="$kit/extract-nvrtc"
		rm -rf "$tmp" && mkdir -p "$tmp"
		dpkg-deb -x "$d" "$tmp"
		find "$tmp" -name 'libnvrtc*.so*' -exec cp -a {} "$lib"/ \;
		rm -rf "$tmp" "$d"
	done
	log "NVRTC in $lib: $(cd "$lib" && ls | tr '\n' ' ')"
}

if [ -n "${RELLA_CUDA_INCLUDE:-}" ]; then
	inc="$RELLA_CUDA_INCLUDE"
	have_headers "$inc" || { log "RELLA_CUDA_INCLUDE=$inc lacks cuda.h, cublas_api.h, nvrtc.h or library_types.h"; exit 1; }
elif ! have_headers "$inc"; then
	fetch_headers
fi
if [ -n "$with_nvrtc" ] && ! ls "$kit"/lib/libnvrtc.so.* >/dev/null 2>&1; then
	fetch_nvrtc
fi

command -v go >/dev/null || { log "go not found"; exit 1; }
mkdir -p "$(dirname "$out")"
log "go build -tags rellagpu -o $out ./cmd/rella"
cd "$root"
export CGO_ENABLED=1 CGO_CFLAGS="-I$inc ${CGO_CFLAGS:-}"
# -s -w: no symbol table or DWARF (a third smaller; the binaries travel to
# the GPU machine within a 64 MiB carry limit, see scripts/gpu-check.sh).
go build -tags rellagpu -ldflags "-s -w" -o "$out" ./cmd/rella
# The device checks of package cuda as a test binary: the GPU machine has no
# Go toolchain, so scripts/gpu-check.sh runs this file there.
log "go test -c -tags rellagpu -o $(dirname "$out")/cuda-gpu.test ./cuda"
go test -c -tags rellagpu -ldflags "-s -w" -o "$(dirname "$out")/cuda-gpu.test" ./cuda
# The NCCL check (world size 1 through NCCL vs the plain trainer path).
log "go test -c -tags rellagpu -o $(dirname "$out")/ncclcomm-gpu.test ./distributed/ncclcomm"
go test -c -tags rellagpu -ldflags "-s -w" -o "$(dirname "$out")/ncclcomm-gpu.test" ./distributed/ncclcomm
echo "$out"
