# Sourced by the scripts: puts the project's tools first on PATH.
export PATH="$PWD/target/tools/bin:$HOME/.cargo/bin:$PATH"
