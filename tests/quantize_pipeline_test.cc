// The quantization pipeline's fast paths against their oracles: calibration on the batched
// engine against the reference forward pass, GPTQ over threads against one thread, and the
// residual-stream rotation against the model it rewrites.
#include <cmath>
#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "runtime/common/half.h"
#include "runtime/cpu/cpu_engine.h"
#include "runtime/eval/corpus.h"
#include "runtime/model/load_model.h"
#include "runtime/quant/calibration.h"
#include "runtime/quant/gptq.h"
#include "runtime/quant/linalg.h"
#include "runtime/quant/quantize_model.h"
#include "runtime/quant/rotation.h"
#include "runtime/reference/forward.h"
#include "tests/test_support.h"

namespace accllm {
namespace {

using ::accllm::testing::RequireModelFile;
using ::accllm::testing::RequireSharedFile;

// What `accllm quantize` reports about its products: the library, its kernels for this CPU, and
// whether the environment chose them.
TEST(GemmLibraryTest, NamesTheLibraryAndWhoChoseItsKernels) {
  const std::string name = GemmLibrary();
  EXPECT_THAT(name, ::testing::HasSubstr("OpenBLAS"));
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (forced != nullptr && *forced != '\0') {
    EXPECT_THAT(name, ::testing::HasSubstr(std::string("chosen by OPENBLAS_CORETYPE=") + forced));
  } else {
    EXPECT_THAT(name, ::testing::Not(::testing::HasSubstr("OPENBLAS_CORETYPE")));
  }
}

class QuantizePipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(model_, LoadModel(RequireModelFile("stories260K.bin").string()));
    ASSERT_OK_AND_ASSIGN(auto tokenizer, LoadTokenizer(RequireModelFile("tok512.bin").string()));
    ASSERT_OK_AND_ASSIGN(lines_, EncodeLines(RequireSharedFile("data/tinystories-dev.txt").string(), *tokenizer, {0, 3}));
    for (auto& s : lines_) {
      if (static_cast<int>(s.size()) > model_->config.max_seq_len) s.resize(model_->config.max_seq_len);
    }
  }
  std::unique_ptr<Model> model_;
  std::vector<std::vector<int>> lines_;
};

TEST_F(QuantizePipelineTest, EngineCalibrationEqualsTheReferenceForwardPass) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats fast, Calibrate(*model_, lines_));
  ASSERT_OK_AND_ASSIGN(CalibrationStats oracle, CalibrateOnReference(*model_, lines_));
  for (int l = 0; l < model_->config.n_layers; ++l) {
    for (int i = 0; i < 4; ++i) {
      const InputStats& a = fast.inputs[l][i];
      const InputStats& b = oracle.inputs[l][i];
      EXPECT_EQ(a.tokens, b.tokens);
      double diff = 0, norm = 0;
      for (std::size_t e = 0; e < b.gram.size(); ++e) {
        diff += (a.gram[e] - b.gram[e]) * (a.gram[e] - b.gram[e]);
        norm += b.gram[e] * b.gram[e];
      }
      EXPECT_LT(std::sqrt(diff / norm), 1e-4) << "layer " << l << " input " << i;
      for (int r = 0; r < a.cols; ++r) {  // symmetric, both triangles filled
        EXPECT_EQ(a.gram[r * a.cols + (a.cols - 1 - r)], a.gram[(a.cols - 1 - r) * a.cols + r]);
      }
    }
  }
}

