#!/usr/bin/env bash
# fetch-nccl.sh puts NCCL's header and library into the kit (.kit/nccl), for
# the checks of package nccl on a machine without CUDA:
#   go test -tags rellagpu ./nccl   (TestABIHeader: nccl_abi.h against nccl.h;
#                                    TestExports: every entry point the binding
#                                    looks up is exported by libnccl.so.2)
# The binding itself needs neither to build: it declares NCCL's ABI in
# nccl/nccl_abi.h and opens libnccl.so.2 with dlopen at run time.
#
# Both come from Debian trixie's contrib (libnccl-dev, libnccl2: 2 x 114 MB
# downloads, about 240 MB kept for the library). The script keeps its own
# apt configuration, lists and cache under the kit, so the system's sources
# are never changed. Trixie's library needs glibc 2.38 to be loaded; on an
# older system TestLibrary skips, TestExports still reads it.
# Environment: RELLA_KIT (default <repo>/.kit), RELLA_DEBIAN_MIRROR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kit="${RELLA_KIT:-$root/.kit}"
mirror="${RELLA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { echo "fetch-nccl.sh: $*" >&2; }

if [ -f "$kit/nccl/include/nccl.h" ] && [ -e "$kit/nccl/lib/libnccl.so.2" ]; then
	log "already in $kit/nccl"
	exit 0
fi
command -v apt-get >/dev/null || { log "apt-get not found"; exit 1; }
command -v dpkg-deb >/dev/null || { log "dpkg-deb not found"; exit 1; }
apt="$kit/apt-nccl"
mkdir -p "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
echo "deb ${signed}$mirror trixie contrib" >"$apt/etc/sources.list"
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
(cd "$apt/debs" && apt-get "${opts[@]}" download libnccl-dev libnccl2 >&2)
tmp="$kit/extract-nccl"
rm -rf "$tmp" && mkdir -p "$tmp" "$kit/nccl/include" "$kit/nccl/lib"
for d in "$apt"/debs/libnccl-dev_*.deb "$apt"/debs/libnccl2_*.deb; do
	dpkg-deb -x "$d" "$tmp"
done
cp "$tmp"/usr/include/nccl.h "$kit/nccl/include/"
find "$tmp" -name 'libnccl.so.2*' -exec cp -a {} "$kit/nccl/lib/" \;
rm -rf "$tmp" "$apt"/debs/*.deb
log "nccl.h and libnccl.so.2 in $kit/nccl"
