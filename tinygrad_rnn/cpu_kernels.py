"""Elementwise kernels on the CPU: the same kernel source the GPU runs, built by the host C++ compiler.

An op writes each elementwise kernel once, in CuPy's ElementwiseKernel form (typed
parameter lists and a C body run for every element `i`, see `backend.Kernel`), and the
device builds it: CuPy on CUDA, this module on the CPU. Here every body is wrapped in a
loop that the compiler vectorises (`#pragma omp simd`; a kernel with a row length runs a
(rows, row length) grid and its body gets `b` and `j` as well as `i`), both float32 and
float64 forms of all the kernels of an op family go into one shared library, built once
per machine and source and kept in a cache directory, and calls go through ctypes.

An op family may also bring host functions (backend.HostCode): C++ loops over its kernels
and GEMMs on a weight packed once for many calls (tg_pgemm), which the recurrent layers use
for their loop over time, split over a pool of threads (tg_parallel). The process has one
such pool: the first kernel library loaded hands it to NumPy's BLAS too, where that is
OpenBLAS with a threading callback (found in the process by `numpy_blas`), and every later
library runs its threads' work on it, so that one thread per core is ever busy. A loop then
runs on as many threads as BLAS is set to, and so does a kernel call with enough elements
(32K: TG_SPLIT_WORK); without that callback, on one.

Why: one fused loop per step instead of twenty NumPy passes, and a tanh that runs eight
lanes at a time (NumPy's float32 tanh runs one element at a time on CPUs without AVX-512:
6.5 ns an element, measured on an AMD EPYC; this one 2.7 ns, within 1.4 ulp of the exact
value). Float64 kernels call the C library's tanh, so the gradient checks, which run in
float64, see the same numbers as the portable form to rounding.

Where no C++ compiler is found, or the build fails (a warning says why), or the variable
TINYGRAD_RNN_CPU_KERNELS=0 is set, the device reports no kernels and the op runs its
portable array-API form instead; the tests hold the two to agree. The cache lives in
$TINYGRAD_RNN_CACHE, else $XDG_CACHE_HOME/tinygrad_rnn, else ~/.cache/tinygrad_rnn, one
file per source, compiler flags and CPU (the code is built for this CPU's instructions).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import typing
import warnings

import numpy as np

from .errors import DTypeError, ShapeError

ENV_SWITCH = "TINYGRAD_RNN_CPU_KERNELS"


class KernelBuildWarning(UserWarning):
    """The CPU kernels could not be built; the portable NumPy form runs instead."""


# Math that kernel bodies call, in the host's form. The float32 functions are written so
# that the compiler vectorises them (plain arithmetic and selects, no calls):
# - exp(y) = 2^n exp(r), n = round(y / ln 2), r = y - n ln 2 in two parts (|r| <= ln 2 / 2),
#   exp(r) by its Taylor series to r^7 (truncation 6e-9), 2^n built from its bits;
# - tanh: for |x| < 0.55, x + x^3 P(x^2), P of degree 4 fitted by weighted least squares at
#   4,000 Chebyshev points (relative error 1.1e-9 before rounding); otherwise
#   1 - 2 / (exp(2|x|) + 1), |x| clamped at 10 (tanh(10) rounds to 1), the sign put back;
# - sigmoid: 1 / (1 + exp(-x)), 0 where the exact value is below FLT_MIN (x < -87.3365);
#   exp itself likewise 0 below that, and inf above FLT_MAX's log;
# - NaN passes through both.
# Measured over 2.5 million float32 inputs from 1e-40 to 100 against float64: tanh within
# 1.4 ulp (NumPy's float32 tanh: 1.4), sigmoid within 2.5; tests/test_rnn_kernels.py holds
# them to 2 and 3. The float64 functions are the C library's tanh and the portable form's
# sigmoid, so float64 results (what the gradient checks see) match the portable ones.
HOST_PRELUDE = r"""
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unistd.h>
using std::sqrt;  // sqrt(float) in float, as CUDA's

