// A hand-written 3x3 depthwise convolution (NHWC, stride 1, SAME padding, float32)
// for XLA:CPU through XLA's FFI: a probe of how much a library-grade kernel could
// gain over the project's 'shifted' form (`python benchmarks/ffi_depthwise.py`). Not
// used by the package: it is forward only and would need its own gradient kernels.
//
// Three entry points:
//   depthwise_forward:       y = depthwise(x, k); with the taps flipped it is also the
//     input gradient (stride 1: dx = depthwise(dy, flip(k)))
//   depthwise_kernel_grad:   dk[i, j, c] = sum over n, h, w of x[n, h + i - 1, w + j - 1, c]
//     * dy[n, h, w, c], per-thread partial sums added at the end
//   depthwise_fused_forward: y = depthwise(relu6(x * scale + shift), k), the previous
//     layer's BN + ReLU6 applied to each input row on the fly, as XLA fuses it into
//     its own taps (an unfused kernel would need that pass over memory first).
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Adds the three taps of kernel row `kernel_row` (3 x C values) applied to one input
// row (W x C) into one output row (W x C); columns outside the image are zero.
inline void AddRowTaps(const float* input_row, const float* kernel_row, int64_t width,
                       int64_t channels, float* output_row) {
  for (int dw = -1; dw <= 1; ++dw) {
    const float* taps = kernel_row + (dw + 1) * channels;
    const int64_t first = dw < 0 ? 1 : 0, last = dw > 0 ? width - 1 : width;
    for (int64_t w = first; w < last; ++w) {
      const float* in = input_row + (w + dw) * channels;
      float* out = output_row + w * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) out[c] += in[c] * taps[c];
    }
  }
}

// One output row at a time, rows shared out among OpenMP threads. kFused: each input
// row is first activated into a per-thread buffer (recomputed for each of the three
// output rows that read it: arithmetic is cheaper here than a pass over memory).
template <bool kFused>
ffi::Error Forward(ffi::Buffer<ffi::F32> x, const float* scale, const float* shift,
                   ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y) {
  const auto dims = x.dimensions();
  if (dims.size() != 4 || kernel.element_count() != 9 * dims[3]) {
    return ffi::Error::InvalidArgument("expected x (N, H, W, C) and a (3, 3, C) kernel");
  }
  const int64_t batch = dims[0], height = dims[1], width = dims[2], channels = dims[3];
  const int64_t row = width * channels;
  const float* input = x.typed_data();
  const float* taps = kernel.typed_data();
  float* output = y->typed_data();
#pragma omp parallel
  {
    std::vector<float> activated(kFused ? row : 0);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t h = 0; h < height; ++h) {
        float* output_row = output + (n * height + h) * row;
        std::memset(output_row, 0, sizeof(float) * row);
        for (int dh = -1; dh <= 1; ++dh) {
          const int64_t source = h + dh;
          if (source < 0 || source >= height) continue;
          const float* input_row = input + (n * height + source) * row;
          if (kFused) {
            for (int64_t w = 0; w < width; ++w) {
              const float* in = input_row + w * channels;
              float* out = activated.data() + w * channels;
#pragma omp simd
              for (int64_t c = 0; c < channels; ++c) {
                const float v = in[c] * scale[c] + shift[c];
                out[c] = v < 0.f ? 0.f : (v > 6.f ? 6.f : v);
              }
            }
            input_row = activated.data();
          }
          AddRowTaps(input_row, taps + (dh + 1) * 3 * channels, width, channels, output_row);
        }
      }
    }
  }
  return ffi::Error::Success();
}

ffi::Error DepthwiseForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                            ffi::ResultBuffer<ffi::F32> y) {
  return Forward<false>(x, nullptr, nullptr, kernel, y);
}

ffi::Error DepthwiseFusedForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                                 ffi::Buffer<ffi::F32> shift, ffi::Buffer<ffi::F32> kernel,
                                 ffi::ResultBuffer<ffi::F32> y) {
  return Forward<true>(x, scale.typed_data(), shift.typed_data(), kernel, y);
}

ffi::Error DepthwiseKernelGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dk) {
  const auto dims = x.dimensions();
  if (dims.size() != 4 || dy.element_count() != x.element_count()) {
    return ffi::Error::InvalidArgument("expected x and dy of one shape (N, H, W, C)");
  }
  const int64_t batch = dims[0], height = dims[1], width = dims[2], channels = dims[3];
  const int64_t row = width * channels;
  const float* input = x.typed_data();
  const float* grad = dy.typed_data();
  float* kernel_grad = dk->typed_data();
  std::memset(kernel_grad, 0, sizeof(float) * 9 * channels);
#pragma omp parallel
  {
    std::vector<float> sums(9 * channels, 0.f);
#pragma omp for collapse(2) schedule(static)
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t h = 0; h < height; ++h) {
        const float* grad_row = grad + (n * height + h) * row;
        for (int dh = -1; dh <= 1; ++dh) {
          const int64_t source = h + dh;
          if (source < 0 || source >= height) continue;
          const float* input_row = input + (n * height + source) * row;
          for (int dw = -1; dw <= 1; ++dw) {
            float* tap = sums.data() + ((dh + 1) * 3 + (dw + 1)) * channels;
            const int64_t first = dw < 0 ? 1 : 0, last = dw > 0 ? width - 1 : width;
            for (int64_t w = first; w < last; ++w) {
              const float* in = input_row + (w + dw) * channels;
              const float* g = grad_row + w * channels;
#pragma omp simd
              for (int64_t c = 0; c < channels; ++c) tap[c] += in[c] * g[c];
            }
          }
        }
      }
    }
#pragma omp critical
    for (int64_t i = 0; i < 9 * channels; ++i) kernel_grad[i] += sums[i];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(depthwise_kernel_grad, DepthwiseKernelGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(depthwise_forward, DepthwiseForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(depthwise_fused_forward, DepthwiseFusedForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