TEST_F(QuantizePipelineTest, GptqOverThreadsEqualsOneThread) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const TensorId id{TensorKind::kW2, 1};
  const LlamaConfig& c = model_->config;
  const std::span<const float> w(model_->Tensor(id), static_cast<std::size_t>(c.dim) * c.hidden_dim);
  const W2Shape shape{c.dim, c.hidden_dim, 32, false};
  ASSERT_OK_AND_ASSIGN(W2Matrix serial, QuantizeW2Gptq(w, shape, stats.For(1, TensorKind::kW2).gram));
  ASSERT_OK_AND_ASSIGN(GptqHessian hessian, PrepareGptqHessian(stats.For(1, TensorKind::kW2).gram, c.hidden_dim));
  ThreadPool pool(3);
  ASSERT_OK_AND_ASSIGN(W2Matrix parallel, QuantizeW2Gptq(w, shape, hessian, {}, &pool));
  EXPECT_EQ(serial.codes, parallel.codes);
  EXPECT_EQ(serial.scales, parallel.scales);
  EXPECT_EQ(serial.zeros, parallel.zeros);
  // And it compensates: better than rounding each weight on its own.
  ASSERT_OK_AND_ASSIGN(W2Matrix rtn, QuantizeW2(w, shape));
  const auto& gram = stats.For(1, TensorKind::kW2).gram;
  EXPECT_LT(RelativeOutputError(w, parallel.view(), gram), RelativeOutputError(w, rtn.view(), gram));
}

// GPTQ as its paper writes it, in double: U the upper Cholesky factor of H^-1, each column's
// rounding error pushed onto every later column at once, a group's parameters chosen from its
// weights as updated so far. The product path (the earlier columns' errors read through the
// factor of H, lazy blocks, float) must choose the same codes and scales but where a value sits
// on a rounding boundary.
TEST_F(QuantizePipelineTest, GptqEqualsTheTextbookAlgorithm) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const LlamaConfig& c = model_->config;
  const int rows = c.dim, n = c.hidden_dim, group = 32;  // 172 columns: two lazy blocks, a partial group
  const std::span<const float> w(model_->Tensor({TensorKind::kW2, 1}), static_cast<std::size_t>(rows) * n);
  const std::vector<double>& gram = stats.For(1, TensorKind::kW2).gram;
  GptqOptions options;
  options.refit_scales = false;
  ASSERT_OK_AND_ASSIGN(GptqHessian hessian, PrepareGptqHessian(gram, n, options));
  ASSERT_OK_AND_ASSIGN(W2Matrix fast, QuantizeW2Gptq(w, {rows, n, group, false}, hessian, {}, nullptr));

  // H^-1 of the damped Hessian by Gauss-Jordan, then its upper Cholesky factor (H^-1 = U^T U).
  const auto at = [n](int i, int j) { return static_cast<std::size_t>(i) * n + j; };
  std::vector<double> h(gram), inv(h.size(), 0.0), u(h.size(), 0.0);
  for (int j = 0; j < n; ++j) h[at(j, j)] += hessian.damping[j];
  for (int j = 0; j < n; ++j) inv[at(j, j)] = 1.0;
  for (int col = 0; col < n; ++col) {
    const double pivot = h[at(col, col)];
    for (int j = 0; j < n; ++j) {
      h[at(col, j)] /= pivot;
      inv[at(col, j)] /= pivot;
    }
    for (int r = 0; r < n; ++r) {
      if (r == col || h[at(r, col)] == 0) continue;
      const double f = h[at(r, col)];
      for (int j = 0; j < n; ++j) {
        h[at(r, j)] -= f * h[at(col, j)];
        inv[at(r, j)] -= f * inv[at(col, j)];
      }
    }
  }
  for (int i = 0; i < n; ++i) {  // U^T U = inv, row by row of U
    for (int j = i; j < n; ++j) {
      double sum = inv[at(i, j)];
      for (int k = 0; k < i; ++k) sum -= u[at(k, i)] * u[at(k, j)];
      u[at(i, j)] = j == i ? std::sqrt(sum) : sum / u[at(i, i)];
    }
  }
  W2Matrix textbook(fast.shape);
  for (int r = 0; r < rows; ++r) {
    std::vector<double> x(w.begin() + at(r, 0), w.begin() + at(r, n));
    for (int j = 0; j < n; ++j) {
      if (hessian.dead[j]) x[j] = 0;
    }
    W2GroupParams p{};
    for (int i = 0; i < n; ++i) {
      if (i % group == 0) {
        std::vector<float> values, importance;
        for (int k = i; k < std::min(n, i + group); ++k) {
          values.push_back(static_cast<float>(x[k]));
          importance.push_back(hessian.importance[k]);
        }
        p = ChooseW2Params(values, importance);
        SetW2Params(textbook, r, i / group, p);
      }
      const uint8_t code = QuantizeW2Value(static_cast<float>(x[i]), p);
      SetW2Code(textbook, r, i, code);
      const double err = (x[i] - DequantizeW2Value(code, p)) / u[at(i, i)];
      for (int k = i + 1; k < n; ++k) x[k] -= err * u[at(i, k)];
    }
  }
  int equal_codes = 0, equal_scales = 0;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < n; ++j) equal_codes += W2StoredCode(fast.view(), r, j) == W2StoredCode(textbook.view(), r, j);
  }
  for (std::size_t i = 0; i < fast.scales.size(); ++i) equal_scales += fast.scales[i] == textbook.scales[i];
  EXPECT_GE(equal_codes, 0.99 * rows * n);
  EXPECT_GE(equal_scales, 0.97 * fast.scales.size());
  EXPECT_NEAR(RelativeOutputError(w, fast.view(), gram), RelativeOutputError(w, textbook.view(), gram),
              0.01 * RelativeOutputError(w, textbook.view(), gram));
}

