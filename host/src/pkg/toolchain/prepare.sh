#!/usr/bin/env bash
# Prepares hako's private wasm toolchain in $TC (run by `hako pkg toolchain`,
# which holds the lock, passes TC, WEBR_ROOTFS and renames $TC when this
# succeeds). Every step is stamped, so a run that failed resumes where it
# stopped. Nothing is installed system-wide: the Debian .debs come through a
# private apt configuration under $TC/apt and are only unpacked.
set -euo pipefail
: "${TC:?}" "${WEBR_ROOTFS:?}" "${WEBR_LIB:?}"
say() { echo "toolchain: $*" >&2; }
step() { [ -e "$TC/.done-$1" ]; }
done_() { touch "$TC/.done-$1"; }
mkdir -p "$TC"

# Pinned versions: change any of them and the toolchain key changes too.
EMSCRIPTEN_DEB=3.1.69+dfsg-3          # trixie: emcc + musl 1.2.5 sysroot (64-bit time_t)
LIBCXX_DEB=6.0.5+dfsg+~1.41.5-2       # sid: libc++ headers of _LIBCPP_VERSION 210108
R_DEB=4.6.2-1                          # sid: R headers (Rconfig.h/Rversion.h remade below)
R_OLD_DEB=4.5.0-3                      # trixie: R 4.5 headers, for sources that use API R 4.6 hid
BINARYEN_LINK=120.0.0                  # emcc's wasm-opt (with -sWASM_BIGINT)
BINARYEN_EXNREF=132.0.0                # --translate-to-exnref

for tool in clang-19 wasm-ld-19 llvm-ar-19 node npm python3 dpkg-deb apt-get R; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "toolchain: '$tool' is missing: install clang-19 lld-19 llvm-19 nodejs npm r-base-core (Debian 12), e.g. with tests/setup.sh" >&2
    exit 1
  }
done
LLVM=/usr/lib/llvm-19/bin
PY=$(command -v /usr/bin/python3 || command -v python3)

