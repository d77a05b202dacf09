// Fused CPU kernels of pquant (built on first use by pquant/kernels/__init__.py).
//
// Every function here computes *exactly* what the pure-torch path computes -- the same values
// and the same gradients, bit for bit -- only with fewer passes over memory and fewer autograd
// nodes; the one exception is the gradient of HGQ's bit parameters, a sum over many elements
// that the kernels accumulate in their own (thread-count independent) order, equal to float
// rounding. The pure-torch path stays the reference (and the fallback when these kernels are not
// available); tests compare the two.
//
//   quantize(x, spec)      fixed-point quantization of a constant saturating format, one pass;
//                          straight-through gradient (hardtanh semantics for scalar formats,
//                          clamp semantics for per-element formats); or the range split of
//                          per-channel / per-weight weights (identity gradient)
//   dense(x, w, b, mask, q_in, q_w, q_b, q_out, soft)
//                          q_out(addmm(q_b(b), q_in(x), q_w(w * mask)^T)) as one autograd node,
//                          with the backward of addmm written out as autograd computes it;
//                          with ``soft = (n_below, 1/temperature, clip)`` the mask is PDP's
//                          soft mask (scores, exact threshold and sigmoid computed here).
//   hgq_quantize(x, i_f, k, ...)
//                          an HGQ quantizer (learnable bits, saturating modes), optionally
//                          followed by relu: (values, widths)
//   hgq_dense(x, w, b, mask, (i_f, k) x 3, flags, soft)
//                          PQDense with HGQ quantizers as one node: (y, effective weight, EBOPs,
//                          widths...)
//   hgq_loss(ebops, bits, beta, gamma)
//                          the HGQ loss term beta * EBOPs + gamma * mean widths as one node

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/ExpandUtils.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <vector>

// Hot loops get an AVX2 clone next to the baseline one (picked at load time by the CPU), where
// the toolchain supports function multi-versioning; elsewhere they are compiled once.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define PQ_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PQ_VECTOR_CLONES
#endif

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Order of pquant.kernels.ROUND_MODES.
enum Round : int { TRN = 0, RND = 1, RND_CONV = 2, TRN_ZERO = 3, RND_ZERO = 4, RND_MIN_INF = 5, RND_INF = 6 };

struct FixedSpec {
  // Scalar format: clip to [below, above] (one float outside the representable range, so the
  // gradient passes exactly on [lo, hi]), codes = round(v * scale), optional code clip, * inv.
  double below = 0, above = 0, scale = 1, inv = 1, code_lo = 0, code_hi = 0;
  bool code_clip = false;
  int mode = RND;
  // Per-element format (tensors of the quantized tensor's shape, contiguous float32): clamp to
  // [lo, hi] (inclusive), codes = round(v * scale), * inv.
  Tensor lo, hi, scale_t, inv_t;
  // Range split (pquant.quant.adaptive.RangeSplitQuantizer): per group (row when per_channel and
  // the tensor has 2+ dims, else per element) f = b - min(e, b) with 2**(e-1) <= max|x| < 2**e,
  // codes = round(x * 2**f) clamped to [code_lo, code_hi], times 2**-f; identity gradient.
  bool split = false, split_rows = false;
  int64_t magnitude_bits = 0;
  bool per_element() const { return lo.defined(); }
};

// RND exactly: floor(z) + (z - floor(z) >= 1/2). ``floor(z + 0.5f)`` is not exact (z just below
// a tie, or above 2**23, makes the sum round up); the fraction may round only for small negative
// z, and never across 1/2. The other nearest modes reduce to it by symmetry, as in the torch path.
inline __attribute__((always_inline)) float round_half_up(float z) {
  const float low = std::floor(z);
  return low + ((z - low) >= 0.5f ? 1.f : 0.f);
}

template <int M>
inline __attribute__((always_inline)) float round_code(float z) {
  if constexpr (M == TRN) return std::floor(z);
  else if constexpr (M == RND) return round_half_up(z);
  else if constexpr (M == RND_CONV) return std::nearbyint(z);
  else if constexpr (M == TRN_ZERO) return std::trunc(z);
  else if constexpr (M == RND_MIN_INF) return -round_half_up(-z);
  else if constexpr (M == RND_ZERO) return std::copysign(-round_half_up(-std::fabs(z)), z);
  else return std::copysign(round_half_up(std::fabs(z)), z);
}

// The code of ``v`` on the grid of ``scale`` = 2**f. With f < 0 the product of a tiny negative
// ``v`` (a denormal) can underflow to -0, whose floor is 0: TRN's code of any negative value is
// at most -1. (The nearest modes round an underflowing product to 0 anyway.)
template <int M>
inline __attribute__((always_inline)) float code_of(float v, float scale) {
  const float c = round_code<M>(v * scale);
  if constexpr (M == TRN) return (v < 0.f && c == 0.f) ? -1.f : c;
  else return c;
}

// ``FN<mode>(args...)`` for a run-time rounding mode (returns what FN returns).
#define PQ_ROUND_DISPATCH(mode, FN, ...)                          \
  switch (mode) {                                                  \
    case TRN: return FN<TRN>(__VA_ARGS__);                         \
    case RND: return FN<RND>(__VA_ARGS__);                         \
    case RND_CONV: return FN<RND_CONV>(__VA_ARGS__);               \
    case TRN_ZERO: return FN<TRN_ZERO>(__VA_ARGS__);               \
    case RND_ZERO: return FN<RND_ZERO>(__VA_ARGS__);               \
    case RND_MIN_INF: return FN<RND_MIN_INF>(__VA_ARGS__);         \
    default: return FN<RND_INF>(__VA_ARGS__);                      \
  }

struct ScalarArgs {
  float below, above, scale, inv, clo, chi;
};

template <int M, bool CC>
PQ_VECTOR_CLONES
void scalar_loop(const float* __restrict x, float* __restrict y, int64_t n, ScalarArgs a) {
  for (int64_t j = 0; j < n; ++j) {
    float v = x[j];
    v = v < a.below ? a.below : v;
    v = v > a.above ? a.above : v;
    float z = code_of<M>(v, a.scale);
    if constexpr (CC) {
      z = z < a.clo ? a.clo : z;
      z = z > a.chi ? a.chi : z;
    }
    y[j] = z * a.inv;
  }
}

template <int M>
PQ_VECTOR_CLONES
void element_loop(const float* __restrict x, float* __restrict y, int64_t n, const float* __restrict lo,
                  const float* __restrict hi, const float* __restrict scale, const float* __restrict inv) {
  for (int64_t j = 0; j < n; ++j) {
    float v = x[j];
    v = v < lo[j] ? lo[j] : v;
    v = v > hi[j] ? hi[j] : v;
    y[j] = code_of<M>(v, scale[j]) * inv[j];
  }
}

// Range split of n values in groups of ``inner`` consecutive elements.
template <int M>
PQ_VECTOR_CLONES
void split_loop(const float* __restrict x, float* __restrict y, int64_t groups, int64_t inner,
                int64_t bits, float clo, float chi) {
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x + g * inner;
    float* yg = y + g * inner;
    float amax = 0.f;
    for (int64_t j = 0; j < inner; ++j) amax = std::max(amax, std::fabs(xg[j]));
    int e = 0;
    std::frexp(amax, &e);
    const int f = static_cast<int>(bits - std::min<int64_t>(e, bits));
    const float scale = std::ldexp(1.0f, f), inv = std::ldexp(1.0f, -f);
    for (int64_t j = 0; j < inner; ++j) {
      float z = code_of<M>(xg[j], scale);
      z = z < clo ? clo : z;
      z = z > chi ? chi : z;
      yg[j] = z * inv;
    }
  }
}

template <int M>
void dispatch_scalar(const float* x, float* y, int64_t n, const ScalarArgs& a, bool cc) {
  if (cc) scalar_loop<M, true>(x, y, n, a);
  else scalar_loop<M, false>(x, y, n, a);
}

constexpr int64_t kGrain = 1 << 15;

void check_input(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "pquant kernels take float32 CPU tensors");
}