// act-order: columns by decreasing input energy with static groups, dense and 2:4.
TEST_F(QuantizePipelineTest, GptqActOrderCompensatesAndKeepsTheLayout) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const LlamaConfig& c = model_->config;
  const TensorId id{TensorKind::kW2, 0};
  const std::span<const float> w(model_->Tensor(id), static_cast<std::size_t>(c.dim) * c.hidden_dim);
  const auto& gram = stats.For(0, TensorKind::kW2).gram;
  GptqOptions options;
  options.act_order = true;
  ASSERT_OK_AND_ASSIGN(GptqHessian hessian, PrepareGptqHessian(gram, c.hidden_dim, options));
  ASSERT_EQ(hessian.order.size(), static_cast<std::size_t>(c.hidden_dim));
  for (std::size_t i = 1; i < hessian.order.size(); ++i) {
    ASSERT_GE(gram[hessian.order[i - 1] * c.hidden_dim + hessian.order[i - 1]], gram[hessian.order[i] * c.hidden_dim + hessian.order[i]]);
  }
  const W2Shape dense{c.dim, c.hidden_dim, 32, false};
  ASSERT_OK_AND_ASSIGN(W2Matrix act, QuantizeW2Gptq(w, dense, hessian, {}, nullptr));
  ASSERT_OK_AND_ASSIGN(W2Matrix rtn, QuantizeW2(w, dense));
  EXPECT_LT(RelativeOutputError(w, act.view(), gram), RelativeOutputError(w, rtn.view(), gram));

  // 2:4: pruned weights dequantize to zero, kept ones near their values.
  std::vector<uint8_t> keep(w.size());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i % 4 == 1 || i % 4 == 2) ? 1 : 0;
  const W2Shape sparse{c.dim, c.hidden_dim, 32, true};
  ASSERT_OK_AND_ASSIGN(W2Matrix act24, QuantizeW2Gptq(w, sparse, hessian, keep, nullptr));
  std::vector<float> row(c.hidden_dim);
  for (int r = 0; r < c.dim; ++r) {
    DequantizeW2Row(act24.view(), r, row);
    for (int j = 0; j < c.hidden_dim; ++j) {
      if (!keep[static_cast<std::size_t>(r) * c.hidden_dim + j]) {
        ASSERT_EQ(row[j], 0.0f) << r << "," << j;
      }
    }
  }
}

