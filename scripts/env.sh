# Sourced by the scripts: puts the project's tools (target/tools/bin: wasm-opt) first on
# PATH, then cargo's installs.
export PATH="$PWD/target/tools/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