// y = q(x) without autograd.
Tensor quantize_values(const Tensor& x_in, const FixedSpec& s) {
  check_input(x_in);
  Tensor x = x_in.contiguous();
  Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  int64_t n = x.numel();
  if (s.split) {
    const int64_t groups = (s.split_rows && x.dim() > 1) ? x.size(0) : n;
    const int64_t inner = groups == 0 ? 0 : n / groups;
    const float clo = static_cast<float>(s.code_lo), chi = static_cast<float>(s.code_hi);
    const int64_t bits = s.magnitude_bits;
    at::parallel_for(0, groups, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)),
                     [&](int64_t b, int64_t e) {
      const float* xb = xp + b * inner;
      float* yb = yp + b * inner;
      const int64_t m = e - b;
      PQ_ROUND_DISPATCH(s.mode, split_loop, xb, yb, m, inner, bits, clo, chi)
    });
    return y;
  }
  if (s.per_element()) {
    TORCH_CHECK(s.lo.numel() == n, "per-element format of ", s.lo.numel(), " elements for a tensor of ", n);
    const float *lo = s.lo.data_ptr<float>(), *hi = s.hi.data_ptr<float>();
    const float *sc = s.scale_t.data_ptr<float>(), *iv = s.inv_t.data_ptr<float>();
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      const int64_t m = e - b;
      PQ_ROUND_DISPATCH(s.mode, element_loop, xp + b, yp + b, m, lo + b, hi + b, sc + b, iv + b)
    });
    return y;
  }
  ScalarArgs a{static_cast<float>(s.below), static_cast<float>(s.above), static_cast<float>(s.scale),
               static_cast<float>(s.inv), static_cast<float>(s.code_lo), static_cast<float>(s.code_hi)};
  const bool cc = s.code_clip;
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    const int64_t m = e - b;
    PQ_ROUND_DISPATCH(s.mode, dispatch_scalar, xp + b, yp + b, m, a, cc)
  });
  return y;
}

// What the backward of a quantizer needs: the bounds (scalar) or the bound tensors.
struct GradSpec {
  bool active = false;
  double below = 0, above = 0;
  Tensor lo, hi;
};

GradSpec grad_spec(const FixedSpec* s) {
  GradSpec g;
  if (s == nullptr || s->split) return g;  // range split: identity gradient
  g.active = true;
  g.below = s->below;
  g.above = s->above;
  g.lo = s->lo;
  g.hi = s->hi;
  return g;
}

// Straight-through gradient of a quantizer with input x.
Tensor quantize_grad(const Tensor& grad, const Tensor& x, const GradSpec& s) {
  if (!s.active) return grad;
  if (!s.lo.defined()) return at::hardtanh_backward(grad, x, s.below, s.above);
  // clamp(x, lo, hi): where(lo <= x <= hi, grad, 0)
  Tensor g = grad.contiguous(), xc = x.contiguous();
  Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  const float *gp = g.data_ptr<float>(), *xp = xc.data_ptr<float>();
  const float *lo = s.lo.data_ptr<float>(), *hi = s.hi.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, g.numel(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) op[j] = (xp[j] >= lo[j] && xp[j] <= hi[j]) ? gp[j] : 0.f;
  });
  return out;
}

void save_grad_spec(AutogradContext* ctx, const std::string& key, const GradSpec& s) {
  if (!s.active) return;
  ctx->saved_data[key + "_b"] = s.below;
  ctx->saved_data[key + "_a"] = s.above;
  if (s.lo.defined()) {
    ctx->saved_data[key + "_lo"] = s.lo;
    ctx->saved_data[key + "_hi"] = s.hi;
  }
}

GradSpec load_grad_spec(AutogradContext* ctx, const std::string& key) {
  GradSpec s;
  auto it = ctx->saved_data.find(key + "_b");
  if (it == ctx->saved_data.end()) return s;
  s.active = true;
  s.below = it->second.toDouble();
  s.above = ctx->saved_data[key + "_a"].toDouble();
  auto lo = ctx->saved_data.find(key + "_lo");
  if (lo != ctx->saved_data.end()) {
    s.lo = lo->second.toTensor();
    s.hi = ctx->saved_data[key + "_hi"].toTensor();
  }
  return s;
}

// ------------------------------------------------------------------------------------ quantize
struct QuantizeFn : public torch::autograd::Function<QuantizeFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const FixedSpec* spec) {
    ctx->save_for_backward({x});
    save_grad_spec(ctx, "q", grad_spec(spec));
    return quantize_values(x, *spec);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    Tensor x = ctx->get_saved_variables()[0];
    return {quantize_grad(grads[0], x, load_grad_spec(ctx, "q")), Tensor()};
  }
};

Tensor quantize(const Tensor& x, const FixedSpec& spec) {
  if (at::GradMode::is_enabled() && x.requires_grad()) return QuantizeFn::apply(x, &spec);
  return quantize_values(x, spec);
}

// --------------------------------------------------------------------------------------- dense
// Mirrors torch's mm_mat1_backward / mm_mat2_backward (the layout choices decide the BLAS call,
// so they are reproduced to get the same bits).
Tensor mat1_grad(const Tensor& grad, const Tensor& mat1, const Tensor& mat2) {
  if (mat1.stride(0) == 1 && mat1.stride(1) == mat1.size(0)) return mat2.mm(grad.t()).t();
  return grad.mm(mat2.t());
}

Tensor mat2_grad(const Tensor& grad, const Tensor& mat1, const Tensor& mat2) {
  if (mat2.stride(0) == 1 && mat2.stride(1) == mat2.size(0)) return grad.t().mm(mat1).t();
  return mat1.t().mm(grad);
}

// PDP's soft mask sigmoid(clamp((score - threshold) * inv_tau, -clip, clip)) with score = w**2
// and the threshold midway between the n_below-th and the (n_below + 1)-th smallest score
// (pquant.pruning.pdp._SoftMaskedWeight and pquant.pruning.select.midpoint_threshold).
struct SoftMask {
  int64_t n_below;
  double inv_tau, clip;
};

uint32_t float_to_bits(float f) {  // (memcpy: no strict-aliasing read; compiles to a move)
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// The k-th smallest (0-based) of n keys, where the keys are the bit patterns of n non-negative
// floats (their order is the float order; NaNs sort last, as in numpy). Exact: radix select over
// 11/11/10-bit digits. Also returns the (k+1)-th smallest when it is found on the way.
struct Selected {
  uint32_t kth;
  bool has_next;
  uint32_t next;
};

Selected radix_select(const float* values, int64_t n, int64_t k) {
  static constexpr int kShift[3] = {21, 10, 0};
  static constexpr int kWidth[3] = {11, 11, 10};
  uint32_t prefix = 0, fixed = 0;
  int64_t rank = k;
  int64_t hist[2048];
  Selected out{0, false, 0};
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = kShift[pass];
    const uint32_t digit_mask = (1u << kWidth[pass]) - 1u;
    std::fill(hist, hist + digit_mask + 1, 0);
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t key = float_to_bits(values[j]);
      if ((key & fixed) == prefix) ++hist[(key >> shift) & digit_mask];
    }
    uint32_t d = 0;
    int64_t below = 0;
    while (below + hist[d] <= rank) below += hist[d++];
    rank -= below;
    prefix |= d << shift;
    fixed |= digit_mask << shift;
    if (pass == 2) {
      out.kth = prefix;
      if (rank + 1 < hist[d]) {  // ties: the next one is the same value
        out.has_next = true;
        out.next = prefix;
      } else {
        for (uint32_t e = d + 1; e <= digit_mask; ++e) {
          if (hist[e] > 0) {
            out.has_next = true;
            out.next = (prefix & ~digit_mask) | e;
            break;
          }
        }
      }
    }
  }
  return out;
}

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// pquant.pruning.select.midpoint_threshold of n non-negative float32 scores: midway between the
// n_below-th and the (n_below + 1)-th smallest, in float32 arithmetic as numpy does it.
float midpoint_threshold_of(const float* scores, int64_t n, int64_t n_below) {
  Selected sel = radix_select(scores, n, n_below - 1);
  if (!sel.has_next) sel.next = radix_select(scores, n, n_below).kth;
  const float low = bits_to_float(sel.kth), high = bits_to_float(sel.next);
  return high - (high - low) * 0.5f;
}

// (scores, soft mask) for PDP; scores = w * w, mask as described above.
std::pair<Tensor, Tensor> pdp_soft_mask(const Tensor& w_in, const SoftMask& soft) {
  Tensor w = w_in.contiguous();
  const int64_t n = w.numel();
  TORCH_CHECK(soft.n_below >= 1 && soft.n_below < n, "pdp soft mask: n_below out of range");
  Tensor scores = at::empty_like(w, at::MemoryFormat::Contiguous);
  const float* wp = w.data_ptr<float>();
  float* sp = scores.data_ptr<float>();
  for (int64_t j = 0; j < n; ++j) sp[j] = wp[j] * wp[j];
  const float threshold = midpoint_threshold_of(sp, n, soft.n_below);
  const float inv_tau = static_cast<float>(soft.inv_tau);
  const float clip = static_cast<float>(soft.clip);
  Tensor mask = at::empty_like(scores, at::MemoryFormat::Contiguous);
  float* mp = mask.data_ptr<float>();
  for (int64_t j = 0; j < n; ++j) {
    float v = (sp[j] - threshold) * inv_tau;
    v = v < -clip ? -clip : v;
    mp[j] = v > clip ? clip : v;
  }
  mask.sigmoid_();
  return {scores, mask};
}

// PDP's soft-mask gradient g * (m + (2 / tau) * score * (m - m * m)), in the torch path's
// order of float32 operations (pquant.pruning.pdp._SoftMaskedWeight.backward), one pass.
PQ_VECTOR_CLONES
void pdp_soft_grad_loop(const float* __restrict g, const float* __restrict m, const float* __restrict s, float c,
                        int64_t n, float* __restrict out) {
  for (int64_t j = 0; j < n; ++j) {
    const float mm = m[j] * m[j];
    const float slope = (m[j] - mm) * s[j];
    out[j] = g[j] * (slope * c + m[j]);
  }
}