// The scale refit keeps GPTQ's codes and zeros and lowers every row's output error over the
// calibration inputs (never raises it: a row keeps its scales unless the refit wins).
TEST_F(QuantizePipelineTest, GptqScaleRefitLowersEachRowsOutputError) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const LlamaConfig& c = model_->config;
  for (const TensorKind kind : {TensorKind::kW2, TensorKind::kW1}) {
    const int rows = kind == TensorKind::kW2 ? c.dim : c.hidden_dim, cols = kind == TensorKind::kW2 ? c.hidden_dim : c.dim;
    const std::span<const float> w(model_->Tensor({kind, 1}), static_cast<std::size_t>(rows) * cols);
    const auto& gram = stats.For(1, kind).gram;
    const W2Shape shape{rows, cols, 32, false};
    GptqOptions plain, refit;
    plain.refit_scales = false;
    ASSERT_OK_AND_ASSIGN(GptqHessian h_plain, PrepareGptqHessian(gram, cols, plain));
    ASSERT_OK_AND_ASSIGN(GptqHessian h_refit, PrepareGptqHessian(gram, cols, refit));
    ASSERT_OK_AND_ASSIGN(W2Matrix a, QuantizeW2Gptq(w, shape, h_plain, {}, nullptr));
    double free_error = -1, untouched = -1;
    ASSERT_OK_AND_ASSIGN(W2Matrix b, QuantizeW2Gptq(w, shape, h_refit, {}, nullptr, {}, &free_error));
    ASSERT_OK(QuantizeW2Gptq(w, shape, h_plain, {}, nullptr, {}, &untouched).status());
    EXPECT_EQ(untouched, -1) << "no refit, no error by-product";
    // The refit's by-product is the output error RelativeOutputError computes (both from float
    // products summed in double, in different orders).
    EXPECT_NEAR(free_error, RelativeOutputError(w, b.view(), gram), 1e-5 * RelativeOutputError(w, b.view(), gram) + 1e-12);
    EXPECT_EQ(a.codes, b.codes);
    EXPECT_EQ(a.zeros, b.zeros);
    EXPECT_NE(a.scales, b.scales);
    int improved = 0;
    for (int r = 0; r < rows; ++r) {
      std::vector<float> row(cols);
      // Each row's error on its own: dequantize and compare through the Gram matrix.
      const auto row_error = [&](const W2Matrix& m) {
        DequantizeW2Row(m.view(), r, row);
        double e = 0;
        for (int i = 0; i < cols; ++i) {
          double hd = 0;
          for (int j = 0; j < cols; ++j) hd += gram[static_cast<std::size_t>(i) * cols + j] * (w[r * cols + j] - row[j]);
          e += (w[r * cols + i] - row[i]) * hd;
        }
        return e;
      };
      const double ea = row_error(a), eb = row_error(b);
      EXPECT_LE(eb, ea * (1 + 1e-9)) << "row " << r;
      improved += eb < ea;
    }
    EXPECT_GT(improved, rows / 2);
    EXPECT_LT(RelativeOutputError(w, b.view(), gram), RelativeOutputError(w, a.view(), gram));
  }
}

// An input that never fires ("dead": a zero row and column in the Gram matrix) gets the grid's
// value nearest zero (0 itself, or +-scale on a symmetric grid), in column order and in act-order
// alike; the other columns are unaffected by it.
TEST_F(QuantizePipelineTest, GptqZeroesDeadInputsInEitherOrder) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const LlamaConfig& c = model_->config;
  const std::span<const float> w(model_->Tensor({TensorKind::kW2, 0}), static_cast<std::size_t>(c.dim) * c.hidden_dim);
  std::vector<double> gram = stats.For(0, TensorKind::kW2).gram;
  const int n = c.hidden_dim, dead = 5;
  for (int k = 0; k < n; ++k) gram[static_cast<std::size_t>(dead) * n + k] = gram[static_cast<std::size_t>(k) * n + dead] = 0.0;
  for (const bool act_order : {false, true}) {
    GptqOptions options;
    options.act_order = act_order;
    ASSERT_OK_AND_ASSIGN(GptqHessian hessian, PrepareGptqHessian(gram, n, options));
    for (int j = 0; j < n; ++j) ASSERT_EQ(hessian.dead[j], j == dead ? 1 : 0) << j;
    ASSERT_OK_AND_ASSIGN(W2Matrix m, QuantizeW2Gptq(w, {c.dim, n, 32, false}, hessian, {}, nullptr));
    std::vector<float> row(n);
    for (int r = 0; r < c.dim; ++r) {
      DequantizeW2Row(m.view(), r, row);
      const float scale = Fp16ToFloat(m.scales[W2ParamIndex(r, dead / 32, m.shape.groups())]);
      ASSERT_LE(std::abs(row[dead]), scale) << "act_order " << act_order << " row " << r;
    }
  }
}

