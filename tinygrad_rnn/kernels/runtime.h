// tinygrad_rnn's C++ runtime for the CPU kernels: the math kernel bodies call, the one thread
// pool, the hook that hands NumPy's OpenBLAS jobs to that pool, and the packed GEMM of the host
// loops. kernels/cpu.py compiles it at the top of every kernel library (a generated translation
// unit #includes it, then the family's generated kernel loops and its own loops, ops/rnn.cpp).
//
// Math, in the host's form. The float32 functions are written so that the compiler vectorises
// them (plain arithmetic and selects, no calls):
// - exp(y) = 2^n exp(r), n = round(y / ln 2), r = y - n ln 2 in two parts (|r| <= ln 2 / 2),
//   exp(r) by its Taylor series to r^7 (truncation 6e-9), 2^n built from its bits;
// - tanh: for |x| < 0.55, x + x^3 P(x^2), P of degree 4 fitted by weighted least squares at
//   4,000 Chebyshev points (relative error 1.1e-9 before rounding); otherwise
//   1 - 2 / (exp(2|x|) + 1), |x| clamped at 10 (tanh(10) rounds to 1), the sign put back;
// - sigmoid: 1 / (1 + exp(-x)), 0 where the exact value is below FLT_MIN (x < -87.3365);
//   exp itself likewise 0 below that, and inf above FLT_MAX's log;
// - NaN passes through both.
// Measured over 2.5 million float32 inputs from 1e-40 to 100 against float64: tanh within
// 1.4 ulp (NumPy's float32 tanh: 1.4), sigmoid within 2.5; tests/test_rnn_kernels.py holds
// them to 2 and 3. The float64 functions are the C library's tanh and the portable form's
// sigmoid, so float64 results (what the gradient checks see) match the portable ones.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
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
// For fewer than 5 rows GCC folds W's loads into the FMAs, one 64-byte load per FMA, and the
// block runs at half speed, load-bound (4 rows: as slow as 8); held in registers, each load
// feeds 2R FMAs (measured on Zen 4: 4 rows 40 -> 21 us for a (256, 1024) W, 3 rows 32 -> 18).
#if defined(__AVX__)  // the vectors fit one register (32 bytes: AVX; 64: AVX-512)
#define TG_IN_REGISTERS(a, b) __asm__("" : "+v"(a), "+v"(b))
#else
#define TG_IN_REGISTERS(a, b) ((void)0)
#endif
// A and C are row pointers (a[r], out[r] + o), so that a caller's rows need not be adjacent (a
// thread's rows of a packed batch); the compiler keeps R of them in registers either way.
template <typename T, int R>
static inline void tg_pblock(ptrdiff_t K, const T* const* a, const T* wp, T* const* out, ptrdiff_t o, int cols) {
  typedef typename tg_pk<T>::vec vec;
  const int L = tg_pk<T>::L;
  const T* ar[R];
  vec c0[R], c1[R];  // indexed by constants only (loops unrolled), so they stay in registers
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) { ar[r] = a[r]; c0[r] = c1[r] = vec{}; }
  for (ptrdiff_t k = 0; k < K; ++k) {
    vec w0, w1;
    std::memcpy(&w0, wp + k * 2 * L, sizeof w0);
    std::memcpy(&w1, wp + k * 2 * L + L, sizeof w1);
    TG_IN_REGISTERS(w0, w1);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const T av = ar[r][k];
      c0[r] += w0 * av;
      c1[r] += w1 * av;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    T* row = out[r] + o;
    if (cols == 2 * L) {
      std::memcpy(row, &c0[r], sizeof(vec));
      std::memcpy(row + L, &c1[r], sizeof(vec));
    } else {  // a cut panel
      T tmp[2 * L];
      std::memcpy(tmp, &c0[r], sizeof(vec));
      std::memcpy(tmp + L, &c1[r], sizeof(vec));
      for (int j = 0; j < cols; ++j) row[j] = tmp[j];
    }
  }
}
template <typename T>
static inline void tg_pblock_rows(int rows, ptrdiff_t K, const T* const* a, const T* wp, T* const* out, ptrdiff_t o,
                                  int cols) {
  switch (rows) {
    case 1: tg_pblock<T, 1>(K, a, wp, out, o, cols); break;
    case 2: tg_pblock<T, 2>(K, a, wp, out, o, cols); break;
    case 3: tg_pblock<T, 3>(K, a, wp, out, o, cols); break;
    case 4: tg_pblock<T, 4>(K, a, wp, out, o, cols); break;
    case 5: tg_pblock<T, 5>(K, a, wp, out, o, cols); break;
    case 6: tg_pblock<T, 6>(K, a, wp, out, o, cols); break;
#if TG_MR > 6
    case 7: tg_pblock<T, 7>(K, a, wp, out, o, cols); break;
    case 8: tg_pblock<T, 8>(K, a, wp, out, o, cols); break;
#endif
    default: break;
  }
}
// C[r][c0 : c0 + N] <- A[r] (K) W for r < M, with W packed by tg_pack(K, N, ...). Rows go in
// chunks whose A stays in L2 while every panel of W passes over it.
template <typename T>
static void tg_pgemm_rows(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T* const* A, const T* Wp, T* const* C,
                          ptrdiff_t c0) {
  const int NR = tg_pk<T>::NR, MR = tg_pk<T>::MR;
  ptrdiff_t MC = (ptrdiff_t)(128 * 1024 / sizeof(T)) / (K > 0 ? K : 1) / MR * MR;
  if (MC < MR) MC = MR;
  for (ptrdiff_t m0 = 0; m0 < M; m0 += MC) {
    const ptrdiff_t m1 = m0 + MC < M ? m0 + MC : M;
    for (ptrdiff_t p = 0; p * NR < N; ++p) {
      const int cols = (int)(N - p * NR < NR ? N - p * NR : NR);
      const T* wp = Wp + p * K * NR;
      // as few blocks as MR allows, their rows even: each block reads the whole panel, so 13
      // rows as 7 + 6 read it twice where 8 + 4 + 1 read it three times (a packed batch's
      // steps run every row count); the sums are the same whatever the blocks
      ptrdiff_t r = m0;
      for (ptrdiff_t left = (m1 - m0 + MR - 1) / MR; left > 0; --left) {
        const int rows = (int)((m1 - r + left - 1) / left);
        tg_pblock_rows<T>(rows, K, A + r, wp, C + r, c0 + p * NR, cols);
        r += rows;
      }
    }
  }
}
// C (M, N), rows ldc apart, <- A (M, K) W: tg_pgemm_rows on the rows' pointers
template <typename T>
static void tg_pgemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T* A, const T* Wp, T* C, ptrdiff_t ldc) {
  const ptrdiff_t CH = 16 * TG_MR;
  const T* ap[CH];
  T* cp[CH];
  for (ptrdiff_t m0 = 0; m0 < M; m0 += CH) {
    const ptrdiff_t m = M - m0 < CH ? M - m0 : CH;
    for (ptrdiff_t r = 0; r < m; ++r) { ap[r] = A + (m0 + r) * K; cp[r] = C + (m0 + r) * ldc; }
    tg_pgemm_rows<T>(m, N, K, ap, Wp, cp, 0);
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
  // the same on rows anywhere: C[r][off_s : off_s + width_s] <- A[r] W[:, same], r < M
  void gemm_rows(ptrdiff_t M, const T* const* A, T* const* C) const {
    for (size_t s = 0; s < off.size(); ++s) tg_pgemm_rows<T>(M, width[s], K, A, wp + at[s], C, off[s]);
  }
};