Tensor pdp_soft_grad(const Tensor& grad, const Tensor& mask, const Tensor& scores, double inv_tau) {
  const Tensor g = grad.contiguous(), m = mask.contiguous(), s = scores.contiguous();
  TORCH_CHECK(g.numel() == m.numel() && m.numel() == s.numel(), "pdp soft gradient: shapes differ");
  Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  pdp_soft_grad_loop(g.data_ptr<float>(), m.data_ptr<float>(), s.data_ptr<float>(), static_cast<float>(2.0 * inv_tau),
                     g.numel(), out.data_ptr<float>());
  return out.view(grad.sizes());
}

// w * mask, or with ``soft`` w * PDP's soft mask: then ``mask`` receives the scores and
// ``smask`` the soft mask (both saved for the backward, see pdp_soft_grad).
Tensor masked_weight(AutogradContext* ctx, const Tensor& w, Tensor& mask, Tensor& smask,
                     const std::optional<SoftMask>& soft) {
  if (!soft) return mask.defined() ? w * mask : w;
  std::tie(mask, smask) = pdp_soft_mask(w, *soft);
  ctx->saved_data["inv_tau"] = soft->inv_tau;
  return w * smask;
}

struct DenseFn : public torch::autograd::Function<DenseFn> {
  // Optional inputs are std::optional (undefined tensors cannot be autograd inputs).
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w,
                        const std::optional<Tensor>& b_opt, const std::optional<Tensor>& mask_opt,
                        const FixedSpec* qin, const FixedSpec* qw, const FixedSpec* qb,
                        const FixedSpec* qout, const std::optional<SoftMask>& soft) {
    Tensor b = b_opt.has_value() ? *b_opt : Tensor();
    Tensor mask = mask_opt.has_value() ? *mask_opt : Tensor();
    Tensor xq = qin ? quantize_values(x, *qin) : x;
    Tensor smask;
    const Tensor wm = masked_weight(ctx, w, mask, smask, soft);
    Tensor wq = qw ? quantize_values(wm, *qw) : wm;
    Tensor bq = (b.defined() && qb) ? quantize_values(b, *qb) : b;
    Tensor wt = wq.t();
    Tensor y = bq.defined() ? at::addmm(bq, xq, wt) : at::mm(xq, wt);
    Tensor out = qout ? quantize_values(y, *qout) : y;
    ctx->save_for_backward({qin ? x : Tensor(), xq, qw ? wm : Tensor(), mask, wq, qb ? b : Tensor(),
                            qout ? y : Tensor(), smask});
    save_grad_spec(ctx, "in", grad_spec(qin));
    save_grad_spec(ctx, "w", grad_spec(qw));
    save_grad_spec(ctx, "b", grad_spec(qb));
    save_grad_spec(ctx, "out", grad_spec(qout));
    ctx->saved_data["has_bias"] = b.defined();
    if (b.defined()) ctx->saved_data["bias_sizes"] = b.sizes().vec();
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &xq = saved[1], &wm = saved[2], &mask = saved[3], &wq = saved[4],
                 &b = saved[5], &y = saved[6], &smask = saved[7];
    Tensor gy = quantize_grad(grads[0], y, load_grad_spec(ctx, "out"));
    Tensor gx, gw, gb;
    Tensor wt = wq.t();
    if (ctx->needs_input_grad(0)) {
      gx = mat1_grad(gy, xq, wt);
      gx = quantize_grad(gx, x, load_grad_spec(ctx, "in"));
    }
    if (ctx->needs_input_grad(1)) {
      gw = mat2_grad(gy, xq, wt).t();
      gw = quantize_grad(gw, wm, load_grad_spec(ctx, "w"));
      if (smask.defined()) {
        // d/dw [w * sigmoid((w**2 - t) / tau)] = m + (2 / tau) * w**2 * m * (1 - m)
        gw = pdp_soft_grad(gw, smask, mask, ctx->saved_data["inv_tau"].toDouble());
      } else if (mask.defined()) {
        gw = gw * mask;
      }
    }
    // needs_input_grad counts tensor inputs only: x, w, then the bias when there is one
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      auto sizes = ctx->saved_data["bias_sizes"].toIntVector();
      gb = at::sum_to(gy, sizes);
      gb = quantize_grad(gb, b, load_grad_spec(ctx, "b"));
    }
    return {gx, gw, gb, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor dense(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b,
             const std::optional<Tensor>& mask, const FixedSpec* qin, const FixedSpec* qw,
             const FixedSpec* qb, const FixedSpec* qout,
             std::optional<std::tuple<int64_t, double, double>> soft) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2, "pquant dense kernel: 2-D input and weight");
  check_input(x);
  check_input(w);
  std::optional<SoftMask> sm;
  if (soft) {
    TORCH_CHECK(!mask.has_value(), "pquant dense kernel: a mask or a soft mask, not both");
    sm = SoftMask{std::get<0>(*soft), std::get<1>(*soft), std::get<2>(*soft)};
  }
  return DenseFn::apply(x, w, b, mask, qin, qw, qb, qout, sm);
}

// --------------------------------------------------------------------------------------- HGQ
// pquant.quant.hgq._make_plan + _HGQQuantize for the saturating modes: the plan (one loop over the
// bit parameters) and the quantization (one pass over x, the parameters broadcast). The backward
// is one pass over x that also sums the gradient terms onto the bit parameters (float32 over
// blocks of 8 rows, float64 beyond, in an order that does not depend on the number of threads),
// then one loop over the parameters that combines the sums -- the torch path sums in float64,
// so both agree to float rounding.
// Values and input gradients are bit for bit those of the torch path.
// With ``relu`` the output is relu(q(x)) (PQActivation's relu after its input quantizer).
// The plan lives in one (9, n) buffer (rows below) plus the widths, which are an output.
enum PlanRow : int { LO = 0, HI, SCALE, STEP, ACTIVE, GI_O, GI_S, GF_O, GF_S, PLAN_ROWS };

struct HGQPlan {
  Tensor buf, bits;
  std::vector<int64_t> shape;
  int64_t n = 0;
  const float* row(int r) const { return buf.data_ptr<float>() + r * n; }
};

// Round half to even without touching the floating-point environment (std::nearbyint is a libm
// call on baseline x86-64): below 2**23 the sum with 2**23 has an ulp of 1, and larger floats
// are integers already.
inline float rne(float v) {
  const float a = std::fabs(v);
  const float r = (a + 8388608.f) - 8388608.f;
  return a < 8388608.f ? std::copysign(r, v) : v;
}

// 2**e for an integer-valued float e in [-126, 127] (what torch.exp2 returns), from the bits.
inline float pow2i(float e) {
  const float c = e < -126.f ? -126.f : (e > 127.f ? 127.f : e);
  return bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(c) + 127) << 23);
}

// The plan of elements [0, n); returns the number of elements whose exponents left
// [-126, 127] (the caller redoes the grid values of those with std::exp2).
template <bool LEARN_I, bool SYM>
PQ_VECTOR_CLONES
int hgq_plan_loop(const float* __restrict ip, const float* __restrict fp, const float* __restrict kp, int64_t n,
                  float* __restrict lo, float* __restrict hi, float* __restrict sc, float* __restrict st,
                  float* __restrict act, float* __restrict gio, float* __restrict gis, float* __restrict gfo,
                  float* __restrict gfs, float* __restrict bits) {
  const float half_ln2 = static_cast<float>(0.5 * std::log(2.0));
  int bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float f = rne(fp[j]);
    const float i = LEARN_I ? rne(ip[j]) : ip[j];
    const float neg_f = -f;
    const float i_eff = i > neg_f ? i : (i != i ? i : neg_f);  // torch.maximum (NaN wins)
    const float width = i_eff + f;
    bad += (f >= -126.f && f <= 126.f && i_eff >= -126.f && i_eff <= 127.f) ? 0 : 1;
    const float step = pow2i(neg_f), scale = pow2i(f), pow_i = pow2i(i_eff);
    const float kk = kp[j];
    const float h = pow_i - step;
    // SAT_SYM is symmetric except in a 1-bit signed format (h == 0), where ap_fixed saturates
    // to -2**i as SAT does
    const bool sym = SYM && h > 0.f;
    hi[j] = h;
    lo[j] = -kk * (sym ? h : pow_i);
    sc[j] = scale;
    st[j] = step;
    bits[j] = width + kk;
    act[j] = width > 0.f ? 1.f : 0.f;
    const float half_i = half_ln2 * pow_i;
    gio[j] = half_i * (1.f - kk);
    gis[j] = half_i * (1.f + kk);
    const float half_f = half_ln2 * step;
    gfo[j] = sym ? half_f * (1.f - kk) : half_f;
    gfs[j] = sym ? half_f * (1.f + kk) : half_f;
  }
  return bad;
}