// Sequential calibration: layer l is calibrated on the model cut after layer l whose earlier
// layers are the quantized ones (dequantized); layer 0 sees the fp32 model either way.
TEST_F(QuantizePipelineTest, SequentialCalibrationSeesTheQuantizedLayersBefore) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const LlamaConfig& c = model_->config;
  QuantizeOptions plain;
  plain.group_size = 32;
  ASSERT_OK_AND_ASSIGN(PackedContents reference, QuantizeModel(*model_, plain, &stats, nullptr));
  QuantizeOptions sequential = plain;
  std::vector<int> seen;
  sequential.recalibrate = [&](const Model& prefix) -> absl::StatusOr<CalibrationStats> {
    const int layer = prefix.config.n_layers - 1;
    seen.push_back(layer);
    EXPECT_EQ(prefix.weights.layers.size(), static_cast<std::size_t>(layer) + 1);
    // Its earlier layers are the quantized ones. Layer 0 is quantized as without sequential
    // calibration, so the prefix of layer 1 holds `reference`'s layer 0, dequantized.
    if (layer == 1) {
      const TensorId down{TensorKind::kW2, 0};
      std::vector<float> row(c.hidden_dim);
      for (const auto& [id, m] : reference.linears) {
        if (id.layer != 0 || id.kind != TensorKind::kW2) continue;
        DequantizeW2Row(m.view(), 3, row);
        for (int j = 0; j < c.hidden_dim; ++j) EXPECT_EQ(prefix.Tensor(down)[3 * c.hidden_dim + j], row[j]) << j;
      }
    }
    EXPECT_NE(prefix.Tensor({TensorKind::kW1, layer}), nullptr);
    return Calibrate(prefix, lines_);
  };
  ASSERT_OK_AND_ASSIGN(PackedContents packed, QuantizeModel(*model_, sequential, &stats, nullptr));
  std::vector<int> expected;
  for (int l = 1; l < c.n_layers; ++l) expected.push_back(l);
  EXPECT_EQ(seen, expected);
  ASSERT_EQ(packed.linears.size(), reference.linears.size());
  bool later_differ = false;
  for (std::size_t i = 0; i < packed.linears.size(); ++i) {
    const auto& [id, m] = packed.linears[i];
    if (id.layer == 0) {
      EXPECT_EQ(m.codes, reference.linears[i].second.codes) << "layer 0 sees the fp32 model either way";
    } else {
      later_differ |= m.codes != reference.linears[i].second.codes;
    }
  }
  EXPECT_TRUE(later_differ);
}

// V is the upper Cholesky factor of the damped Hessian, V V^T = H + damping, and `damping` says
// what was added to each diagonal entry.
TEST_F(QuantizePipelineTest, GptqFactorIsTheDampedHessians) {
  ASSERT_OK_AND_ASSIGN(CalibrationStats stats, Calibrate(*model_, lines_));
  const InputStats& input = stats.For(2, TensorKind::kW2);
  const int n = input.cols;
  GptqOptions options;
  ASSERT_OK_AND_ASSIGN(GptqHessian hessian, PrepareGptqHessian(input.gram, n, options));
  std::vector<double> h(input.gram);
  double mean_diag = 0;
  for (int j = 0; j < n; ++j) mean_diag += h[j * n + j] / n;
  for (int j = 0; j < n; ++j) {
    const double damped = (h[j * n + j] == 0 ? 1.0 : h[j * n + j]) + options.damp * mean_diag;
    EXPECT_NEAR(hessian.damping[j], damped - h[j * n + j], 1e-6 * damped) << j;
    h[j * n + j] = damped;
  }
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < i; ++k) ASSERT_EQ(hessian.factor[i * n + k], 0.0) << "not upper triangular";
    ASSERT_GT(hessian.factor[i * n + i], 0.0);
  }
  double worst = 0, largest = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      double vvt = 0;  // (V V^T)[i][j]
      for (int k = std::max(i, j); k < n; ++k) vvt += double{hessian.factor[i * n + k]} * hessian.factor[j * n + k];
      worst = std::max(worst, std::fabs(vvt - h[i * n + j]));
      largest = std::max(largest, std::fabs(h[i * n + j]));
    }
  }
  EXPECT_LT(worst, 1e-5 * largest);  // float, as GPTQ's reference keeps it; a wrong factor is off by O(1)
}

