# Sourced by the build scripts. copy_llama_libs BINARY OUT_DIR DEST copies the llama.cpp shared
# libraries BINARY needs, and those they need in turn (libggml.so.0 needs libggml-cuda.so.0, ...),
# from the crate's CMake output OUT_DIR to DEST under their soname, as plain files: cargo leaves
# only dangling symlinks in target/release, and symlinks may not survive being carried elsewhere.
copy_llama_libs() {
  local binary=$1 out_dir=$2 dest=$3 queue soname lib
  mkdir -p "$dest"
  queue=$(needed_llama_libs "$binary")
  while [ -n "$queue" ]; do
    set -- $queue
    soname=$1
    shift
    queue="$*"
    [ -e "$dest/$soname" ] && continue
    lib=$(ls "$out_dir"/lib*/"$soname" 2>/dev/null | head -1)
    [ -n "$lib" ] || { echo "error: $binary needs $soname but the build has no such library under $out_dir" >&2; return 1; }
    cp -L "$lib" "$dest/$soname"
    queue="$queue $(needed_llama_libs "$dest/$soname")"
  done
}

# The llama.cpp libraries (libllama*, libggml*) an ELF file names as NEEDED.
needed_llama_libs() {
  readelf -d "$1" | sed -n 's/.*NEEDED.*\[\(lib\(llama\|ggml\)[^]]*\)\].*/\1/p'
}