HGQPlan hgq_plan(const Tensor& i_raw, const Tensor& f_raw, const Tensor& k, bool learn_i, bool sym) {
  Tensor ic = i_raw.contiguous(), fc = f_raw.contiguous(), kc = k.contiguous();
  const int64_t n = fc.numel();
  TORCH_CHECK(ic.numel() == n && kc.numel() == n, "hgq: i, f and k must have the same shape");
  HGQPlan p;
  p.n = n;
  p.shape = f_raw.sizes().vec();
  p.buf = at::empty({PLAN_ROWS, n}, fc.options());
  p.bits = at::empty_like(fc, at::MemoryFormat::Contiguous);
  const float *ip = ic.data_ptr<float>(), *fp = fc.data_ptr<float>(), *kp = kc.data_ptr<float>();
  float *base = p.buf.data_ptr<float>(), *bits = p.bits.data_ptr<float>();
  float *lo = base + LO * n, *hi = base + HI * n, *sc = base + SCALE * n, *st = base + STEP * n,
        *act = base + ACTIVE * n, *gio = base + GI_O * n, *gis = base + GI_S * n, *gfo = base + GF_O * n,
        *gfs = base + GF_S * n;
  const auto loop = learn_i ? (sym ? hgq_plan_loop<true, true> : hgq_plan_loop<true, false>)
                            : (sym ? hgq_plan_loop<false, true> : hgq_plan_loop<false, false>);
  if (loop(ip, fp, kp, n, lo, hi, sc, st, act, gio, gis, gfo, gfs, bits) != 0) {
    // huge or NaN exponents: redo the grid values with std::exp2 (as torch.exp2 does)
    const float half_ln2 = static_cast<float>(0.5 * std::log(2.0));
    for (int64_t j = 0; j < n; ++j) {
      const float f = rne(fp[j]), i = learn_i ? rne(ip[j]) : ip[j], neg_f = -f;
      const float i_eff = i > neg_f ? i : (std::isnan(i) ? i : neg_f);
      const float step = std::exp2(neg_f), pow_i = std::exp2(i_eff), kk = kp[j];
      hi[j] = pow_i - step;
      const bool sym_j = sym && hi[j] > 0.f;  // (see hgq_plan_loop)
      lo[j] = -kk * (sym_j ? hi[j] : pow_i);
      sc[j] = std::exp2(f);
      st[j] = step;
      gio[j] = half_ln2 * pow_i * (1.f - kk);
      gis[j] = half_ln2 * pow_i * (1.f + kk);
      gfo[j] = sym_j ? half_ln2 * step * (1.f - kk) : half_ln2 * step;
      gfs[j] = sym_j ? half_ln2 * step * (1.f + kk) : half_ln2 * step;
    }
  }
  return p;
}

// x seen as (A, P, I): the bit parameters vary over the middle block of dimensions and are
// constant over the outer (A) and inner (I) ones -- per tensor (P = 1), per weight (A = I = 1),
// per feature (I = 1), per channel (A = 1) and per conv feature (C, 1, 1) all have this form.
struct Blocks {
  int64_t A = 1, P = 1, I = 1;
};

Blocks blocks_of(const Tensor& x, const std::vector<int64_t>& pshape) {
  const int64_t nd = x.dim(), pd = static_cast<int64_t>(pshape.size());
  TORCH_CHECK(pd <= nd, "hgq: bit parameters of ", pd, " dims for a tensor of ", nd);
  std::vector<int64_t> ps(nd, 1);
  for (int64_t d = 0; d < pd; ++d) ps[nd - pd + d] = pshape[d];
  int64_t first = -1, last = -1;
  for (int64_t d = 0; d < nd; ++d) {
    TORCH_CHECK(ps[d] == 1 || ps[d] == x.size(d), "hgq: bit parameters of shape ", at::IntArrayRef(pshape),
                " do not broadcast to ", x.sizes());
    if (ps[d] != 1) {
      if (first < 0) first = d;
      last = d;
    }
  }
  Blocks b;
  if (first < 0) {  // one parameter: a single run of every element
    b.I = x.numel();
    return b;
  }
  for (int64_t d = first; d <= last; ++d)
    TORCH_CHECK(ps[d] == x.size(d), "hgq: bit parameters must vary over one block of dimensions");
  for (int64_t d = 0; d < first; ++d) b.A *= x.size(d);
  for (int64_t d = first; d <= last; ++d) b.P *= x.size(d);
  for (int64_t d = last + 1; d < nd; ++d) b.I *= x.size(d);
  return b;
}

template <int M, bool RELU>
inline __attribute__((always_inline)) float hgq_q(float v, float lo, float hi, float sc, float st) {
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  const float q = code_of<M>(v, sc) * st;
  if constexpr (RELU) return q < 0.f ? 0.f : q;  // torch.relu (NaN stays NaN)
  return q;
}

template <int M, bool RELU>
PQ_VECTOR_CLONES
void hgq_fwd_rows(const float* __restrict x, float* __restrict q, int64_t n, const float* __restrict lo,
                  const float* __restrict hi, const float* __restrict sc, const float* __restrict st) {
  for (int64_t j = 0; j < n; ++j) q[j] = hgq_q<M, RELU>(x[j], lo[j], hi[j], sc[j], st[j]);
}

template <int M, bool RELU>
PQ_VECTOR_CLONES
void hgq_fwd_const(const float* __restrict x, float* __restrict q, int64_t n, float lo, float hi, float sc, float st) {
  for (int64_t j = 0; j < n; ++j) q[j] = hgq_q<M, RELU>(x[j], lo, hi, sc, st);
}

// Rows of x (A) per task: about kGrain elements.
inline int64_t rows_per_task(const Blocks& b) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(b.P * b.I, 1)); }
// The HGQ passes use a second thread only from kHGQParallel elements on: below, waking it
// costs more than it saves (and the summation order never depends on it).
constexpr int64_t kHGQParallel = 1 << 17;
inline int64_t tasks_grain(int64_t task_elems) {
  return std::max<int64_t>(1, kHGQParallel / std::max<int64_t>(task_elems, 1));
}

template <int M, bool RELU>
Tensor hgq_forward_values(const Tensor& x_in, const HGQPlan& p) {
  Tensor x = x_in.contiguous();
  Tensor q = at::empty_like(x, at::MemoryFormat::Contiguous);
  const Blocks b = blocks_of(x, p.shape);
  const float *xp = x.data_ptr<float>(), *lo = p.row(LO), *hi = p.row(HI), *sc = p.row(SCALE), *st = p.row(STEP);
  float* qp = q.data_ptr<float>();
  const int64_t P = b.P, I = b.I;
  if (b.A == 1 && P == 1) {  // one parameter
    at::parallel_for(0, I, kHGQParallel, [&](int64_t e0, int64_t e1) {
      hgq_fwd_const<M, RELU>(xp + e0, qp + e0, e1 - e0, lo[0], hi[0], sc[0], st[0]);
    });
    return q;
  }
  at::parallel_for(0, b.A, tasks_grain(P * I), [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a) {
      const float* xa = xp + a * P * I;
      float* qa = qp + a * P * I;
      if (I == 1) {
        hgq_fwd_rows<M, RELU>(xa, qa, P, lo, hi, sc, st);
      } else {
        for (int64_t j = 0; j < P; ++j) hgq_fwd_const<M, RELU>(xa + j * I, qa + j * I, I, lo[j], hi[j], sc[j], st[j]);
      }
    }
  });
  return q;
}

// Per element: gx = g - g * outside, ef = g * (q - xc), eo = g * outside, es = g * side (the
// torch path's expressions); with RELU the incoming gradient is first zeroed where relu(q) = 0.
template <int M, bool RELU>
inline __attribute__((always_inline)) void hgq_terms_at(float gv, float v, float lo, float hi, float sc, float st,
                                                        float& gx, float& ef, float& eo, float& es) {
  float xc = v < lo ? lo : v;
  xc = xc > hi ? hi : xc;
  const float d = v - xc;
  const float side = static_cast<float>((d > 0.f) - (d < 0.f));
  const float outside = std::fabs(side);
  const float q = code_of<M>(xc, sc) * st;
  if constexpr (RELU) gv = q <= 0.f ? 0.f : gv;  // threshold_backward(grad, relu(q), 0)
  gx = gv + (-1.f * gv) * outside;
  ef = gv * (q - xc);
  eo = gv * outside;
  es = gv * side;
}

// One row of P elements, element j on parameter j: gx, and the terms added to the sums (T: float
// for the per-block partial sums of several rows, double for the running sums).
template <int M, bool RELU, typename T>
PQ_VECTOR_CLONES
void hgq_bwd_row(const float* __restrict g, const float* __restrict x, int64_t n, const float* __restrict lo,
                 const float* __restrict hi, const float* __restrict sc, const float* __restrict st,
                 float* __restrict gx, T* __restrict sf, T* __restrict so, T* __restrict ss) {
  for (int64_t j = 0; j < n; ++j) {
    float gxv, ef, eo, es;
    hgq_terms_at<M, RELU>(g[j], x[j], lo[j], hi[j], sc[j], st[j], gxv, ef, eo, es);
    gx[j] = gxv;
    sf[j] += static_cast<T>(ef);
    so[j] += static_cast<T>(eo);
    ss[j] += static_cast<T>(es);
  }
}

