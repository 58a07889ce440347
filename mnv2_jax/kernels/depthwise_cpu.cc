// Depthwise convolution for XLA:CPU through XLA's FFI: float32, NHWC, any kernel size,
// stride and dilation, explicit top/left padding (the caller computes TF-'SAME').
//
// Why by hand: XLA:CPU has no fast depthwise convolution (its grouped convolution is
// ~10x slower than the 'shifted' form of mnv2_jax/models/depthwise.py, and that form
// runs each tap as its own elementwise loop). Here each output row is computed once,
// all taps accumulated in registers across the channels, and written once.
//
// Entry points (registered by mnv2_jax/models/depthwise_ffi.py):
//   mnv2_depthwise_forward       y[n, o, q, c] = sum_ij x[n, o*s + d*i - pt, q*s + d*j - pl, c] * k[i, j, c]
//   mnv2_depthwise_input_grad    dx = the transpose of the forward applied to dy
//   mnv2_depthwise_kernel_grad   dk[i, j, c] = sum_{n, o, q} x[n, o*s + d*i - pt, ...] * dy[n, o, q, c]
// Out-of-image positions read as zero. Work is shared out over rows with OpenMP (static
// schedule); the kernel gradient's per-thread partial sums are added in thread order, so
// every result is deterministic for a given thread count.
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t batch, height, width, channels;   // the input x
  int64_t out_height, out_width;            // y and dy
  int64_t kernel_height, kernel_width;
  int64_t stride, dilation, pad_top, pad_left;
};

// Input coordinate that output coordinate `o` reads through tap `i`.
inline int64_t Source(int64_t o, int64_t i, const Geometry& g, int64_t pad) {
  return o * g.stride + i * g.dilation - pad;
}

// Reads the shapes of x (N, H, W, C), y or dy (N, OH, OW, C) and the taps (kh, kw, C).
template <typename Dims>
ffi::Error MakeGeometry(const Dims& input, const Dims& output, const Dims& taps, int64_t stride,
                        int64_t dilation, int64_t pad_top, int64_t pad_left, Geometry* g) {
  if (input.size() != 4 || output.size() != 4 || taps.size() != 3 || taps[2] != input[3] ||
      output[3] != input[3] || output[0] != input[0]) {
    return ffi::Error::InvalidArgument(
        "expected x (N, H, W, C), y (N, OH, OW, C) and taps (kh, kw, C)");
  }
  if (stride < 1 || dilation < 1) {
    return ffi::Error::InvalidArgument("stride and dilation must be >= 1");
  }
  *g = Geometry{input[0], input[1], input[2], input[3], output[1], output[2], taps[0], taps[1],
                stride, dilation, pad_top, pad_left};
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                   ffi::ResultBuffer<ffi::F32> y, int64_t stride, int64_t dilation,
                   int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (auto error = MakeGeometry(x.dimensions(), y->dimensions(), kernel.dimensions(), stride,
                                dilation, pad_top, pad_left, &g);
      error.failure()) {
    return error;
  }
  const int64_t C = g.channels;
  const float* input = x.typed_data();
  const float* taps = kernel.typed_data();
  float* output = y->typed_data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t o = 0; o < g.out_height; ++o) {
      float* out_row = output + ((n * g.out_height + o) * g.out_width) * C;
      for (int64_t q = 0; q < g.out_width; ++q) {
        float* out = out_row + q * C;
        for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
        for (int64_t i = 0; i < g.kernel_height; ++i) {
          const int64_t h = Source(o, i, g, g.pad_top);
          if (h < 0 || h >= g.height) continue;
          const float* in_row = input + ((n * g.height + h) * g.width) * C;
          for (int64_t j = 0; j < g.kernel_width; ++j) {
            const int64_t w = Source(q, j, g, g.pad_left);
            if (w < 0 || w >= g.width) continue;
            const float* in = in_row + w * C;
            const float* tap = taps + (i * g.kernel_width + j) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] += in[c] * tap[c];
          }
        }
      }
    }
  }
  return ffi::Error::Success();
}

