#include "runtime/eval/weight_variants.h"

#include <memory>

namespace accllm {
EngineWeights PackedWeights(const PackedContents& p) {
  EngineWeights e;
  e.config = p.config;
  e.embedding_f16 = p.embedding.data();
  e.layers.resize(p.config.n_layers);
  for (int l = 0; l < p.config.n_layers; ++l) {
    e.layers[l].rms_att = p.norms[2 * l].data();
    e.layers[l].rms_ffn = p.norms[2 * l + 1].data();
  }
  e.rms_final = p.norms.back().data();
  e.classifier = {p.config.vocab_size, p.config.dim, nullptr,
                  p.config.shared_classifier ? p.embedding.data() : p.classifier.data(), std::nullopt, std::nullopt};
  for (const auto& [id, m] : p.linears) {
    LinearWeights& w = LinearOf(e.layers[id.layer], id.kind);
    w.out = m.shape.rows;
    w.in = m.shape.cols;
    w.w2 = m.view();
  }
  return e;
}

EngineWeights DequantizeW2Layers(EngineWeights e) {
  for (EngineLayer& layer : e.layers) {
    for (LinearWeights* w : {&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w1, &layer.w2, &layer.w3}) {
      if (!w->w2) continue;
      auto buffer = std::make_shared<std::vector<float>>(static_cast<std::size_t>(w->out) * w->in);
      for (int r = 0; r < w->out; ++r) {
        DequantizeW2Row(*w->w2, r, {buffer->data() + static_cast<std::size_t>(r) * w->in, static_cast<std::size_t>(w->in)});
      }
      w->w2.reset();
      w->f32 = buffer->data();
      e.storage.push_back(std::move(buffer));
    }
  }
  return e;
}

EngineWeights DequantizedWeights(const PackedContents& p) { return DequantizeW2Layers(PackedWeights(p)); }

}  // namespace accllm