// d += f; f = 0 (a block's float partial sums into the float64 sums).
PQ_VECTOR_CLONES
void flush_block(float* __restrict f, double* __restrict d, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    d[j] += static_cast<double>(f[j]);
    f[j] = 0.f;
  }
}

// Rows summed in float32 before joining the float64 sums.
constexpr int64_t kRowBlock = 8;

// A run of n elements on one parameter: gx, and the terms summed in 8 lanes (then in lane order).
constexpr int kLanes = 8;
template <int M, bool RELU>
PQ_VECTOR_CLONES
void hgq_bwd_run(const float* __restrict g, const float* __restrict x, int64_t n, float lo, float hi, float sc,
                 float st, float* __restrict gx, double* __restrict sums /* f, o, s */) {
  double lf[kLanes] = {}, lo_[kLanes] = {}, ls[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      float gxv, ef, eo, es;
      hgq_terms_at<M, RELU>(g[j + l], x[j + l], lo, hi, sc, st, gxv, ef, eo, es);
      gx[j + l] = gxv;
      lf[l] += static_cast<double>(ef);
      lo_[l] += static_cast<double>(eo);
      ls[l] += static_cast<double>(es);
    }
  }
  for (int l = 0; j < n; ++j, ++l) {
    float gxv, ef, eo, es;
    hgq_terms_at<M, RELU>(g[j], x[j], lo, hi, sc, st, gxv, ef, eo, es);
    gx[j] = gxv;
    lf[l] += static_cast<double>(ef);
    lo_[l] += static_cast<double>(eo);
    ls[l] += static_cast<double>(es);
  }
  for (int l = 0; l < kLanes; ++l) {
    sums[0] += lf[l];
    sums[1] += lo_[l];
    sums[2] += ls[l];
  }
}

// gx (written to gx_out) and the float64 sums (3, P) of ef, eo, es over A and I. Tasks cover fixed
// ranges of rows (or, with one row, of parameters / of the single run), so the summation order
// is the same whatever the number of threads.
template <int M, bool RELU>
void hgq_backward_pass(const Tensor& g, const Tensor& x, const HGQPlan& p, float* gxp, double* sums) {
  const Blocks b = blocks_of(x, p.shape);
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>(), *lo = p.row(LO), *hi = p.row(HI),
              *sc = p.row(SCALE), *st = p.row(STEP);
  const int64_t A = b.A, P = b.P, I = b.I;
  double *sf = sums, *so = sums + P, *ss = sums + 2 * P;
  if (A == 1 && P == 1) {  // one parameter: fixed chunks of the run, partial sums added in order
    const int64_t chunks = std::max<int64_t>(1, (I + kGrain - 1) / kGrain);
    std::vector<double> part(3 * chunks, 0.0);
    at::parallel_for(0, chunks, tasks_grain(kGrain), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t e0 = c * kGrain, e1 = std::min(I, e0 + kGrain);
        hgq_bwd_run<M, RELU>(gp + e0, xp + e0, e1 - e0, lo[0], hi[0], sc[0], st[0], gxp + e0, part.data() + 3 * c);
      }
    });
    for (int64_t c = 0; c < chunks; ++c) {
      sf[0] += part[3 * c];
      so[0] += part[3 * c + 1];
      ss[0] += part[3 * c + 2];
    }
    return;
  }
  if (A == 1) {  // parameters own disjoint elements: split the parameters
    at::parallel_for(0, P, tasks_grain(I), [&](int64_t j0, int64_t j1) {
      if (I == 1) {
        hgq_bwd_row<M, RELU, double>(gp + j0, xp + j0, j1 - j0, lo + j0, hi + j0, sc + j0, st + j0, gxp + j0,
                                     sf + j0, so + j0, ss + j0);
        return;
      }
      for (int64_t j = j0; j < j1; ++j) {
        double s3[3] = {0.0, 0.0, 0.0};
        hgq_bwd_run<M, RELU>(gp + j * I, xp + j * I, I, lo[j], hi[j], sc[j], st[j], gxp + j * I, s3);
        sf[j] += s3[0];
        so[j] += s3[1];
        ss[j] += s3[2];
      }
    });
    return;
  }
  const int64_t rows = rows_per_task(b), tasks = (A + rows - 1) / rows;
  std::vector<double> part(static_cast<size_t>(tasks) * 3 * P, 0.0);
  at::parallel_for(0, tasks, tasks_grain(rows * P * I), [&](int64_t t0, int64_t t1) {
    std::vector<float> block(I == 1 ? 3 * P : 0, 0.f);
    for (int64_t t = t0; t < t1; ++t) {
      double *pf = part.data() + t * 3 * P, *po = pf + P, *ps = po + P;
      const int64_t a1 = std::min(A, (t + 1) * rows);
      for (int64_t a = t * rows; a < a1; ++a) {
        const int64_t base = a * P * I;
        if (I == 1) {
          float* bf = block.data();
          hgq_bwd_row<M, RELU, float>(gp + base, xp + base, P, lo, hi, sc, st, gxp + base, bf, bf + P, bf + 2 * P);
          if ((a - t * rows) % kRowBlock == kRowBlock - 1 || a == a1 - 1) flush_block(bf, pf, 3 * P);
          continue;
        }
        for (int64_t j = 0; j < P; ++j) {
          double s3[3] = {0.0, 0.0, 0.0};
          const int64_t e = base + j * I;
          hgq_bwd_run<M, RELU>(gp + e, xp + e, I, lo[j], hi[j], sc[j], st[j], gxp + e, s3);
          pf[j] += s3[0];
          po[j] += s3[1];
          ps[j] += s3[2];
        }
      }
    }
  });
  for (int64_t t = 0; t < tasks; ++t)
    for (int64_t j = 0; j < 3 * P; ++j) sums[j] += part[t * 3 * P + j];
}

template <int M>
Tensor hgq_values_relu(const Tensor& x, const HGQPlan& p, bool relu) {
  return relu ? hgq_forward_values<M, true>(x, p) : hgq_forward_values<M, false>(x, p);
}
Tensor hgq_values(const Tensor& x, const HGQPlan& p, int mode, bool relu) {
  PQ_ROUND_DISPATCH(mode, hgq_values_relu, x, p, relu)
}

template <int M>
void hgq_pass_relu(const Tensor& g, const Tensor& x, const HGQPlan& p, float* gx, double* sums, bool relu) {
  if (relu) hgq_backward_pass<M, true>(g, x, p, gx, sums);
  else hgq_backward_pass<M, false>(g, x, p, gx, sums);
}
void hgq_pass(const Tensor& g, const Tensor& x, const HGQPlan& p, int mode, float* gx, double* sums, bool relu) {
  PQ_ROUND_DISPATCH(mode, hgq_pass_relu, g, x, p, gx, sums, relu)
}

// Gradients of the bit parameters from the sums (S_f, S_o, S_s rounded to float32, as the torch
// path rounds its float64 sums): gi = GI_O S_o + GI_S S_s, gf = -ln2 S_f + GF_O S_o + GF_S S_s,
// plus grad_bits * active for both (widths k + relu(i + f), straight through the rounding).
template <bool GB>
PQ_VECTOR_CLONES
void hgq_combine_loop(int64_t n, const double* __restrict sf, const double* __restrict so,
                      const double* __restrict ss, const float* __restrict gb, const float* __restrict act,
                      const float* __restrict gio, const float* __restrict gis, const float* __restrict gfo,
                      const float* __restrict gfs, float* __restrict gi, float* __restrict gf) {
  const float neg_ln2 = static_cast<float>(-std::log(2.0));
  for (int64_t j = 0; j < n; ++j) {
    const float vf_ = static_cast<float>(sf[j]), vo = static_cast<float>(so[j]), vs = static_cast<float>(ss[j]);
    const float a = gio[j] * vo, b = gis[j] * vs;
    float vi = a + b;
    const float c = vf_ * neg_ln2, d = gfo[j] * vo, e = gfs[j] * vs;
    float vf = (c + d) + e;
    if constexpr (GB) {
      const float t = gb[j] * act[j];
      vi = vi + t;
      vf = vf + t;
    }
    gi[j] = vi;
    gf[j] = vf;
  }
}

