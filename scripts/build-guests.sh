#!/usr/bin/env bash
# Builds the wasm32-wasip2 components (the Asana connector and, with
# --fixtures, the adversarial test guests) into target/wasm/.
#
# Where rustup can add the wasm32-wasip2 target (a laptop), it is used. Where
# it can't (these build machines have no wasm32 targets to download), Debian's
# rustc-web toolchain, which ships the std source, builds std for the target
# itself (-Zbuild-std), linking with lld-19 against Debian's wasi-libc.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/wasm"
mkdir -p "$out"

crates=()
for dir in "$root"/connectors/*/; do
  [[ -f "$dir/Cargo.toml" ]] && crates+=("${dir%/}")
done
if [[ "${1:-}" == "--fixtures" ]]; then
  for dir in "$root"/tests/fixtures/*/; do
    [[ -f "$dir/Cargo.toml" ]] && crates+=("${dir%/}")
  done
fi

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

pick_toolchain() {
  # TETHER_WASM_TOOLCHAIN=debian forces the fallback (to test it where rustup works).
  if [[ "${TETHER_WASM_TOOLCHAIN:-}" != debian ]] && command -v rustup >/dev/null 2>&1 \
     && { rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
          || timeout 120 rustup target add wasm32-wasip2 >/dev/null 2>&1; }; then
    echo rustup
    return
  fi
  local need=()
  [[ -x /usr/bin/cargo && -x /usr/bin/rustc ]] || need+=(rustc-web cargo-web)
  [[ -d /usr/lib/rustlib/src/rust/library ]] || need+=(rust-web-src)
  [[ -f /usr/lib/wasm32-wasi/libc.a ]] || need+=(wasi-libc)
  command -v wasm-ld-19 >/dev/null 2>&1 || need+=(lld-19)
  if ((${#need[@]})); then
    echo "installing Debian's wasm toolchain: ${need[*]}" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >&2
  fi
  echo debian
}

toolchain="$(pick_toolchain)"
for crate in "${crates[@]}"; do
  name="$(sed -n 's/^name = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -n1)"
  # The fixtures are separate workspaces; one target folder lets them share
  # their compiled dependencies.
  target_dir="$crate/target"
  [[ "$crate" == "$root"/tests/fixtures/* ]] && target_dir="$root/tests/fixtures/target"
  export CARGO_TARGET_DIR="$target_dir"
  echo "building $name for wasm32-wasip2 ($toolchain toolchain)" >&2
  if [[ "$toolchain" == rustup ]]; then
    (cd "$crate" && cargo build --quiet --release --target wasm32-wasip2)
  else
    # rustc-web's linker wrapper (wasm-component-ld) looks for `wasm-ld`.
    shim="$root/.tools/bin"
    mkdir -p "$shim"
    ln -sf "$(command -v wasm-ld-19)" "$shim/wasm-ld"
    (cd "$crate" && PATH="$shim:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
      RUSTC_BOOTSTRAP=1 RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
      /usr/bin/cargo build --quiet --release --target wasm32-wasip2 -Zbuild-std=std,panic_abort)
  fi
  cp "$target_dir/wasm32-wasip2/release/${name//-/_}.wasm" "$out/$name.wasm"
  echo "$out/$name.wasm" >&2
done