# --- private apt: trixie (deb + deb-src) and sid, own lists, cache and status.
A="$TC/apt"
MIRROR=${HAKO_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
[ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || { echo "toolchain: no Debian mirror found in the system's apt sources; set HAKO_DEBIAN_MIRROR" >&2; exit 1; }
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$A"/{lists/partial,cache/archives/partial,prefs.d,debs}
cat > "$A/sources.list" <<SRC
deb [signed-by=$KEY] $MIRROR trixie main
deb-src [signed-by=$KEY] $MIRROR trixie main
deb [signed-by=$KEY] $MIRROR sid main
deb-src [signed-by=$KEY] $MIRROR sid main
SRC
touch "$A/status"
cat > "$A/apt.conf" <<CONF
Dir::Etc::SourceList "$A/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$A/prefs.d";
Dir::State "$A";
Dir::State::Lists "$A/lists";
Dir::State::status "$A/status";
Dir::Cache "$A/cache";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
Debug::NoLocking "true";
CONF
mkdir -p "$TC/bin"
cat > "$TC/bin/hako-apt-get" <<W
#!/bin/sh
# apt-get with hako's private configuration (trixie + sid, never the system's).
APT_CONFIG="$A/apt.conf" exec apt-get "\$@"
W
chmod +x "$TC/bin/hako-apt-get"
if ! step apt; then
  say "apt: reading the trixie and sid package lists (private configuration)"
  "$TC/bin/hako-apt-get" -qq update
  done_ apt
fi
fetch_deb() { # name version -> path of the .deb
  local f
  f=$(ls "$A/debs/$1_"*.deb 2>/dev/null | grep -F "_$(echo "$2" | sed 's/^[0-9]*://')_" | head -n1 || true)
  if [ -z "$f" ]; then
    say "downloading $1 $2 (.deb)"
    (cd "$A/debs" && "$TC/bin/hako-apt-get" -qq download "$1=$2")
    f=$(ls "$A/debs/$1_"*.deb | head -n1)
  fi
  echo "$f"
}

# --- emscripten 3.1.69 (trixie): emcc, its Python and the sysroot headers.
E="$TC/emscripten"
if ! step emscripten; then
  deb=$(fetch_deb emscripten "$EMSCRIPTEN_DEB")
  say "unpacking emcc and the sysroot headers"
  rm -rf "$TC/x" "$E" && mkdir -p "$TC/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TC/x" \
    --exclude='./usr/share/emscripten/cache/sysroot/lib/*' --exclude='./usr/share/emscripten/test/*' \
    --exclude='./usr/share/doc/*' --exclude='./usr/share/emscripten/docs/*'
  mv "$TC/x/usr/share/emscripten" "$E"
  rm -rf "$TC/x" "$A/debs/emscripten_3"*
  # Side modules link nothing from the sysroot: R.wasm exports libc, libc++ and the rest.
  mkdir -p "$E/cache/sysroot/lib/wasm32-emscripten/pic"
  done_ emscripten
fi

# --- libc++ / libc++abi headers of R.wasm's libc++ (21.1.8) from sid's emscripten.
if ! step libcxx; then
  deb=$(fetch_deb emscripten "$LIBCXX_DEB")
  say "unpacking libc++ 21 headers"
  rm -rf "$TC/x" && mkdir -p "$TC/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TC/x" \
    ./usr/share/emscripten/system/lib/libcxx/include ./usr/share/emscripten/system/lib/libcxxabi/include
  V1="$E/cache/sysroot/include/c++/v1"
  rm -rf "$V1" && mkdir -p "$V1"
  cp -r "$TC/x/usr/share/emscripten/system/lib/libcxx/include/." "$V1/"
  cp -r "$TC/x/usr/share/emscripten/system/lib/libcxxabi/include/." "$V1/"
  rm -f "$V1"/*.in "$V1/CMakeLists.txt"
  grep -q '_LIBCPP_VERSION 210108' "$V1/__config" || { echo "toolchain: libc++ headers are not 21.1.8" >&2; exit 1; }
  rm -rf "$TC/x" "$A/debs/emscripten_6"*
  done_ libcxx
fi

# --- binaryen from npm: 120 for emcc, 132 for the exnref translation.
for v in "$BINARYEN_LINK" "$BINARYEN_EXNREF"; do
  if ! step "binaryen-$v"; then
    say "fetching binaryen@$v (npm)"
    rm -rf "$TC/npm" "$TC/binaryen-$v" && mkdir -p "$TC/npm" "$TC/binaryen-$v"
    (cd "$TC/npm" && npm pack "binaryen@$v" --prefer-offline --ignore-scripts --silent >/dev/null)
    # Only wasm-opt is used (each tool is a 10 MB bundle of its own).
    tar -xzf "$TC/npm"/binaryen-*.tgz -C "$TC/binaryen-$v" --strip-components=1 \
      package/package.json package/LICENSE package/bin/wasm-opt package/bin/package.json
    chmod +x "$TC/binaryen-$v"/bin/wasm-opt
    rm -rf "$TC/npm"
    done_ "binaryen-$v"
  fi
done

# --- emcc configuration and wrappers.
NODE=$(command -v node)
cat > "$TC/emscripten.config" <<CFG
LLVM_ROOT = '$LLVM'
BINARYEN_ROOT = '$TC/binaryen-$BINARYEN_LINK'
NODE_JS = '$NODE'
CACHE = '$E/cache'
FROZEN_CACHE = True
CFG
for t in emcc em++ emar emranlib; do
  cat > "$TC/bin/$t" <<W
#!/bin/sh
EM_CONFIG="$TC/emscripten.config" EMCC_SKIP_SANITY_CHECK=1 exec "$PY" -E "$E/$t.py" "\$@"
W
  chmod +x "$TC/bin/$t"
done
cat > "$TC/bin/wasm-opt-exnref" <<W
#!/bin/sh
# Legacy exception handling -> exnref, as hako does for R.wasm itself.
exec "$NODE" "$TC/binaryen-$BINARYEN_EXNREF/bin/wasm-opt" --enable-exception-handling --enable-reference-types \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals --enable-multivalue \
  --translate-to-exnref "\$@"
W
cat > "$TC/bin/no-fortran" <<'W'
#!/bin/sh
echo "hako pkg build: error: Fortran is not supported (no wasm32 Fortran compiler comes from Debian)" >&2
exit 1
W
chmod +x "$TC/bin/wasm-opt-exnref" "$TC/bin/no-fortran"

# --- zlib/bzip2/lzma/zstd headers and empty archives: R.wasm exports these
# libraries, so `-lz` style links must succeed without linking anything.
if ! step extra; then
  mkdir -p "$TC/extra/include" "$TC/extra/lib"
  for p in zlib1g-dev libbz2-dev liblzma-dev libzstd-dev; do
    rm -rf "$TC/x" && mkdir -p "$TC/x"
    (cd "$A/debs" && "$TC/bin/hako-apt-get" -qq download "$p/trixie")
    dpkg-deb -x "$A/debs/${p}_"*.deb "$TC/x"
    cp -r "$TC/x/usr/include/." "$TC/extra/include/"
    rm -rf "$TC/x" "$A/debs/${p}_"*.deb
  done
  # Debian puts zconf.h under the multiarch directory; it is arch-neutral.
  [ -e "$TC/extra/include/zconf.h" ] || cp "$TC/extra/include/x86_64-linux-gnu/zconf.h" "$TC/extra/include/"
  rm -rf "$TC/extra/include/x86_64-linux-gnu"
  for l in z bz2 lzma zstd pcre2-8 iconv rt dl pthread; do
    "$LLVM/llvm-ar" rc "$TC/extra/lib/lib$l.a"
  done
  # BLAS and LAPACK are side modules of their own: linking against webR's
  # makes a package's module name them as needed libraries, as R.wasm does.
  cp "$WEBR_LIB/libRblas.so" "$WEBR_LIB/libRlapack.so" "$TC/extra/lib/"
  done_ extra
fi

# --- R headers made for wasm32: 4.6 (R.wasm's R, Rversion.h says 4.6.0) and
# 4.5, for older sources that call entry points 4.6's headers hide but R.wasm
# still exports (whether it does is checked against R.wasm at install).
r_headers() { # deb-version dest R_VERSION R_MINOR
  local deb
  deb=$(fetch_deb r-base-core "$1")
  rm -rf "$TC/x" "$2" && mkdir -p "$TC/x" "$(dirname "$2")"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TC/x" ./usr/share/R/include
  mv "$TC/x/usr/share/R/include" "$2"
  rm -rf "$TC/x" "$deb"
  sed -i -e 's/^#define SIZEOF_SIZE_T 8/#define SIZEOF_SIZE_T 4/' -e 's|^#define ENABLE_NLS 1|/* #undef ENABLE_NLS */|' \
    "$2/Rconfig.h"
  sed -i -e "s/^#define R_VERSION .*/#define R_VERSION $3/" -e "s/^#define R_MINOR .*/#define R_MINOR  \"$4\"/" \
    "$2/Rversion.h"
}
if ! step rheaders; then
  say "unpacking R 4.6 and 4.5 headers"
  r_headers "$R_DEB" "$TC/R/include" 263680 6.0
  r_headers "$R_OLD_DEB" "$TC/R/include-4.5" 263424 5.0
  done_ rheaders
fi

# --- a stand-in R home: the host's R (for configure scripts and R CMD INSTALL's
# compile step) with webR's Makeconf (compilers replaced) and the wasm headers.
RH="$TC/rhome"
rm -rf "$RH" && mkdir -p "$RH/bin" "$RH/etc"
HOST_RHOME=$(R RHOME)
for d in lib library modules share doc; do
  [ -e "$HOST_RHOME/$d" ] && ln -s "$(readlink -f "$HOST_RHOME/$d")" "$RH/$d"
done
ln -s "$TC/R/include" "$RH/include"
for f in "$HOST_RHOME"/bin/*; do
  b=$(basename "$f")
  [ "$b" = R ] || ln -s "$(readlink -f "$f")" "$RH/bin/$b"
done
host_share=$(sed -n 's/^R_SHARE_DIR=//p' "$HOST_RHOME/bin/R" | head -n1)
sed -e "s|^R_HOME_DIR=.*|R_HOME_DIR=$RH|" -e "s|^R_INCLUDE_DIR=.*|R_INCLUDE_DIR=\${HAKO_R_INCLUDE:-$RH/include}|" \
  "$HOST_RHOME/bin/R" > "$RH/bin/R"
chmod +x "$RH/bin/R"
for f in "$HOST_RHOME"/etc/*; do
  b=$(basename "$f")
  [ "$b" = Makeconf ] || cp -L "$f" "$RH/etc/$b"
done
MK="$WEBR_ROOTFS/usr/lib/R/etc/Makeconf"
[ -f "$MK" ] || { echo "toolchain: webR's Makeconf is missing ($MK)" >&2; exit 1; }
EM=/opt/emsdk/upstream/emscripten
FLAGS_CPP="-I$TC/extra/include -fwasm-exceptions -sSUPPORT_LONGJMP=wasm -DRCPP_DEMANGLER_ENABLED=0"
FLAGS_LD="-Oz -L$TC/extra/lib -fwasm-exceptions -sSUPPORT_LONGJMP=wasm -sSIDE_MODULE=1 -sWASM_BIGINT"
sed -e "s|$EM/emcc|$TC/bin/emcc|g" -e "s|$EM/em++|$TC/bin/em++|g" -e "s|$EM/emar|$TC/bin/emar|g" \
    -e "s|$EM/emranlib|$TC/bin/emranlib|g" -e "s|/opt/emsdk/upstream/bin/llvm-nm|$LLVM/llvm-nm|g" \
    -e "s|^CPPFLAGS = .*|CPPFLAGS = $FLAGS_CPP|" -e "s|^LDFLAGS = .*|LDFLAGS = $FLAGS_LD|" \
    -e "s|^LIBS = .*|LIBS = -L$TC/extra/lib -lm|" \
    -e "s|^BLAS_LIBS = .*|BLAS_LIBS = -L$TC/extra/lib -lRblas|" \
    -e "s|^LAPACK_LIBS = .*|LAPACK_LIBS = -L$TC/extra/lib -lRlapack|" \
    -e 's|-g -O2 \$(LTO)|-O2 -fPIC $(LTO)|' \
    -e "s|^FC = .*|FC = $TC/bin/no-fortran|" -e "s|^FLIBS = .*|FLIBS = |" \
    -e "s|^STRIP_STATIC_LIB = .*|STRIP_STATIC_LIB = true|" -e "s|^STRIP_SHARED_LIB = .*|STRIP_SHARED_LIB = true|" \
    -e "s|/__w/webr/webr/[^ ]*|$TC/extra/lib|g" \
    "$MK" > "$RH/etc/Makeconf"
if grep -v '^#' "$RH/etc/Makeconf" | grep -q '/opt/\|/__w/'; then
  echo "toolchain: webR paths left in Makeconf:" >&2; grep -n '/opt/\|/__w/' "$RH/etc/Makeconf" >&2
fi
: "$host_share"

# --- check: a C and a C++ side module with exceptions link, and translate.
say "checking the compilers"
rm -rf "$TC/check" && mkdir -p "$TC/check"
cat > "$TC/check/a.cpp" <<'CPP'
#include <stdexcept>
#include <string>
extern "C" int hako_check(int x) {
  try { if (x > 0) throw std::runtime_error(std::to_string(x)); } catch (const std::exception &e) { return 1; }
  return 0;
}
CPP
"$TC/bin/em++" -O2 -fPIC -fwasm-exceptions -sSUPPORT_LONGJMP=wasm -c "$TC/check/a.cpp" -o "$TC/check/a.o"
"$TC/bin/em++" $FLAGS_LD -shared "$TC/check/a.o" -o "$TC/check/a.so"
"$TC/bin/wasm-opt-exnref" "$TC/check/a.so" -o "$TC/check/a.exnref.so"
rm -rf "$TC/check"
du -sh "$TC" | awk '{print "toolchain: ready (" $1 ")"}' >&2
