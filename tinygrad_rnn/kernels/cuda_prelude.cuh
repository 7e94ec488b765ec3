// The math CUDA kernel bodies call (tg_tanh, tg_sigmoid, tg_exp, tg_log, tg_atomic_add), in
// CUDA's own functions: the preamble of every CuPy ElementwiseKernel that kernels/ builds. The
// CPU's forms are in runtime.h; tests/test_rnn_kernels.py compiles this file as host C++ too.
template <typename T> __device__ __forceinline__ T tg_tanh(T x) { return tanh(x); }
template <typename T> __device__ __forceinline__ T tg_exp(T x) { return exp(x); }
template <typename T> __device__ __forceinline__ T tg_log(T x) { return log(x); }
template <typename T> __device__ __forceinline__ T tg_sigmoid(T x) {
  const T half = 0.5;
  return tg_tanh(x * half) * half + half;  // as the portable form: no overflow for large |x|
}
template <typename T> __device__ __forceinline__ void tg_atomic_add(T* p, T v) { atomicAdd(p, v); }