// gi, gf from the sums (null: no gradient reached the values) and the widths' gradient gb (null:
// none).
void hgq_combine(const HGQPlan& p, const double* sums, const float* gb, float* gi, float* gf) {
  const int64_t n = p.n;
  const float *act = p.row(ACTIVE), *gio = p.row(GI_O), *gis = p.row(GI_S), *gfo = p.row(GF_O),
              *gfs = p.row(GF_S);
  if (sums == nullptr) {
    for (int64_t j = 0; j < n; ++j) gi[j] = gf[j] = gb[j] * act[j];
  } else if (gb != nullptr) {
    hgq_combine_loop<true>(n, sums, sums + n, sums + 2 * n, gb, act, gio, gis, gfo, gfs, gi, gf);
  } else {
    hgq_combine_loop<false>(n, sums, sums + n, sums + 2 * n, gb, act, gio, gis, gfo, gfs, gi, gf);
  }
}

// The HGQ quantizer's learnable bits are one (2, *shape) parameter: row 0 integer bits, row 1
// fractional bits (one tensor for the optimizer instead of two).
HGQPlan hgq_plan_of(const Tensor& i_f, const Tensor& k, bool sym) {
  TORCH_CHECK(i_f.dim() >= 1 && i_f.size(0) == 2, "hgq: the bit parameter must be (2, *shape)");
  return hgq_plan(i_f.select(0, 0), i_f.select(0, 1), k, true, sym);
}

// d/d(i, f) as one (2, *shape) tensor from the sums (or null) and the widths' gradient (or undefined).
Tensor hgq_bit_grads(const HGQPlan& p, const Tensor& sums, const Tensor& grad_bits, const at::TensorOptions& opts) {
  Tensor g_if = at::empty({2, p.n}, opts);
  const Tensor gb = grad_bits.defined() ? grad_bits.contiguous() : Tensor();
  hgq_combine(p, sums.defined() ? sums.data_ptr<double>() : nullptr, gb.defined() ? gb.data_ptr<float>() : nullptr,
              g_if.data_ptr<float>(), g_if.data_ptr<float>() + p.n);
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), p.shape.begin(), p.shape.end());
  return g_if.view(shape);
}

struct HGQFn : public torch::autograd::Function<HGQFn> {
  static tensor_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& i_f, const Tensor& k, bool sym,
                             int64_t mode, bool relu) {
    HGQPlan p = hgq_plan_of(i_f, k, sym);
    Tensor q = hgq_values(x, p, static_cast<int>(mode), relu);
    ctx->save_for_backward({x, p.buf});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["shape"] = p.shape;
    ctx->set_materialize_grads(false);
    return {q, p.bits};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor x = s[0].contiguous();
    HGQPlan p;
    p.buf = s[1];
    p.n = p.buf.size(1);
    p.shape = ctx->saved_data["shape"].toIntVector();
    const bool need_x = ctx->needs_input_grad(0), need_if = ctx->needs_input_grad(1);
    const Tensor &grad = grads[0], &grad_bits = grads[1];
    Tensor gx, g_if, sums;
    if (grad.defined()) {
      const Tensor g = grad.contiguous();
      gx = at::empty_like(x, at::MemoryFormat::Contiguous);  // (written even when not needed)
      sums = at::zeros({3 * p.n}, x.options().dtype(at::kDouble));
      hgq_pass(g, x, p, static_cast<int>(ctx->saved_data["mode"].toInt()), gx.data_ptr<float>(),
               sums.data_ptr<double>(), ctx->saved_data["relu"].toBool());
      gx = need_x ? gx.view(x.sizes()) : Tensor();
    }
    if (need_if && (grad.defined() || grad_bits.defined())) g_if = hgq_bit_grads(p, sums, grad_bits, x.options());
    return {gx, g_if, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor> hgq_quantize(const Tensor& x, const Tensor& i_f, const Tensor& k, bool sym, int64_t mode,
                                        bool relu) {
  check_input(x);
  check_input(i_f);
  check_input(k);
  auto out = HGQFn::apply(x, i_f, k, sym, mode, relu);
  return {out[0], out[1]};
}

// ------------------------------------------------------------------------------ EBOPs
// pquant.metrics.ebops.linear_cost's EBOPs of a dense layer, P * (sum_oi wb[o,i] ib[i] [w != 0] +
// sum_o bb[o]), with float64 sums, and its gradients (the HGQ dense node returns them for the
// loss).
// wb: () / (O, 1) / (O, I); ib: () / (I,); bb: undefined / () / (O,); w: the effective weight.
double dense_ebops_value(const Tensor& wb_in, const Tensor& ib_in, const Tensor& weight, const Tensor& bb_in,
                         int64_t positions) {
  const int64_t O = weight.size(0), I = weight.size(1);
  const Tensor wb = wb_in.expand({O, I}).contiguous(), ib = ib_in.reshape({-1}).expand({I}).contiguous(),
               w = weight.contiguous();
  const float *wbp = wb.data_ptr<float>(), *ibp = ib.data_ptr<float>(), *wp = w.data_ptr<float>();
  double mac = 0.0;
  for (int64_t o = 0; o < O; ++o) {
    double row = 0.0;
    for (int64_t i = 0; i < I; ++i) {
      const float m = wbp[o * I + i] * ibp[i];
      row += wp[o * I + i] != 0.f ? static_cast<double>(m) : 0.0;
    }
    mac += row;
  }
  double bias = 0.0;
  if (bb_in.defined()) {
    const Tensor bb = bb_in.reshape({-1}).expand({O}).contiguous();
    const float* bp = bb.data_ptr<float>();
    for (int64_t o = 0; o < O; ++o) bias += bp[o];
  }
  const double p = static_cast<double>(positions);
  return p * mac + p * bias;
}

// Gradients of dense_ebops_value for the scalar gradient g (already times positions, in float32
// as autograd computes it): (d wb, d ib, d bb), each only where asked for.
std::tuple<Tensor, Tensor, Tensor> dense_ebops_grads(float g, const Tensor& wb_in, const Tensor& ib_in,
                                                     const Tensor& weight, const std::vector<int64_t>& bias_shape,
                                                     bool need_wb, bool need_ib, bool need_bb) {
  const int64_t O = weight.size(0), I = weight.size(1);
  Tensor gwb, gib, gbb;
  const Tensor w = weight.contiguous(), wb = wb_in.expand({O, I}).contiguous(),
               ib = ib_in.reshape({-1}).expand({I}).contiguous();
  const float *wp = w.data_ptr<float>(), *wbp = wb.data_ptr<float>(), *ibp = ib.data_ptr<float>();
  if (need_wb) {
    Tensor full = at::empty({O, I}, weight.options());
    float* fp = full.data_ptr<float>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) fp[o * I + i] = (wp[o * I + i] != 0.f ? g : 0.f) * ibp[i];
    gwb = wb_in.sizes() == full.sizes() ? full : at::sum_to(full, wb_in.sizes());
  }
  if (need_ib) {
    Tensor col = at::empty({I}, weight.options());
    float* cp = col.data_ptr<float>();
    std::vector<double> acc(I, 0.0);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) acc[i] += static_cast<double>((wp[o * I + i] != 0.f ? g : 0.f) * wbp[o * I + i]);
    for (int64_t i = 0; i < I; ++i) cp[i] = static_cast<float>(acc[i]);
    gib = ib_in.dim() == 0 ? col.sum().reshape({}) : col.view(ib_in.sizes());
  }
  if (need_bb) {
    const int64_t n = c10::multiply_integers(bias_shape);
    gbb = at::full(bias_shape, n == O ? g : g * static_cast<float>(O), weight.options());
  }
  return {gwb, gib, gbb};
}

// ------------------------------------------------------------------------------- HGQ dense
// PQDense with HGQ quantizers (saturating modes) as one autograd node:
// addmm(q_b(b), q_in(x), q_w(w * mask)^T) with the mask constant or PDP's soft mask, returning
// (y, q_w(w * mask), EBOPs, widths of q_w, [widths of q_in], [widths of q_b]) -- the EBOPs
// (pquant.metrics.ebops.linear_cost's, for the HGQ loss) only when q_in and q_b (if there is a
// bias) are present, else 0. Each quantizer is the
// HGQ kernel above (same plan, values and backward); the matrix products and the mask are
// DenseFn's, so the values and gradients are those of the generic path.
struct HGQPart {
  HGQPlan plan;
  bool on = false;
};

HGQPart hgq_part(const std::optional<Tensor>& i_f, const std::optional<Tensor>& k, bool sym) {
  HGQPart part;
  if (!i_f.has_value() || !i_f->defined()) return part;
  part.plan = hgq_plan_of(*i_f, *k, sym);
  part.on = true;
  return part;
}

// (gx, d(i, f)) of one quantizer for the incoming gradient g on its input x.
std::pair<Tensor, Tensor> hgq_part_backward(const Tensor& g, const Tensor& x_in, const HGQPlan& p, int mode,
                                            const Tensor& grad_bits, bool need_x, bool need_if) {
  const Tensor x = x_in.contiguous();
  Tensor gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  Tensor sums = at::zeros({3 * p.n}, x.options().dtype(at::kDouble));
  hgq_pass(g.contiguous(), x, p, mode, gx.data_ptr<float>(), sums.data_ptr<double>(), false);
  return {need_x ? gx.view(x_in.sizes()) : Tensor(),
          need_if ? hgq_bit_grads(p, sums, grad_bits, x.options()) : Tensor()};
}