static inline float tg_exp_reduced(float y) {  // exp(y) for -87.4 <= y <= 88.7
  const float shift = 12582912.f;  // 1.5 * 2^23: adding it rounds y / ln 2 to an integer
  const float n = (y * 1.44269504088896341f + shift) - shift;
  const float r = (y - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  const float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120
                  + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float tg_tanh(float x) {
  float a = std::fabs(x);
  a = a < 10.f ? a : 10.f;
  const float s = a * a;
  const float small = a + a * s * (-0.33333318652081173f + s * (0.13332616866544073f
                      + s * (-0.05385511984902351f + s * (0.021082059476184557f + s * -0.006287662851785189f))));
  const float big = 1.f - 2.f / (tg_exp_reduced(2.f * a) + 1.f);
  const float r = std::copysign(a < 0.55f ? small : big, x);
  return x != x ? x : r;
}

static inline double tg_tanh(double x) { return std::tanh(x); }

static inline float tg_exp(float x) {  // 0 below the float32 range (as sigmoid), inf above
  const float y = x < -87.3365f ? -87.3365f : (x > 88.7228317f ? 88.7228317f : x);
  const float shift = 12582912.f;
  const float n = (y * 1.44269504088896341f + shift) - shift;
  const float r = (y - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  const float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120
                  + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t top = n > 127.f ? 1 : 0;  // 2^128 has no exponent field: 2 x 2^127
  const int32_t bits = ((int32_t)n - top + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float v = p * scale * (top ? 2.f : 1.f);
  const float res = x < -87.3365f ? 0.f : (x > 88.7228317f ? INFINITY : v);  // past FLT_MAX
  return x != x ? x : res;
}

static inline double tg_exp(double x) { return std::exp(x); }
template <typename T> static inline T tg_log(T x) { return std::log(x); }
// one thread runs a kernel here, in element order: a plain add (CUDA's is atomicAdd)
template <typename T> static inline void tg_atomic_add(T* p, T v) { *p += v; }

static inline float tg_sigmoid(float x) {  // 1 / (1 + exp(-x)): less work than through tanh
  float y = -x;
  y = y < 87.3365f ? y : 87.3365f;   // sigmoid(-87.3365) is FLT_MIN: below that the result is 0
  y = y > -87.3365f ? y : -87.3365f;  // and exp(y) stays a normal float32
  const float r = x < -87.3365f ? 0.f : 1.f / (1.f + tg_exp_reduced(y));
  return x != x ? x : r;
}

static inline double tg_sigmoid(double x) {
  return std::tanh(x * 0.5) * 0.5 + 0.5;  // as the portable form, to rounding
}

// The thread count NumPy's BLAS is set to (OpenBLAS's get_num_threads, handed over once by
// Python through tg_set_blas_threads), read at every host loop call; null where unknown.
static int (*tg_blas_threads)() = nullptr;
extern "C" void tg_set_blas_threads(void* get_num_threads) { tg_blas_threads = (int (*)())get_num_threads; }

// One pool of threads for the host loops that split their work (tg_parallel) and, where NumPy's
// BLAS takes a threading callback (OpenBLAS >= 0.3.27), for that BLAS's own parallel jobs too
// (tg_blas_jobs). With two pools, BLAS's idle threads spin for ~0.1 s after each call, on the
// cores a loop's threads then share: a loop on 2 threads ran no faster than on 1. With one,
// exactly one thread per core is ever busy. A host loop uses as many threads as BLAS is set to
// (so OPENBLAS_NUM_THREADS, threadpoolctl and distributed's one thread per rank hold for both),
// the caller being one of them. Workers spin up to 1 ms for the next job, then sleep: a training
// step hands out jobs tens to hundreds of us apart, and waking a sleeping thread costs about as
// much (measured: 50 us of spinning left the Python-loop LSTM step 25% slower than on
// OpenBLAS's threads, 1 ms as fast; OpenBLAS's own spin for 0.1 s). The pool is never
// destroyed (a condition variable destroyed at exit with a sleeping waiter may block) and is
// made anew in a forked child, which has none of the parent's threads.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void tg_relax() { _mm_pause(); }
#else
static inline void tg_relax() {}
#endif
struct tg_pool {
  std::mutex m, busy;  // m guards sleeping and the condition variables; busy: one job at a time
  std::condition_variable wake, done;
  // the job, published seqlock-style: gen is odd while the fields are written
  std::atomic<long> gen{0};
  std::atomic<void (*)(void*, int, int)> fn{nullptr};
  std::atomic<void*> arg{nullptr};
  std::atomic<int> n{0}, left{0};
  int workers = 0, sleeping = 0;
  pid_t pid = getpid();
};
static tg_pool* tg_the_pool = nullptr;
static std::mutex tg_pool_make;

static tg_pool* tg_get_pool() {
  std::lock_guard<std::mutex> g(tg_pool_make);
  if (tg_the_pool == nullptr || tg_the_pool->pid != getpid()) tg_the_pool = new tg_pool();
  return tg_the_pool;
}

#ifndef TG_SPIN_US
#define TG_SPIN_US 1000
#endif
template <typename Ready> static bool tg_spin(Ready ready) {  // ready() within TG_SPIN_US?
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(TG_SPIN_US);
  for (int i = 1;; ++i) {
    if (ready()) return true;
    tg_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return false;
  }
}

static void tg_worker(tg_pool* P, int id, long seen) {
  for (;;) {
    long g = 0;
    void (*fn)(void*, int, int) = nullptr;
    void* arg = nullptr;
    int n = 0;
    auto fresh = [&] {  // a job published after `seen`, read whole
      g = P->gen.load(std::memory_order_acquire);
      if (g == seen || (g & 1)) return false;
      fn = P->fn.load(std::memory_order_relaxed);
      arg = P->arg.load(std::memory_order_relaxed);
      n = P->n.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      return P->gen.load(std::memory_order_relaxed) == g;
    };
    if (!tg_spin(fresh)) {
      std::unique_lock<std::mutex> lk(P->m);
      ++P->sleeping;
      P->wake.wait(lk, [&] { return P->gen.load(std::memory_order_acquire) != seen; });
      --P->sleeping;
      lk.unlock();
      while (!fresh()) tg_relax();
    }
    seen = g;
    if (id >= n) continue;
    fn(arg, id, n);
    if (P->left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(P->m);
      P->done.notify_one();
    }
  }
}

template <typename F> static void tg_call(void* f, int id, int n) { (*(F*)f)(id, n); }

static bool tg_grow(tg_pool* P, int n) {  // at least n - 1 workers? (P->m held)
  try {
    for (; P->workers < n - 1; ++P->workers) std::thread(tg_worker, P, P->workers + 1, P->gen.load()).detach();
  } catch (...) {
    return false;
  }
  return true;
}

// Runs f(id, n) for id = 0..n-1 at once on n threads (this one runs id 0) of a pool with no
// other job; false, with nothing run, where the threads cannot be had.
static std::atomic<long> tg_jobs{0};
extern "C" long tg_pool_jobs() { return tg_jobs.load(); }  // jobs run on this library's pool
template <typename F> static bool tg_run(tg_pool* P, int n, F& f) {
  tg_jobs.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(P->m);
    if (!tg_grow(P, n)) return false;
  }
  P->left.store(n - 1, std::memory_order_relaxed);
  P->gen.fetch_add(1, std::memory_order_relaxed);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  P->fn.store(tg_call<F>, std::memory_order_relaxed);
  P->arg.store((void*)&f, std::memory_order_relaxed);
  P->n.store(n, std::memory_order_relaxed);
  P->gen.fetch_add(1, std::memory_order_release);  // even: published
  {
    std::lock_guard<std::mutex> g(P->m);
    if (P->sleeping) P->wake.notify_all();
  }
  f(0, n);
  if (!tg_spin([&] { return P->left.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock<std::mutex> lk(P->m);
    P->done.wait(lk, [&] { return P->left.load(std::memory_order_acquire) == 0; });
  }
  return true;
}

// f(id, n) for id = 0..n-1 on n threads of this library's pool, returning when all are done;
// f(0, 1) alone where the pool is busy (a BLAS call from another thread) or workers cannot be
// started.
template <typename F> static void tg_parallel_here(int n, F& f) {
  tg_pool* P = n > 1 ? tg_get_pool() : nullptr;
  if (P == nullptr || !P->busy.try_lock()) { f(0, 1); return; }
  const bool ran = tg_run(P, n, f);
  P->busy.unlock();
  if (!ran) f(0, 1);
}
// Every kernel library has the code of a pool, but a process runs one: the first library
// loaded owns it (and runs NumPy's BLAS jobs), and Python hands every later one the owner's
// tg_pool_run (tg_set_pool).
typedef void (*tg_job_t)(void*, int, int);
static void (*tg_owner_run)(int, tg_job_t, void*) = nullptr;
extern "C" void tg_set_pool(void* run) { tg_owner_run = (void (*)(int, tg_job_t, void*))run; }
extern "C" void tg_pool_run(int n, tg_job_t fn, void* arg) {
  auto f = [&](int id, int k) { fn(arg, id, k); };
  tg_parallel_here(n, f);
}
// f(id, n) for id = 0..n-1 at once on the process's pool (see tg_parallel_here)
template <typename F> static void tg_parallel(int n, F& f) {
  if (n > 1 && tg_owner_run != nullptr) tg_owner_run(n, tg_call<F>, (void*)&f);
  else tg_parallel_here(n, f);
}

// OpenBLAS's threading callback: its jobs of one call must all run at once (its level-3
// threads wait on each other), one call at a time.
typedef void (*tg_dojob_t)(int, void*, int);
static std::atomic<long> tg_blas_calls{0};
extern "C" long tg_blas_pool_calls() { return tg_blas_calls.load(); }  // BLAS calls run on the pool
extern "C" void tg_blas_jobs(int sync, tg_dojob_t dojob, int numjobs, size_t elsize, void* jobdata, int dojob_data) {
  (void)sync;  // OpenBLAS always waits for its jobs
  tg_blas_calls.fetch_add(1, std::memory_order_relaxed);
  auto job = [&](int id, int) { dojob(id, (char*)jobdata + (size_t)id * elsize, dojob_data); };
  if (numjobs <= 1) { job(0, 1); return; }
  tg_pool* P = tg_get_pool();
  std::lock_guard<std::mutex> g(P->busy);
  if (!tg_run(P, numjobs, job)) {
    std::fprintf(stderr, "tinygrad_rnn: cannot start %d threads for a BLAS call\n", numjobs);
    std::abort();  // run one by one, the jobs would wait on each other for ever
  }
}

// Workers for the BLAS callback started before it is handed over (0: none could be).
extern "C" int tg_start_workers(int n) {
  tg_pool* P = tg_get_pool();
  std::lock_guard<std::mutex> g(P->m);
  return tg_grow(P, n) ? 1 : 0;
}

// How many threads a host loop may use: `threads` if positive, else as many as NumPy's BLAS
// is set to (1 where unknown), at most one per core.
static int tg_threads(int threads) {
  if (threads > 0) return threads;
  int n = tg_blas_threads ? tg_blas_threads() : 1;
  const int cores = (int)std::thread::hardware_concurrency();
  if (cores > 0 && n > cores) n = cores;
  return n < 1 ? 1 : n;
}

// A kernel call runs on the pool's threads from this much work (elements, times the row loop
// its body runs for each where the kernel says so): about 10 us of simple arithmetic, against
// a few us to hand the halves out. Where n is below, one thread runs it, as before.
#ifndef TG_SPLIT_WORK
#define TG_SPLIT_WORK 32768
#endif
// thread id's first element of n split over nt, on a multiple of `grain` (whole cache lines
// of output per thread)
static inline ptrdiff_t tg_cut(ptrdiff_t n, int id, int nt, ptrdiff_t grain) {
  if (id >= nt) return n;
  const ptrdiff_t c = n * id / nt / grain * grain;
  return c < n ? c : n;
}

// A barrier for the n threads of one tg_parallel job (all running at once): spins, yielding the
// core now and then in case it is shared.
struct tg_barrier {
  std::atomic<int> count{0}, phase{0};
  const int n;
  explicit tg_barrier(int n_) : n(n_) {}
  void wait() {
    if (n == 1) return;
    const int ph = phase.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      phase.store(ph + 1, std::memory_order_release);
      return;
    }
    for (int i = 1; phase.load(std::memory_order_acquire) == ph; ++i) {
      tg_relax();
      if (i % 4096 == 0) std::this_thread::yield();
    }
  }
};

// C <- A W for a small A (M, K) against a W (K, N) that many calls share (a recurrent weight
// over all the steps of a sequence): W is packed once (tg_pack) into panels of NR columns,
// k-major and zero-padded, and each (MR rows x NR columns) block of C is summed in registers
// over k (GCC's vector extension: AVX-512 where the CPU has it, else 256-bit lanes). Where
// OpenBLAS re-packs W at every call, this runs a (32, 256) x (256, 768) product in 63 us on one
// thread (200 GFLOP/s, FMA-bound), against OpenBLAS's 67-70 us on two (a 2-core Xeon, AVX-512).
// Each element of C is one sum over k in order, whichever block or thread it falls in: results
// do not depend on how rows and columns are split.
#if defined(__AVX512F__)
#define TG_VB 64
#define TG_MR 8
#else
#define TG_VB 32
#define TG_MR 6
#endif
template <typename T> struct tg_pk {
  typedef T vec __attribute__((vector_size(TG_VB)));
  static constexpr int L = TG_VB / sizeof(T), NR = 2 * L, MR = TG_MR;
  static ptrdiff_t size(ptrdiff_t K, ptrdiff_t N) { return (N + NR - 1) / NR * K * NR; }
};
// Wp <- W (K, N), rows ldw apart, packed (tg_pk::size(K, N) elements); trans: W is stored
// as its transpose (N, K), rows ldw apart (the recurrent weight (G, H) for h W^T)
template <typename T>
static void tg_pack(ptrdiff_t K, ptrdiff_t N, const T* W, ptrdiff_t ldw, T* Wp, bool trans = false,
                    ptrdiff_t p0 = 0, ptrdiff_t p1 = -1) {  // panels p0 .. p1 - 1 only (-1: to the last)
  const int NR = tg_pk<T>::NR;
  for (ptrdiff_t p = p0; p * NR < N && (p1 < 0 || p < p1); ++p)
    for (ptrdiff_t k = 0; k < K; ++k)
      for (int j = 0; j < NR; ++j) {
        const ptrdiff_t c = p * NR + j;
        Wp[(p * K + k) * NR + j] = c < N ? (trans ? W[c * ldw + k] : W[k * ldw + c]) : T(0);
      }
}
template <typename T, int R>
static inline void tg_pblock(ptrdiff_t K, const T* a, const T* wp, T* out, ptrdiff_t ldo, int cols) {
  typedef typename tg_pk<T>::vec vec;
  const int L = tg_pk<T>::L;
  vec c0[R], c1[R];  // indexed by constants only (loops unrolled), so they stay in registers
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = vec{};
  for (ptrdiff_t k = 0; k < K; ++k) {
    vec w0, w1;
    std::memcpy(&w0, wp + k * 2 * L, sizeof w0);
    std::memcpy(&w1, wp + k * 2 * L + L, sizeof w1);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const T av = a[r * K + k];
      c0[r] += w0 * av;
      c1[r] += w1 * av;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    T* o = out + r * ldo;
    if (cols == 2 * L) {
      std::memcpy(o, &c0[r], sizeof(vec));
      std::memcpy(o + L, &c1[r], sizeof(vec));
    } else {  // a cut panel
      T row[2 * L];
      std::memcpy(row, &c0[r], sizeof(vec));
      std::memcpy(row + L, &c1[r], sizeof(vec));
      for (int j = 0; j < cols; ++j) o[j] = row[j];
    }
  }
}
// C (M, N), rows ldc apart, <- A (M, K) W, with W packed by tg_pack(K, N, ...). Rows go in
// chunks whose A stays in L2 while every panel of W passes over it.
template <typename T>
static void tg_pgemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T* A, const T* Wp, T* C, ptrdiff_t ldc) {
  const int NR = tg_pk<T>::NR, MR = tg_pk<T>::MR;
  ptrdiff_t MC = (ptrdiff_t)(128 * 1024 / sizeof(T)) / (K > 0 ? K : 1) / MR * MR;
  if (MC < MR) MC = MR;
  for (ptrdiff_t m0 = 0; m0 < M; m0 += MC) {
    const ptrdiff_t m1 = m0 + MC < M ? m0 + MC : M;
    for (ptrdiff_t p = 0; p * NR < N; ++p) {
      const int cols = (int)(N - p * NR < NR ? N - p * NR : NR);
      const T* wp = Wp + p * K * NR;
      T* c = C + p * NR;
      ptrdiff_t r = m0;
      for (; r + MR <= m1; r += MR) tg_pblock<T, MR>(K, A + r * K, wp, c + r * ldc, ldc, cols);
      // the last rows in blocks of 4, 2 and 1
      for (; r + 4 <= m1; r += 4) tg_pblock<T, 4>(K, A + r * K, wp, c + r * ldc, ldc, cols);
      for (; r + 2 <= m1; r += 2) tg_pblock<T, 2>(K, A + r * K, wp, c + r * ldc, ldc, cols);
      for (; r < m1; ++r) tg_pblock<T, 1>(K, A + r * K, wp, c + r * ldc, ldc, cols);
    }
  }
}

// Column segments of a W (K, N) packed for tg_pgemm: C[:, off_s : off_s + width_s] <- A W[:, same]
// for each segment s (a thread's share of the columns: its hidden units of every gate).
template <typename T> struct tg_packed {
  ptrdiff_t K = 0;
  std::vector<ptrdiff_t> off, width, at;
  std::vector<T> buf;
  T* wp = nullptr;  // in buf, on a 64-byte boundary: a vector load across two cache lines costs two
  void add(ptrdiff_t o, ptrdiff_t w) {
    if (w > 0) { off.push_back(o); width.push_back(w); }
  }
  void pack(ptrdiff_t K_, const T* W, ptrdiff_t ldw, bool trans = false) {  // W as tg_pack's
    layout(K_);
    pack_part(W, ldw, trans, 0, 1);
  }
  // pack() in two halves, for threads that share one packed W: layout() on one thread, then
  // pack_part(..., id, nt) on each of nt (its share of the panels), then a barrier
  void layout(ptrdiff_t K_) {
    K = K_;
    ptrdiff_t n = 0;
    at.clear();
    for (ptrdiff_t w : width) { at.push_back(n); n += tg_pk<T>::size(K, w); }
    buf.resize(n + 64 / sizeof(T));
    wp = buf.data() + ((64 - (uintptr_t)buf.data() % 64) % 64) / sizeof(T);
  }
  void pack_part(const T* W, ptrdiff_t ldw, bool trans, int id, int nt) {
    const int NR = tg_pk<T>::NR;
    ptrdiff_t panels = 0;
    for (ptrdiff_t w : width) panels += (w + NR - 1) / NR;
    const ptrdiff_t q0 = panels * id / nt, q1 = panels * (id + 1) / nt;
    ptrdiff_t first = 0;  // the segment's first panel in the count over all segments
    for (size_t s = 0; s < off.size(); first += (width[s] + NR - 1) / NR, ++s) {
      const ptrdiff_t lo = q0 > first ? q0 - first : 0, hi = q1 - first;
      if (hi > lo)
        tg_pack<T>(K, width[s], W + off[s] * (trans ? ldw : 1), ldw, wp + at[s], trans, lo, hi);
    }
  }
  void gemm(ptrdiff_t M, const T* A, T* C, ptrdiff_t ldc) const {
    for (size_t s = 0; s < off.size(); ++s) tg_pgemm<T>(M, width[s], K, A, wp + at[s], C + off[s], ldc);
  }
};
"""

# Flags tried in order: the first set the compiler accepts is used. -fno-trapping-math and
# -fno-math-errno let the compiler vectorise selects and sqrt (results do not change: no
# code here reads errno or traps); -march=native builds for this CPU's vector width,
# which is why the cache key names the CPU. Not -ffast-math: it would drop NaN checks.
# Not OpenMP threads: they spin against OpenBLAS's own on the same cores (measured 10x
# slower training steps on 2 cores).
_SAFE = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
FLAG_SETS = (
    _SAFE + ["-march=native", "-mprefer-vector-width=256", "-fopenmp-simd"],
    _SAFE + ["-march=native", "-fopenmp-simd"],
    _SAFE,
)
_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_C_ARG = {"int": ctypes.c_int, "scalar": ctypes.c_double}
_INT64 = np.dtype(np.int64)
_C_TYPE = {"_f32": "float", "_f64": "double"}


def parse_params(spec):
    """'T a, raw T b, raw int64 k, int32 n, float64 s' -> [(kind, name)], kind 'elem', 'raw',
    'index' (a raw int64 array), 'int' or 'scalar'."""
    out = []
    for p in spec.split(","):
        toks = p.split()
        if toks[0] == "raw" and len(toks) == 3 and toks[1] == "T":
            out.append(("raw", toks[2]))
        elif toks[0] == "raw" and len(toks) == 3 and toks[1] == "int64":
            out.append(("index", toks[2]))
        elif toks[0] == "int32" and len(toks) == 2:
            out.append(("int", toks[1]))
        elif toks[0] == "float64" and len(toks) == 2:
            out.append(("scalar", toks[1]))
        elif toks[0] == "T" and len(toks) == 2:
            out.append(("elem", toks[1]))
        else:
            raise ValueError(f"kernel parameter {p.strip()!r}: expected 'T name', 'raw T name', "
                             f"'raw int64 name', 'int32 name' or 'float64 name'")
    return out


def _host_params(signature):
    """'int n, const T* x, T* y' -> [('int' or 'ptr', name)]."""
    out = []
    for p in signature.split(","):
        p = p.strip()
        name = p.replace("*", " ").split()[-1]
        out.append(("ptr" if "*" in p else "int", name))
    return out


def host_source(family, kernels, preamble="", host=None):
    """The C++ source of an op family's kernels, each as extern "C" NAME_f32 and NAME_f64,
    and of its host functions (a backend.HostCode) likewise."""
    parts = [HOST_PRELUDE, preamble]
    for name, k in kernels.items():
        ins, outs = parse_params(k.in_params), parse_params(k.out_params)
        sig, loads = [], []
        for role, params in (("in", ins), ("out", outs)):
            for kind, p in params:
                if kind == "int":
                    sig.append(f"int {p}")
                elif kind == "scalar":
                    sig.append(f"double {p}")
                elif kind == "index":
                    sig.append(f"const int64_t* {p}")
                elif kind == "raw":
                    sig.append(f"{'const ' if role == 'in' else ''}T* {p}")
                else:
                    sig.append(f"{'const ' if role == 'in' else ''}T* {p}_p")
                    loads.append(f"const T {p} = {p}_p[i];" if role == "in" else f"T& {p} = {p}_p[i];")
        loads = " ".join(loads)
        names = [p + "_p" if kind == "elem" else p for kind, p in ins + outs]
        args = ", ".join(names)
        if k.row is None:  # NAME_part: elements i0 .. i1 - 1
            parts.append(f"template <typename T>\nstatic void {name}_part({', '.join(sig)}, ptrdiff_t i0, "
                         f"ptrdiff_t i1) {{\n#pragma omp simd\n  for (ptrdiff_t i = i0; i < i1; ++i) {{\n"
                         f"    {loads}\n{k.body}\n  }}\n}}\n"
                         f"template <typename T>\nstatic void {name}_impl({', '.join(sig)}, ptrdiff_t n) {{\n"
                         f"  {name}_part<T>({args}, 0, n);\n}}\n")
            split = f"const ptrdiff_t lo = tg_cut(n, id, nt, 64), hi = tg_cut(n, id + 1, nt, 64); " \
                    f"{name}_part<T>({args}, lo, hi);"
        else:  # NAME_part: rows b0 .. b1 - 1, columns j0 .. j1 - 1 (host loops split them over threads)
            parts.append(f"template <typename T>\nstatic void {name}_part({', '.join(sig)}, ptrdiff_t b0, "
                         f"ptrdiff_t b1, ptrdiff_t j0, ptrdiff_t j1) {{\n"
                         f"  for (ptrdiff_t b = b0; b < b1; ++b) {{\n"
                         f"#pragma omp simd\n"
                         f"    for (ptrdiff_t j = j0; j < j1; ++j) {{\n"
                         f"      const ptrdiff_t i = b * {k.row} + j;\n      {loads}\n{k.body}\n    }}\n  }}\n}}\n"
                         f"template <typename T>\nstatic void {name}_cols({', '.join(sig)}, ptrdiff_t rows, "
                         f"ptrdiff_t j0, ptrdiff_t j1) {{\n  {name}_part<T>({args}, 0, rows, j0, j1);\n}}\n"
                         f"template <typename T>\nstatic void {name}_impl({', '.join(sig)}, ptrdiff_t n) {{\n"
                         f"  {name}_cols<T>({args}, n / {k.row}, 0, {k.row});\n}}\n")
            split = f"const ptrdiff_t rows = n / {k.row}; " \
                    f"{name}_part<T>({args}, tg_cut(rows, id, nt, 1), tg_cut(rows, id + 1, nt, 1), 0, {k.row});"
        # the exported entry: a call with enough work runs on the pool's threads, each its share
        # of the elements (rows); not a kernel whose rows add into shared places (tg_atomic_add)
        if "tg_atomic_add" in k.body:
            entry = f"{name}_impl<T>({args}, n);"
        else:
            work = "n" if k.work is None else f"n * (ptrdiff_t)({k.work} > 1 ? {k.work} : 1)"
            entry = (f"const int threads = {work} >= TG_SPLIT_WORK ? tg_threads(0) : 1;\n"
                     f"  if (threads < 2) {{ {name}_impl<T>({args}, n); return; }}\n"
                     f"  auto part = [&](int id, int nt) {{ {split} }};\n"
                     f"  tg_parallel(threads, part);")
        parts.append(f"template <typename T>\nstatic void {name}_entry({', '.join(sig)}, ptrdiff_t n) {{\n"
                     f"  {entry}\n}}\n")
        for sfx, ctype in _C_TYPE.items():
            csig = ", ".join(s.replace("T*", f"{ctype}*") for s in sig)
            parts.append(f'extern "C" void {name}{sfx}({csig}, ptrdiff_t n) '
                         f'{{ {name}_entry<{ctype}>({args}, n); }}\n')
    if host is not None:
        parts.append(host.source)
        for name, signature in host.functions.items():
            names = ", ".join(p for _, p in _host_params(signature))
            for sfx, ctype in _C_TYPE.items():
                csig = signature.replace("T*", f"{ctype}*")
                parts.append(f'extern "C" int {name}{sfx}({csig}) {{ return {name}<{ctype}>({names}); }}\n')
    return f"// {family}: elementwise kernels, built by tinygrad_rnn/cpu_kernels.py\n" + "\n".join(parts)


# ----------------------------------------------------------------------------- calling
def _data_pointer_reader():
    """A fast `array -> address of its first element`. NumPy's own (`a.ctypes.data`) costs
    3 us (0.5 us this way), which at six arrays a call and two calls a timestep is 6% of an
    LSTM H=128 step; CPython's array object keeps the pointer right after the object header,
    read here directly, and checked once against `.ctypes.data` (anything else uses that)."""
    if platform.python_implementation() == "CPython":
        off = object.__basicsize__
        at = ctypes.c_void_p.from_address
        probe = np.empty(3)
        try:
            if at(id(probe) + off).value == probe.ctypes.data and at(id(probe[1:]) + off).value == probe[1:].ctypes.data:
                return lambda a: at(id(a) + off).value
        except (ValueError, OverflowError):
            pass
    return lambda a: a.ctypes.data


_data_pointer = _data_pointer_reader()


class HostKernel:
    """One compiled kernel: called like CuPy's ElementwiseKernel, with the inputs and then
    the outputs in declared order (arrays and numbers). Arrays are NumPy arrays of one float
    dtype (other strides go through a row-major copy); the size of the loop is that of the
    first non-raw array."""

    def __init__(self, family, name, kernel, lib):
        self.name = f"{family}.{name}"
        self.params = parse_params(kernel.in_params) + parse_params(kernel.out_params)
        self.row = kernel.row
        self._fns = {}
        for dt, sfx in _SUFFIX.items():
            fn = getattr(lib, name + sfx)
            fn.restype = None
            fn.argtypes = [_C_ARG.get(kind, ctypes.c_void_p) for kind, _ in self.params] + [ctypes.c_ssize_t]
            self._fns[dt] = fn
        self._elems = [k for k, (kind, _) in enumerate(self.params) if kind == "elem"]
        self._arrays = [k for k, (kind, _) in enumerate(self.params) if kind in ("elem", "raw")]
        self._indices = [k for k, (kind, _) in enumerate(self.params) if kind == "index"]
        self._n_in = len(parse_params(kernel.in_params))
        self._row_arg = None if kernel.row is None else [p for _, p in self.params].index(kernel.row)

    def __repr__(self):
        return f"<CPU kernel {self.name}>"

    def __call__(self, *args):
        # called twice a timestep: the usual case (row-major arrays of one dtype) checks each
        # argument once and reads its pointer; anything else goes the long way round
        if len(args) != len(self.params):
            raise TypeError(f"kernel {self.name}: takes {len(self.params)} arguments "
                            f"({', '.join(p for _, p in self.params)}), got {len(args)}")
        first = args[self._elems[0]]
        dt = first.dtype
        fn = self._fns.get(dt)
        if fn is None:
            raise DTypeError(f"kernel {self.name}: runs on float32 or float64 arrays, got {dt}")
        conv = list(args)
        ptr = _data_pointer
        for k in self._arrays:
            a = args[k]
            if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous:
                return self._call_general(fn, dt, args)
            conv[k] = ptr(a)
        for k in self._indices:
            a = args[k]
            if type(a) is not np.ndarray or a.dtype != _INT64 or not a.flags.c_contiguous:
                return self._call_general(fn, dt, args)
            conv[k] = ptr(a)
        n = first.size
        self._check_sizes(args, n)
        fn(*conv, n)

    def _call_general(self, fn, dt, args):
        conv, write_back = list(args), []
        for k in self._arrays:
            a, p = args[k], self.params[k][1]
            if type(a) is not np.ndarray or a.dtype != dt:
                raise DTypeError(f"kernel {self.name}: argument {p} must be a {dt} NumPy array like the "
                                 f"others, got {getattr(a, 'dtype', type(a).__name__)}")
            if not a.flags.c_contiguous:  # as CuPy takes any strides: through a row-major copy
                c = np.ascontiguousarray(a)
                if k >= self._n_in:
                    write_back.append((a, c))
                a = c
            conv[k] = _data_pointer(a)
        for k in self._indices:
            a, p = args[k], self.params[k][1]
            if type(a) is not np.ndarray or a.dtype.kind not in "iu":
                raise DTypeError(f"kernel {self.name}: argument {p} must be an integer NumPy array, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)}")
            a = np.ascontiguousarray(a, dtype=_INT64)
            conv[k] = _data_pointer(a)
            args = args[:k] + (a,) + args[k + 1:]  # kept alive through the call
        n = args[self._elems[0]].size
        self._check_sizes(args, n)
        fn(*conv, n)
        for a, c in write_back:
            a[...] = c

    def _check_sizes(self, args, n):
        for k in self._elems[1:]:
            if args[k].size != n:
                raise ShapeError(f"kernel {self.name}: the elementwise arguments must have one size; "
                                 f"{self.params[self._elems[0]][1]} has {n} elements, {self.params[k][1]} "
                                 f"{args[k].size}")
        if self._row_arg is not None:
            row = args[self._row_arg]
            if row <= 0 or n % row:
                raise ShapeError(f"kernel {self.name}: {n} elements are not whole rows of {self.row}={row}")


class HostFunction:
    """One compiled host function (backend.HostCode): arrays (row-major, of one float dtype,
    which picks the float32 or float64 build), None for a null pointer, and ints."""

    def __init__(self, family, name, signature, lib):
        self.name = f"{family}.{name}"
        self.params = _host_params(signature)
        self._fns = {}
        for dt, sfx in _SUFFIX.items():
            fn = getattr(lib, name + sfx)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p if kind == "ptr" else ctypes.c_int for kind, _ in self.params]
            self._fns[dt] = fn

    def __repr__(self):
        return f"<CPU host function {self.name}>"

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"host function {self.name}: takes {len(self.params)} arguments, got {len(args)}")
        dt = next(a.dtype for a in args if isinstance(a, np.ndarray))
        conv = list(args)
        for k, (kind, p) in enumerate(self.params):
            a = args[k]
            if kind == "ptr" and a is not None:
                if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous:
                    raise DTypeError(f"host function {self.name}: argument {p} must be a row-major {dt} NumPy "
                                     f"array, got {getattr(a, 'dtype', type(a).__name__)}")
                conv[k] = _data_pointer(a)
        return self._fns[dt](*conv)


_blas = False


class Blas(typing.NamedTuple):
    """What host code takes from the BLAS library NumPy's matmul calls: function addresses."""
    path: str
    get_num_threads: typing.Optional[int]  # OpenBLAS's; None elsewhere
    set_threads_callback: typing.Optional[int]  # OpenBLAS >= 0.3.27's, to run its jobs on our pool


def numpy_blas():
    """The Blas of the library NumPy's matmul calls (found by its cblas_sgemm, whose integer
    width must match NumPy's build configuration); None where it cannot be found for certain
    (not Linux, an unknown library, older NumPy). Host loops then run on one thread."""
    global _blas
    if _blas is not False:
        return _blas
    _blas = None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return None
    paths = sorted(p for p in paths if "blas" in os.path.basename(p).lower())
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        cfg = " ".join(str(v) for v in cfg.values())
    except Exception:  # noqa: BLE001  (older NumPy: no configuration to check against)
        return None
    cfg_ilp64 = "USE64BITINT" in cfg or "ilp64" in cfg.lower()
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library
        except OSError:
            continue

        def address(*names):
            for name in names:
                if hasattr(lib, name):
                    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            return None
        for prefix in ("scipy_", ""):
            for suffix, ilp64 in (("64_", True), ("", False)):
                if address(f"{prefix}cblas_sgemm{suffix}") is None:
                    continue
                if ilp64 != cfg_ilp64:
                    continue  # another BLAS in the process (SciPy's, say), not the one NumPy was built with
                _blas = Blas(path, address(f"{prefix}openblas_get_num_threads{suffix}", "openblas_get_num_threads"),
                             address(f"{prefix}openblas_set_threads_callback_function{suffix}",
                                     "openblas_set_threads_callback_function"))
                return _blas
    return None


# Set to "0" to leave NumPy's BLAS on its own threads (host loops then run on one thread:
# beside BLAS's idle threads, which spin ~0.1 s after every call, a second one gains nothing).
SHARE_ENV = "TINYGRAD_RNN_SHARE_BLAS_THREADS"
_shared_pool = None  # the library whose pool runs NumPy's BLAS jobs, once handed over


def _share_blas_threads(blas, lib):
    """Hands NumPy's BLAS jobs to lib's thread pool (tg_blas_jobs), so that BLAS calls, host
    loops and kernels share one set of threads: True where lib's pool is the one (the first
    kernel library loaded; every later one runs its threads' work on that pool, _join_pool)."""
    global _shared_pool
    if _shared_pool is not None:
        return _shared_pool is lib
    if (blas.set_threads_callback is None or blas.get_num_threads is None
            or os.environ.get(SHARE_ENV, "1").strip().lower() in ("0", "false", "no", "off")):
        return False
    threads = ctypes.CFUNCTYPE(ctypes.c_int)(blas.get_num_threads)()
    if not lib.tg_start_workers(threads):
        return False
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(blas.set_threads_callback)(
        ctypes.cast(lib.tg_blas_jobs, ctypes.c_void_p).value)
    _shared_pool = lib  # kept loaded: BLAS calls into it from now on
    return True


def _join_pool(lib):
    """Where the process's pool runs NumPy's BLAS jobs (lib's own, if lib is the first library
    loaded, else the owner's, handed to lib), lib learns BLAS's thread count for its host loops
    and kernels; else they run on one thread, beside BLAS's own."""
    blas = numpy_blas()
    shared = blas is not None and _share_blas_threads(blas, lib)
    if blas is not None and not shared and _shared_pool is not None:
        lib.tg_set_pool(ctypes.cast(_shared_pool.tg_pool_run, ctypes.c_void_p))
        shared = True
    lib.tg_set_blas_threads(ctypes.c_void_p(blas.get_num_threads if shared else None))


def _host_functions(family, host, lib):
    """{name: HostFunction}"""
    return {name: HostFunction(family, name, sig, lib) for name, sig in host.functions.items()}


# ----------------------------------------------------------------------------- building
def enabled_by_env():
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def find_compiler():
    """The host C++ compiler: $CXX if set (None if it names nothing runnable), else c++, g++
    or clang++ on the PATH; None if there is none."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    for c in ("c++", "g++", "clang++"):
        p = shutil.which(c)
        if p:
            return p
    return None


def cache_dir():
    d = os.environ.get("TINYGRAD_RNN_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tinygrad_rnn")
    return d


def _cpu_identity():
    """What the compiled code depends on: the machine and its instruction set extensions."""
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    ident.append(line.strip())
                if line.strip() == "":
                    break  # the first processor says it for all
    except OSError:
        ident.append(platform.processor())
    return "\n".join(ident)


_lock = threading.Lock()


def build(family, kernels, preamble="", host=None):
    """{name: HostKernel} for the family (and its host functions, see backend.HostCode), or
    None (with a KernelBuildWarning if a compiler was there but the build failed)."""
    cxx = find_compiler()
    if cxx is None:
        if os.environ.get("CXX"):
            warnings.warn(f"tinygrad_rnn: CXX={os.environ['CXX']!r} is not a program on the PATH, so the CPU "
                          f"kernels of {family!r} are not built and the portable NumPy form runs",
                          KernelBuildWarning, stacklevel=3)
        return None  # no compiler: the portable form, silently (it is a supported setup)
    src = host_source(family, kernels, preamble, host)
    with _lock:
        errors = []
        for flags in FLAG_SETS:
            key = hashlib.sha256("\0".join([src, cxx, " ".join(flags), _cpu_identity()]).encode()).hexdigest()[:20]
            path = os.path.join(cache_dir(), f"{family}-{key}.so")
            failed = path[:-3] + ".failed"  # remembered, so later runs do not retry flags that failed
            if os.path.exists(failed):
                with open(failed) as f:
                    errors.append(f.read())
                continue
            if not os.path.exists(path):
                err = _compile(cxx, flags, src, path)
                if err is not None:
                    errors.append(f"{os.path.basename(cxx)} {' '.join(flags)}: {err}")
                    try:
                        with open(failed, "w") as f:
                            f.write(errors[-1])
                    except OSError:
                        pass
                    continue
            try:
                lib = ctypes.CDLL(path)
                built = {name: HostKernel(family, name, k, lib) for name, k in kernels.items()}
                _join_pool(lib)
                if host is not None:
                    built.update(_host_functions(family, host, lib))
                return built
            except (OSError, AttributeError) as e:
                errors.append(f"loading {path}: {e}")
        warnings.warn(f"tinygrad_rnn: could not build the CPU kernels of {family!r}, so the portable NumPy "
                      f"form runs (slower, same results); set {ENV_SWITCH}=0 to stop trying. "
                      + " | ".join(errors), KernelBuildWarning, stacklevel=3)
        return None


def _compile(cxx, flags, src, path):
    """Compile src into path (atomically: a finished file or none); None, or what went wrong."""
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        return f"cannot create the cache directory {d}: {e}"
    with tempfile.TemporaryDirectory(prefix="tg-kernels-") as tmp:
        cpp, so = os.path.join(tmp, "k.cpp"), os.path.join(tmp, "k.so")
        with open(cpp, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([cxx, *flags, "-shared", "-fPIC", "-o", so, cpp], capture_output=True, text=True,
                               timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            return " / ".join(lines[:3]) or f"exit status {r.returncode}"
        try:  # another process may be building the same file: the rename is atomic either way
            fd, part = tempfile.mkstemp(dir=d, suffix=".part")
            os.close(fd)
            shutil.copyfile(so, part)
            os.replace(part, path)
        except OSError as e:
            return f"cannot write {path}: {e}"
    return None
