// Does this C++ compiler build AMX tile code that runs? Compiled and run by
// scripts/lib/cpu-features.sh before llama.cpp is built for AMX.
//
// It sets up a tile configuration the way ggml's AMX kernels do (a local struct filled in field by
// field, then _tile_loadconfig) and uses a tile. GCC 12 at -O2 (Debian 12's compiler) drops the
// stores into the struct, so the configuration loaded leaves every tile unconfigured and the first
// tile instruction raises SIGILL: llama.cpp's AMX path built with it dies the same way. Exit 0 and
// "ok" means the compiler, the CPU and the OS all handle AMX.
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

// Palette 1's layout (Intel SDM, LDTILECFG): bytes per row and rows for each of 16 tiles.
struct TileConfig {
    uint8_t palette = 0;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
};

__attribute__((noinline)) void use_a_tile() {
    alignas(64) TileConfig config = {};
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
    _tile_zero(4);
    _tile_release();
}

}  // namespace

int main() {
    // Linux hands out AMX's tile data state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        std::puts("the OS refused AMX's tile state");
        return 2;
    }
    use_a_tile();
    std::puts("ok");
    return 0;
}