// dx[n, h, w, c] = sum over the taps (i, j) and outputs (o, q) with h = o*s + d*i - pt and
// w = q*s + d*j - pl of dy[n, o, q, c] * k[i, j, c]: for each input position, the taps whose
// offset leaves a multiple of the stride.
ffi::Error InputGrad(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                     ffi::ResultBuffer<ffi::F32> dx, int64_t stride, int64_t dilation,
                     int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (auto error = MakeGeometry(dx->dimensions(), dy.dimensions(), kernel.dimensions(), stride,
                                dilation, pad_top, pad_left, &g);
      error.failure()) {
    return error;
  }
  const int64_t C = g.channels;
  const float* grad = dy.typed_data();
  const float* taps = kernel.typed_data();
  float* input_grad = dx->typed_data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < g.batch; ++n) {
    for (int64_t h = 0; h < g.height; ++h) {
      float* out_row = input_grad + ((n * g.height + h) * g.width) * C;
      for (int64_t w = 0; w < g.width; ++w) {
        float* out = out_row + w * C;
        for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
        for (int64_t i = 0; i < g.kernel_height; ++i) {
          const int64_t offset_h = h + g.pad_top - i * g.dilation;
          if (offset_h < 0 || offset_h % g.stride != 0) continue;
          const int64_t o = offset_h / g.stride;
          if (o >= g.out_height) continue;
          const float* grad_row = grad + ((n * g.out_height + o) * g.out_width) * C;
          for (int64_t j = 0; j < g.kernel_width; ++j) {
            const int64_t offset_w = w + g.pad_left - j * g.dilation;
            if (offset_w < 0 || offset_w % g.stride != 0) continue;
            const int64_t q = offset_w / g.stride;
            if (q >= g.out_width) continue;
            const float* in = grad_row + q * C;
            const float* tap = taps + (i * g.kernel_width + j) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) out[c] += in[c] * tap[c];
          }
        }
      }
    }
  }
  return ffi::Error::Success();
}

ffi::Error KernelGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dk, int64_t stride, int64_t dilation,
                      int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (auto error = MakeGeometry(x.dimensions(), dy.dimensions(), dk->dimensions(), stride,
                                dilation, pad_top, pad_left, &g);
      error.failure()) {
    return error;
  }
  const int64_t C = g.channels, taps_size = g.kernel_height * g.kernel_width * C;
  const float* input = x.typed_data();
  const float* grad = dy.typed_data();
  std::vector<std::vector<float>> partial(omp_get_max_threads());
#pragma omp parallel
  {
    std::vector<float>& sums = partial[omp_get_thread_num()];
    sums.assign(taps_size, 0.f);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < g.batch; ++n) {
      for (int64_t o = 0; o < g.out_height; ++o) {
        const float* grad_row = grad + ((n * g.out_height + o) * g.out_width) * C;
        for (int64_t i = 0; i < g.kernel_height; ++i) {
          const int64_t h = Source(o, i, g, g.pad_top);
          if (h < 0 || h >= g.height) continue;
          const float* in_row = input + ((n * g.height + h) * g.width) * C;
          for (int64_t j = 0; j < g.kernel_width; ++j) {
            float* tap = sums.data() + (i * g.kernel_width + j) * C;
            for (int64_t q = 0; q < g.out_width; ++q) {
              const int64_t w = Source(q, j, g, g.pad_left);
              if (w < 0 || w >= g.width) continue;
              const float* in = in_row + w * C;
              const float* gr = grad_row + q * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) tap[c] += in[c] * gr[c];
            }
          }
        }
      }
    }
  }
  float* kernel_grad = dk->typed_data();
  std::memset(kernel_grad, 0, sizeof(float) * taps_size);
  for (const auto& sums : partial) {  // in thread order: deterministic
    for (int64_t t = 0; t < static_cast<int64_t>(sums.size()); ++t) kernel_grad[t] += sums[t];
  }
  return ffi::Error::Success();
}

}  // namespace

#define MNV2_GEOMETRY_ATTRS                  \
  .Attr<int64_t>("stride")                   \
      .Attr<int64_t>("dilation")             \
      .Attr<int64_t>("pad_top")              \
      .Attr<int64_t>("pad_left")

XLA_FFI_DEFINE_HANDLER_SYMBOL(mnv2_depthwise_forward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() MNV2_GEOMETRY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(mnv2_depthwise_input_grad, InputGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() MNV2_GEOMETRY_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(mnv2_depthwise_kernel_grad, KernelGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() MNV2_GEOMETRY_ATTRS);
