// LDTILECFG's memory operand (palette 1), and the one tile shape the AMX code here uses: all eight
// tiles 16 rows of 64 bytes. Include only from files compiled for AMX (-mamx-tile).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace accllm {

struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Configures every tile as 16 rows of 64 bytes (release with _tile_release).
inline void ConfigureFullTiles() {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

}  // namespace accllm