void save_plan(AutogradContext* ctx, const std::string& key, const HGQPart& part) {
  if (!part.on) return;
  ctx->saved_data[key + "_buf"] = part.plan.buf;
  ctx->saved_data[key + "_shape"] = part.plan.shape;
}

HGQPart load_plan(AutogradContext* ctx, const std::string& key) {
  HGQPart part;
  auto it = ctx->saved_data.find(key + "_buf");
  if (it == ctx->saved_data.end()) return part;
  part.on = true;
  part.plan.buf = it->second.toTensor();
  part.plan.n = part.plan.buf.size(1);
  part.plan.shape = ctx->saved_data[key + "_shape"].toIntVector();
  return part;
}

using OptT = std::optional<Tensor>;

struct HGQDenseFn : public torch::autograd::Function<HGQDenseFn> {
  // Tensor inputs, in order: x, w, b, mask, in_if, in_k, w_if, w_k, b_if, b_k.
  // flags: (sym, mode) of the input, weight and bias quantizers.
  static tensor_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w, const OptT& b_opt,
                             const OptT& mask_opt, const OptT& in_if, const OptT& in_k, const Tensor& w_if,
                             const Tensor& w_k, const OptT& b_if, const OptT& b_k, std::vector<int64_t> flags,
                             const std::optional<SoftMask>& soft) {
    const Tensor b = b_opt.has_value() ? *b_opt : Tensor();
    Tensor mask = mask_opt.has_value() ? *mask_opt : Tensor();
    const HGQPart pin = hgq_part(in_if, in_k, flags[0] != 0);
    HGQPart pw;
    pw.plan = hgq_plan_of(w_if, w_k, flags[2] != 0);
    pw.on = true;
    const HGQPart pb = b.defined() ? hgq_part(b_if, b_k, flags[4] != 0) : HGQPart();
    const Tensor xq = pin.on ? hgq_values(x, pin.plan, static_cast<int>(flags[1]), false) : x;
    Tensor smask;
    const Tensor wm = masked_weight(ctx, w, mask, smask, soft);
    const Tensor wq = hgq_values(wm, pw.plan, static_cast<int>(flags[3]), false);
    const Tensor bq = pb.on ? hgq_values(b, pb.plan, static_cast<int>(flags[5]), false) : b;
    const Tensor wt = wq.t();
    const Tensor y = bq.defined() ? at::addmm(bq, xq, wt) : at::mm(xq, wt);
    // the layer's EBOPs (one position per sample) when every width is learned here
    const bool ebops = pin.on && (pb.on || !b.defined());
    const Tensor e = at::scalar_tensor(
        ebops ? dense_ebops_value(pw.plan.bits, pin.plan.bits, wq, pb.on ? pb.plan.bits : Tensor(), 1) : 0.0,
        x.options());
    ctx->saved_data["ebops"] = ebops;
    ctx->save_for_backward({pin.on ? x : Tensor(), xq, wm, mask, wq, pb.on ? b : Tensor(), smask,
                            ebops ? pw.plan.bits : Tensor(), ebops ? pin.plan.bits : Tensor()});
    save_plan(ctx, "in", pin);
    save_plan(ctx, "w", pw);
    save_plan(ctx, "b", pb);
    ctx->saved_data["flags"] = flags;
    ctx->saved_data["has_bias"] = b.defined();
    if (b.defined()) ctx->saved_data["bias_sizes"] = b.sizes().vec();
    ctx->mark_non_differentiable({wq});
    ctx->set_materialize_grads(false);
    tensor_list out{y, wq, e, pw.plan.bits};
    if (pin.on) out.push_back(pin.plan.bits);
    if (pb.on) out.push_back(pb.plan.bits);
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &xq = saved[1], &wm = saved[2], &mask = saved[3], &wq = saved[4],
                 &b = saved[5], &smask = saved[6];
    const std::vector<int64_t> flags = ctx->saved_data["flags"].toIntVector();
    const HGQPart pin = load_plan(ctx, "in"), pw = load_plan(ctx, "w"), pb = load_plan(ctx, "b");
    const Tensor &gy = grads[0], &ge = grads[2];
    Tensor gbits_w = grads[3];
    size_t next = 4;
    Tensor gbits_in = pin.on ? grads[next++] : Tensor();
    Tensor gbits_b = pb.on ? grads[next++] : Tensor();
    if (ge.defined() && ctx->saved_data["ebops"].toBool()) {
      // the EBOPs' gradient joins the widths' (autograd would add the two contributions)
      auto [gwb, gib, gbb] = dense_ebops_grads(ge.item<float>(), saved[7], saved[8], wq,
                                               pb.on ? pb.plan.shape : std::vector<int64_t>{}, true, true, pb.on);
      gbits_w = gbits_w.defined() ? gbits_w + gwb : gwb;
      gbits_in = gbits_in.defined() ? gbits_in + gib : gib;
      if (pb.on) gbits_b = gbits_b.defined() ? gbits_b + gbb : gbb;
    }
    // gradient slots: x, w, b, mask, in_if, in_k, w_if, w_k, b_if, b_k, flags, soft
    tensor_list out(12);
    const Tensor wt = wq.t();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // needs_input_grad counts tensor inputs that are present: map the slots to those indices
    std::vector<int> index(10, -1);
    {
      int at = 0;
      index[0] = at++;
      index[1] = at++;
      if (has_bias) index[2] = at++;
      if (mask.defined() && !smask.defined()) index[3] = at++;
      if (pin.on) { index[4] = at++; index[5] = at++; }
      index[6] = at++; index[7] = at++;
      if (pb.on) { index[8] = at++; index[9] = at++; }
    }
    auto needs = [&](int slot) { return index[slot] >= 0 && ctx->needs_input_grad(index[slot]); };
    // a data quantizer (input, bias): from the gradient g of its output (undefined: none), or
    // from its widths' gradient alone; slots of its value and of its (i, f)
    auto data_part = [&](const Tensor& g, const HGQPart& part, const Tensor& value, int64_t mode,
                         const Tensor& gbits, int sv, int sif) {
      if (g.defined() && part.on) {
        std::tie(out[sv], out[sif]) = hgq_part_backward(g, value, part.plan, static_cast<int>(mode), gbits,
                                                        needs(sv), needs(sif));
      } else if (g.defined()) {
        out[sv] = g;
      } else if (part.on && gbits.defined() && needs(sif)) {
        out[sif] = hgq_bit_grads(part.plan, Tensor(), gbits, gbits.options());
      }
    };
    const bool want_in = gy.defined() && (needs(0) || needs(4));
    data_part(want_in ? mat1_grad(gy, xq, wt) : Tensor(), pin, x, flags[1], gbits_in, 0, 4);
    // weight quantizer and mask
    if (gy.defined() || gbits_w.defined()) {
      Tensor gwq = gy.defined() ? mat2_grad(gy, xq, wt).t() : at::zeros_like(wm);
      auto [gwm, g_if] = hgq_part_backward(gwq, wm, pw.plan, static_cast<int>(flags[3]), gbits_w, needs(1), needs(6));
      out[6] = g_if;
      if (needs(1) && gy.defined()) {
        if (smask.defined()) {
          out[1] = pdp_soft_grad(gwm, smask, mask, ctx->saved_data["inv_tau"].toDouble());
        } else {
          out[1] = mask.defined() ? gwm * mask : gwm;
        }
      }
    }
    if (has_bias && (needs(2) || needs(8)))
      data_part(gy.defined() ? at::sum_to(gy, ctx->saved_data["bias_sizes"].toIntVector()) : Tensor(), pb, b,
                flags[5], gbits_b, 2, 8);
    return out;
  }
};

tensor_list hgq_dense(const Tensor& x, const Tensor& w, const OptT& b, const OptT& mask, const OptT& in_if,
                      const OptT& in_k, const Tensor& w_if, const Tensor& w_k, const OptT& b_if, const OptT& b_k,
                      std::vector<int64_t> flags, std::optional<std::tuple<int64_t, double, double>> soft) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2, "pquant HGQ dense kernel: 2-D input and weight");
  TORCH_CHECK(flags.size() == 6, "pquant HGQ dense kernel: six flags");
  for (const Tensor* t : {&x, &w, &w_if, &w_k}) check_input(*t);
  for (const OptT* t : {&b, &mask, &in_if, &in_k, &b_if, &b_k})
    if (t->has_value()) check_input(**t);
  std::optional<SoftMask> sm;
  if (soft) {
    TORCH_CHECK(!mask.has_value(), "pquant HGQ dense kernel: a mask or a soft mask, not both");
    sm = SoftMask{std::get<0>(*soft), std::get<1>(*soft), std::get<2>(*soft)};
  }
  return HGQDenseFn::apply(x, w, b, mask, in_if, in_k, w_if, w_k, b_if, b_k, flags, sm);
}