TEST_F(QuantizePipelineTest, TheRotatedModelComputesTheSameFunction) {
  // stories260K's hidden width is 172 = 4 x 43: the down projection's input in blocks of 4.
  ASSERT_EQ(FfnHadamardBlock(model_->config), 4);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Model> rotated, RotateResidualStream(*model_, 7, 4));
  EXPECT_FALSE(rotated->config.shared_classifier);
  EXPECT_EQ(rotated->config.ffn_hadamard_block, 4);
  EXPECT_EQ(RotateResidualStream(*rotated, 7).status().code(), absl::StatusCode::kInvalidArgument);  // twice
  EXPECT_EQ(RotateResidualStream(*model_, 7, 8).status().code(), absl::StatusCode::kInvalidArgument);  // 8 ∤ 172
  const int dim = model_->config.dim;
  for (int j = 0; j < dim; ++j) EXPECT_EQ(rotated->weights.layers[0].rms_att[j], 1.0f);
  // The weights did change (a rotation, not a copy).
  EXPECT_NE(rotated->weights.layers[0].wq[0], model_->weights.layers[0].wq[0]);
  RunState a(model_->config, model_->config.max_seq_len), b(rotated->config, rotated->config.max_seq_len);
  const std::vector<int>& tokens = lines_[0];
  for (int pos = 0; pos < 40; ++pos) {
    const std::span<const float> want = Forward(*model_, a, tokens[pos], pos);
    const std::span<const float> got = Forward(*rotated, b, tokens[pos], pos);
    double diff = 0, norm = 0;
    for (std::size_t v = 0; v < want.size(); ++v) {
      diff += (got[v] - want[v]) * (got[v] - want[v]);
      norm += want[v] * want[v];
    }
    ASSERT_LT(std::sqrt(diff / norm), 1e-5) << "position " << pos;
  }
  // The CPU engine applies the online Hadamard too: its fp32 logits equal the original model's.
  CpuEngineOptions exact;
  exact.kv_precision = KvPrecision::kF32;
  ASSERT_OK_AND_ASSIGN(auto engine, CpuEngine::Create(EngineWeightsFromModel(*rotated), exact));
  RunState fresh(model_->config, model_->config.max_seq_len);
  auto seq = engine->NewSequence();
  std::vector<float> logits(model_->config.vocab_size);
  for (int pos = 0; pos < 20; ++pos) {
    ASSERT_OK(engine->Prefill(*seq, std::span<const int>(tokens).subspan(pos, 1), logits));
    const std::span<const float> want = Forward(*model_, fresh, tokens[pos], pos);
    for (std::size_t v = 0; v < want.size(); ++v) ASSERT_NEAR(logits[v], want[v], 1e-3 * (1 + std::fabs(want[v])));
  }
  // ...and so do many tokens in one step (the FFN's Hadamard runs in segments across threads).
  const std::size_t vocab = static_cast<std::size_t>(model_->config.vocab_size);
  std::vector<float> every(20 * vocab);
  ASSERT_OK(engine->PrefillEveryLogit(*seq, std::span<const int>(tokens).subspan(20, 20), every));
  for (int pos = 20; pos < 40; ++pos) {
    const std::span<const float> want = Forward(*model_, fresh, tokens[pos], pos);
    for (std::size_t v = 0; v < vocab; ++v) {
      ASSERT_NEAR(every[(pos - 20) * vocab + v], want[v], 1e-3 * (1 + std::fabs(want[v]))) << "position " << pos;
    }
  }
  // A width that is not a power of two is refused, not mangled.
  Model odd;
  odd.config = model_->config;
  odd.config.dim = 48;
  EXPECT_EQ(RotateResidualStream(odd, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace accllm