// ------------------------------------------------------------------------------ HGQ loss
// The HGQ loss term beta * sum_l E_l + gamma * sum_q mean(bits_q) as one node: returns
// (term, sum_l E_l, sum_q mean(bits_q)); gradients beta for every E_l and gamma / numel_q for
// every element of bits_q (float32, as autograd computes them for the composed expression).
struct HGQLossFn : public torch::autograd::Function<HGQLossFn> {
  static tensor_list forward(AutogradContext* ctx, at::TensorList ebops, at::TensorList bits, double beta,
                             double gamma) {
    float e_total = 0.f;  // float32 in order, as the torch path adds them
    for (const Tensor& e : ebops) e_total += e.item<float>();
    double w_total = 0.0;
    std::vector<int64_t> shapes;  // per bits tensor: its number of dims, then its sizes
    for (const Tensor& b_in : bits) {
      const Tensor b = b_in.contiguous();
      const float* p = b.data_ptr<float>();
      double s = 0.0;
      for (int64_t j = 0; j < b.numel(); ++j) s += p[j];
      w_total += static_cast<float>(s / static_cast<double>(b.numel()));
      shapes.push_back(b.dim());
      for (int64_t d : b.sizes()) shapes.push_back(d);
    }
    const float widths = static_cast<float>(w_total);
    const float term = static_cast<float>(beta) * e_total + static_cast<float>(gamma) * widths;
    ctx->saved_data["shapes"] = shapes;
    ctx->saved_data["n_ebops"] = static_cast<int64_t>(ebops.size());
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["gamma"] = gamma;
    const auto opts = at::TensorOptions(at::kFloat);
    Tensor t_e = at::scalar_tensor(e_total, opts), t_w = at::scalar_tensor(widths, opts);
    ctx->mark_non_differentiable({t_e, t_w});
    return {at::scalar_tensor(term, opts), t_e, t_w};
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const std::vector<int64_t> shapes = ctx->saved_data["shapes"].toIntVector();
    const int64_t n_ebops = ctx->saved_data["n_ebops"].toInt();
    tensor_list out;
    const bool has = grads[0].defined();
    const float g = has ? grads[0].item<float>() : 0.f;
    const auto opts = at::TensorOptions(at::kFloat);
    const float ge = g * static_cast<float>(ctx->saved_data["beta"].toDouble());
    const float gw = g * static_cast<float>(ctx->saved_data["gamma"].toDouble());
    for (int64_t l = 0; l < n_ebops; ++l) out.push_back(has ? at::scalar_tensor(ge, opts) : Tensor());
    for (size_t at = 0; at < shapes.size();) {
      const int64_t nd = shapes[at];
      const std::vector<int64_t> shape(shapes.begin() + at + 1, shapes.begin() + at + 1 + nd);
      at += 1 + nd;
      // MeanBackward's grad / numel, in float32
      const float n = static_cast<float>(c10::multiply_integers(shape));
      out.push_back(has ? at::full(shape, gw / n, opts) : Tensor());
    }
    out.push_back(Tensor());
    out.push_back(Tensor());
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor> hgq_loss(std::vector<Tensor> ebops, std::vector<Tensor> bits, double beta,
                                            double gamma) {
  for (const Tensor& e : ebops) {
    check_input(e);
    TORCH_CHECK(e.numel() == 1, "hgq_loss: EBOPs must be scalars");
  }
  for (const Tensor& b : bits) check_input(b);
  auto out = HGQLossFn::apply(at::TensorList(ebops), at::TensorList(bits), beta, gamma);
  return {out[0], out[1], out[2]};
}

// ------------------------------------------------------------------------------- PDP weight
// pquant.pruning.pdp._SoftMaskedWeight with the threshold computed here: w * m(w) and
// d/dw = m + (2 / tau) * w**2 * m * (1 - m), for layers that do not run the dense kernel.
struct PDPWeightFn : public torch::autograd::Function<PDPWeightFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& w, int64_t n_below, double inv_tau, double clip) {
    auto [scores, mask] = pdp_soft_mask(w, SoftMask{n_below, inv_tau, clip});
    ctx->save_for_backward({scores, mask});
    ctx->saved_data["inv_tau"] = inv_tau;
    return w * mask.view(w.sizes());
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &scores = s[0], &mask = s[1];
    const double inv_tau = ctx->saved_data["inv_tau"].toDouble();
    Tensor g = pdp_soft_grad(grads[0], mask, scores, inv_tau);
    return {g, Tensor(), Tensor(), Tensor()};
  }
};

Tensor pdp_masked_weight(const Tensor& w, int64_t n_below, double inv_tau, double clip) {
  check_input(w);
  return PDPWeightFn::apply(w, n_below, inv_tau, clip);
}

// For tests: pquant.pruning.select.midpoint_threshold of non-negative float32 scores.
double midpoint_threshold(const Tensor& scores_in, int64_t n_below) {
  Tensor scores = scores_in.contiguous();
  check_input(scores);
  const int64_t n = scores.numel();
  TORCH_CHECK(n_below >= 1 && n_below < n, "n_below must lie in [1, numel - 1]");
  return midpoint_threshold_of(scores.data_ptr<float>(), n, n_below);
}

}  // namespace

// How many threads an at::parallel_for over n one-element tasks actually ran on (1 when the
// extension was built without OpenMP, whatever torch.get_num_threads() says).
int64_t parallel_threads(int64_t n) {
  std::vector<std::atomic<int>> seen(std::max(at::get_num_threads(), 1));
  for (auto& s : seen) s.store(0);
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    volatile double sink = 0;  // a little work per task, so that every thread gets some
    for (int64_t j = b; j < e; ++j)
      for (int r = 0; r < 20000; ++r) sink = sink + static_cast<double>(r) * 1e-9;
    const int t = at::get_thread_num();
    if (t >= 0 && t < static_cast<int>(seen.size())) seen[t].store(1);
  });
  int64_t count = 0;
  for (auto& s : seen) count += s.load();
  return count;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<FixedSpec>(m, "FixedSpec")
      .def(py::init([](double below, double above, double scale, double inv, int mode,
                       std::optional<std::pair<double, double>> code_clip) {
             FixedSpec s;
             s.below = below;
             s.above = above;
             s.scale = scale;
             s.inv = inv;
             s.mode = mode;
             if (code_clip) {
               s.code_clip = true;
               s.code_lo = code_clip->first;
               s.code_hi = code_clip->second;
             }
             return s;
           }),
           py::arg("below"), py::arg("above"), py::arg("scale"), py::arg("inv_scale"), py::arg("mode"),
           py::arg("code_clip") = py::none())
      .def_static("per_element", [](Tensor lo, Tensor hi, Tensor scale, Tensor inv, int mode) {
             FixedSpec s;
             for (Tensor* t : {&lo, &hi, &scale, &inv}) {
               check_input(*t);
               *t = t->contiguous();
             }
             s.lo = lo;
             s.hi = hi;
             s.scale_t = scale;
             s.inv_t = inv;
             s.mode = mode;
             return s;
           })
      .def_static("range_split", [](int64_t magnitude_bits, double code_lo, double code_hi, int mode,
                                    bool per_channel) {
             FixedSpec s;
             s.split = true;
             s.split_rows = per_channel;
             s.magnitude_bits = magnitude_bits;
             s.code_lo = code_lo;
             s.code_hi = code_hi;
             s.mode = mode;
             return s;
           })
      .def_property_readonly("per_element_format", &FixedSpec::per_element);
  m.def("quantize", &quantize, "fixed-point quantization (one pass, straight-through gradient)",
        py::arg("x"), py::arg("spec"));
  m.def("hgq_quantize", &hgq_quantize, "HGQ quantizer, saturating modes: (q, bits)", py::arg("x"),
        py::arg("i_f"), py::arg("k"), py::arg("symmetric"), py::arg("mode"), py::arg("relu") = false);
  m.def("hgq_dense", &hgq_dense, "PQDense with HGQ quantizers as one autograd node", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("mask"), py::arg("in_if"), py::arg("in_k"), py::arg("w_if"),
        py::arg("w_k"), py::arg("b_if"), py::arg("b_k"), py::arg("flags"), py::arg("soft") = py::none());
  m.def("hgq_loss", &hgq_loss, "HGQ loss term beta * sum(EBOPs) + gamma * sum of mean widths (one node)",
        py::arg("ebops"), py::arg("bits"), py::arg("beta"), py::arg("gamma"));
  m.def("pdp_masked_weight", &pdp_masked_weight, "PDP's soft-masked weight (exact threshold)",
        py::arg("weight"), py::arg("n_below"), py::arg("inv_tau"), py::arg("clip"));
  m.def("parallel_threads", &parallel_threads, "threads an at::parallel_for ran on (OpenMP check)");
  m.def("midpoint_threshold", &midpoint_threshold, "exact PDP threshold (radix select)");
  m.def("dense", &dense, "fused quantized/masked linear layer (one autograd node)", py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("mask"), py::arg("q_in"), py::arg("q_w"),
        py::arg("q_b"), py::arg("q_out"), py::arg("soft") = py::none());
}
