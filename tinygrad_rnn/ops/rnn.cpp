// The sequence ops' loops over time in C++ for the CPU (ops/rnn.py's HOST): the same steps
// as _Sequence.forward and .backward there, in the same order, the recurrent GEMM on W_hh
// packed once per call (kernels/runtime.h's tg_pgemm), without the ~15 us of Python a step
// costs there (a tenth of an LSTM H=128 step). Each cell's functions share one parameter list,
// unused pointers null. hs, cs (T + 1, B, H); gx (T, B, G); act as _act_buffer; the steps run
// t = 0..T-1 (reverse: T-1..0) with the previous state at p and the new one at q.
//
// Not a program on its own: kernels/cpu.py compiles it inside the "rnn" family's translation
// unit, after runtime.h and the family's kernels (lstm_fwd_cols<T> & co., generated from
// ops/rnn.py's KERNELS), and exports each function for float32 and float64.
#define TG_STEP(s) const int t = reverse ? T_ - 1 - (s) : (s), p = reverse ? t + 1 : t, q = reverse ? t : t + 1
#define TG_BACK(s) const int t = reverse ? (s) : T_ - 1 - (s), p = reverse ? t + 1 : t, q = reverse ? t : t + 1

// The threads (tg_parallel) split a layer's work one of two ways, each running the whole
// sequence on its share. By batch rows, with at least 2 rows a thread: a row's states depend
// on that row alone, at every step both ways, so the threads never wait for each other
// (W_hh packed once, shared). Else by hidden units (its units of every gate: its columns of
// the recurrent GEMM, W_hh's columns packed by each thread), with one barrier a step, as the
// next step's GEMM reads every unit's state.
struct seq_split {
  bool by_rows;
  int n;
  ptrdiff_t r0, r1, j0, j1;  // thread id's rows and units, once at(id, nt) is called
  void at(int id, int nt, ptrdiff_t B, ptrdiff_t H, int L) {
    r0 = 0; r1 = B; j0 = 0; j1 = H;
    if (by_rows) {
      r0 = B * id / nt; r1 = B * (id + 1) / nt;
    } else {  // whole vectors where the units allow
      auto cut = [&](int k) { const ptrdiff_t j = (H * k / nt + L - 1) / L * L; return j < H ? j : H; };
      j0 = cut(id); j1 = id == nt - 1 ? H : cut(id + 1);
    }
  }
};
// a call's sizes: the states (B, H), the gates (B, G), the saved activations A a row
struct seq_dims {
  int gates;
  ptrdiff_t n, G, A;
  seq_dims(int cell, int B, int H)
      : gates(cell == 2 ? 4 : cell == 1 ? 3 : 1), n((ptrdiff_t)B * H), G((ptrdiff_t)gates * H),
        A(cell == 0 ? 0 : 4 * (ptrdiff_t)H) {}
};
// Packed batches (nn.utils.rnn; bs non-null): the rows sorted by length, step t runs the first
// bs[t] rows only, its rows of gx, act, d_out and the d gates packed at off[t] (no padding in
// them); the states keep their (T + 1, B, H) slots, of which each step reads and writes only
// its rows. Unpacked, bs[t] = B and off[t] = t B: the same loops as before.
struct seq_steps {
  std::vector<ptrdiff_t> off;
  const int* bs;
  int B;
  std::vector<ptrdiff_t> work;  // packed: work[r], the steps rows 0 .. r - 1 run in all
  seq_steps(const int* bs_, int T_, int B_) : off(T_ + 1), bs(bs_), B(B_) {
    off[0] = 0;
    for (int t = 0; t < T_; ++t) off[t + 1] = off[t] + rows(t);
    if (bs != nullptr) {
      work.assign(B + 1, 0);
      for (int r = 0, t = T_; r < B; ++r) {  // row r runs the steps t with bs[t] > r
        while (t > 0 && bs[t - 1] <= r) --t;
        work[r + 1] = work[r] + t;
      }
    }
  }
  // LSTMProjSequence's loops, split by rows: thread k's first row, so that each thread runs as
  // many row-steps (its rows' lengths added up) as the others, not as many rows (seq_fwd and
  // seq_bwd split a packed batch's rows anew at every step instead: resplit)
  ptrdiff_t cut(int k, int nt) const {
    ptrdiff_t r = 0;
    while (r < B && work[r] * nt < work[B] * k) ++r;
    return k == nt ? B : r;
  }
  int rows(int t) const { return bs == nullptr ? B : bs[t]; }
  // Packed, split by rows on several threads: each step's running rows are split evenly anew
  // (a barrier a step). With fixed rows (cut: each thread's rows' lengths even) one thread
  // keeps up to a long row's steps more than the others and the last steps run on one
  // thread: 5% of the loop's time at B=32, lengths 1..64, on 2 threads.
  bool resplit(bool by_rows, int nt) const { return by_rows && bs != nullptr && nt > 1; }
  // thread id's rows at step t: r0 .. r0 + mt - 1 (without resplit: those of me's rows)
  void mine(int t, const seq_split& me, bool resplit_, int id, int nt, ptrdiff_t& r0, ptrdiff_t& mt) const {
    if (resplit_) {
      r0 = (ptrdiff_t)rows(t) * id / nt;
      mt = (ptrdiff_t)rows(t) * (id + 1) / nt - r0;
    } else {
      r0 = me.r0;
      mt = active(t, r0, me.r1 - me.r0);
    }
  }
  // reverse, packed: thread id's share of the rows whose sequences end at step t - 1 (rows(t)
  // .. rows(t - 1) - 1), which step t hands their initial states
  void starting(int t, const seq_split& me, bool resplit_, int id, int nt, ptrdiff_t& lo, ptrdiff_t& hi) const {
    const ptrdiff_t a = rows(t), b = rows(t - 1);
    if (resplit_) {
      lo = a + (b - a) * id / nt;
      hi = a + (b - a) * (id + 1) / nt;
      return;
    }
    lo = a > me.r0 ? a : me.r0;
    hi = me.r0 + active(t - 1, me.r0, me.r1 - me.r0);
  }
  // of thread rows r0 .. r0 + m - 1, how many step t runs
  ptrdiff_t active(int t, ptrdiff_t r0, ptrdiff_t m) const {
    const ptrdiff_t a = rows(t) - r0;
    return a < 0 ? 0 : a < m ? a : m;
  }
};
static seq_split seq_plan(int threads, int B, int H) {
  const int n = tg_threads(threads);
  if (threads > 0) return B >= n ? seq_split{true, n} : seq_split{false, n < H ? n : H};
  const int rows = B / 2 < n ? B / 2 : n, cols = H / 32 < n ? H / 32 : n;  // 32 units a thread at least
  if (rows >= cols) return {true, rows < 1 ? 1 : rows};
  return {false, cols};
}

// forward: gh <- h_p W_hh^T (zeros at the first step without h0), then the cell
template <typename T>
static int seq_fwd(int cell, int T_, int B, int H, int reverse, int zero_h0, int relu, int threads, const T* gx,
                   const T* w_hh, const T* b_step, T* gh, T* hs, T* cs, T* act, const int* bs, T* pk) {
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const int gates = d.gates;
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  const seq_split plan = seq_plan(threads, B, H);
  tg_packed<T> shared;
  if (plan.by_rows) { shared.add(0, G); shared.layout(H); }  // W_hh^T, (H, G), packed by all threads
  tg_barrier bar(plan.n);
  auto work = [&](int id, int nt) {
    if (plan.by_rows) {
      shared.pack_part(w_hh, H, true, id, nt);
      if (nt > 1) bar.wait();
    }
    seq_split me = plan;
    me.at(id, nt, B, H, tg_pk<T>::L);
    const ptrdiff_t j0 = me.j0, j1 = me.j1;
    const bool resplit = st.resplit(plan.by_rows, nt);
    tg_packed<T> own;  // by units: this thread's columns of W_hh^T
    if (!plan.by_rows) {
      for (int g = 0; g < gates; ++g) own.add(g * H + j0, j1 - j0);
      own.pack(H, w_hh, H, true);
    }
    const tg_packed<T>& W = plan.by_rows ? shared : own;
    for (int s = 0; s < T_; ++s) {
      TG_STEP(s);
      ptrdiff_t r0, mt;  // this step's rows of this thread's: r0 .. r0 + mt - 1
      st.mine(t, me, resplit, id, nt, r0, mt);
      T* ghr = gh + r0 * G;
      const T* hp = hs + p * n + r0 * H;
      T* hq = hs + q * n + r0 * H;
      if (s == 0 && zero_h0) {
        for (ptrdiff_t b = 0; b < mt; ++b)
          for (int g = 0; g < gates; ++g) std::memset(ghr + b * G + g * H + j0, 0, sizeof(T) * (j1 - j0));
      } else if (mt > 0) {
        W.gemm(mt, hp, ghr, G);
      }
      const T* gx_t = gx + (st.off[t] + r0) * G;
      T* act_t = act + (st.off[t] + r0) * A;
      if (mt <= 0) {
      } else if (cell == 2) {
        lstm_fwd_cols<T>(gx_t, ghr, cs + p * n + r0 * H, H, hq, cs + q * n + r0 * H, act_t, mt, j0, j1);
      } else if (cell == 1) {
        gru_fwd_cols<T>(gx_t, ghr, b_step, hp, H, hq, act_t, mt, j0, j1);
      } else {
        for (ptrdiff_t b = 0; b < mt; ++b) {
          if (relu) rnn_relu_fwd_impl<T>(gx_t + b * G + j0, ghr + b * G + j0, hq + b * H + j0, j1 - j0);
          else rnn_tanh_fwd_impl<T>(gx_t + b * G + j0, ghr + b * G + j0, hq + b * H + j0, j1 - j0);
        }
      }
      if (pk != nullptr)  // the output at its packed rows, while it is in cache (no gather after)
        for (ptrdiff_t b = 0; b < mt; ++b)
          std::memcpy(pk + (st.off[t] + r0 + b) * H + j0, hq + b * H + j0, sizeof(T) * (j1 - j0));
      if (bs != nullptr && reverse && t > 0) {
        // the rows whose sequences end at t - 1 start there (backwards) from their initial
        // state, kept in slot T: into slot t, where step t - 1 reads its previous state
        ptrdiff_t lo, hi;
        st.starting(t, me, resplit, id, nt, lo, hi);
        for (ptrdiff_t b = lo; b < hi; ++b) {
          std::memcpy(hs + t * n + b * H + j0, hs + T_ * n + b * H + j0, sizeof(T) * (j1 - j0));
          if (cell == 2) std::memcpy(cs + t * n + b * H + j0, cs + T_ * n + b * H + j0, sizeof(T) * (j1 - j0));
        }
      }
      // every unit's h_q (resplit: every row's), before the next GEMM reads it
      if ((!plan.by_rows && nt > 1) || resplit) bar.wait();
    }
  };
  tg_parallel(plan.n, work);
  return 0;
}

// backward: dh += d_out[t]; the cell's d gates (and dc_{t-1} or dh z into scratch); then
// dh <- d gates W_hh (+ dh z). Returns 1 where the LSTM's final dc is in scratch.
template <typename T>
static int seq_bwd(int cell, int T_, int B, int H, int reverse, int need_dh0, int relu, int threads, const T* w_hh,
                   const T* act, const T* hs, const T* cs, const T* d_out, T* dh, T* dc, T* scratch,
                   T* dgh, T* dgx, const int* bs, T* pk) {
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  const seq_split plan = seq_plan(threads, B, H);
  tg_packed<T> shared;
  if (plan.by_rows) { shared.add(0, H); shared.layout(G); }  // W_hh, (G, H), packed by all threads
  tg_barrier bar(plan.n);
  auto work = [&](int id, int nt) {
    if (plan.by_rows) {
      shared.pack_part(w_hh, H, false, id, nt);
      if (nt > 1) bar.wait();
    }
    seq_split me = plan;
    me.at(id, nt, B, H, tg_pk<T>::L);
    const ptrdiff_t j0 = me.j0, j1 = me.j1;
    const bool resplit = st.resplit(plan.by_rows, nt);
    tg_packed<T> own;  // by units: this thread's columns of W_hh
    if (!plan.by_rows) { own.add(j0, j1 - j0); own.pack(G, w_hh, H); }
    const tg_packed<T>& W = plan.by_rows ? shared : own;
    ptrdiff_t r0 = me.r0, mt;
    T* dhr = dh + r0 * H;  // fixed rows: dc and scratch trade places at every step (unpacked)
    T* dcr = dc == nullptr ? nullptr : dc + r0 * H;
    T* sr = scratch + r0 * H;
    for (int s = 0; s < T_; ++s) {
      TG_BACK(s);
      st.mine(t, me, resplit, id, nt, r0, mt);  // the rows not running keep their dh and dc
      if (resplit) {
        dhr = dh + r0 * H;
        dcr = dc == nullptr ? nullptr : dc + r0 * H;
        sr = scratch + r0 * H;
      }
      const ptrdiff_t tr = st.off[t] + r0;  // this step's first row in (T, B, ...) or packed buffers
      const T* dout_t = d_out + tr * H;
      if (pk != nullptr)  // the previous states at their packed rows, for dW_hh's one GEMM after
        for (ptrdiff_t b = 0; b < mt; ++b)
          std::memcpy(pk + (tr + b) * H + j0, hs + p * n + (r0 + b) * H + j0, sizeof(T) * (j1 - j0));
      for (ptrdiff_t b = 0; b < mt; ++b)
        for (ptrdiff_t j = j0; j < j1; ++j) dhr[b * H + j] += dout_t[b * H + j];
      T* dg_t = dgh + tr * G;
      if (mt <= 0) {
      } else if (cell == 2) {
        lstm_bwd_cols<T>(act + tr * A, cs + p * n + r0 * H, cs + q * n + r0 * H, dhr, dcr, H, dg_t, sr, mt, j0, j1);
        if (bs == nullptr) {
          T* tmp = dcr; dcr = sr; sr = tmp;
        } else {  // packed: the rows not running keep theirs in dc, so the running ones' go there too
          for (ptrdiff_t b = 0; b < mt; ++b) std::memcpy(dcr + b * H + j0, sr + b * H + j0, sizeof(T) * (j1 - j0));
        }
      } else if (cell == 1) {
        gru_bwd_cols<T>(act + tr * A, hs + p * n + r0 * H, dhr, H, dg_t, dgx + tr * G, sr, mt, j0, j1);
      } else {
        for (ptrdiff_t b = 0; b < mt; ++b) {
          const T* h = hs + q * n + (r0 + b) * H + j0;
          if (relu) rnn_relu_bwd_impl<T>(h, dhr + b * H + j0, dg_t + b * G + j0, j1 - j0);
          else rnn_tanh_bwd_impl<T>(h, dhr + b * H + j0, dg_t + b * G + j0, j1 - j0);
        }
      }
      if (s == T_ - 1 && !need_dh0) break;
      if (!plan.by_rows && nt > 1) bar.wait();  // every unit's d gates, before the GEMM reads them
      if (mt > 0) W.gemm(mt, dg_t, dhr, H);
      if (cell == 1)
        for (ptrdiff_t b = 0; b < mt; ++b)
          for (ptrdiff_t j = j0; j < j1; ++j) dhr[b * H + j] += sr[b * H + j];
      if (resplit) bar.wait();  // every row's dh and dc, before the next step's threads take theirs
    }
  };
  tg_parallel(plan.n, work);
  return cell == 2 && bs == nullptr ? T_ & 1 : 0;  // dc and scratch swapped at every step
}

// An LSTM with projections (LSTMProjSequence), always in the packed layout (an unpacked batch
// is one of equal lengths): gx (N, 4H) becomes the activations in place, raw (N, H) = o tanh(c),
// hs (T + 1, B, P) the projected states, cs (T + 1, B, H). Split over threads by rows only (a
// row's steps depend on that row alone), each thread's share of the row-steps even.
static int proj_threads(int threads, int B) {
  const int n = tg_threads(threads), rows = threads > 0 ? B : (B / 2 > 1 ? B / 2 : 1);
  return n < rows ? n : rows;
}

template <typename T>
static int proj_fwd(int T_, int B, int H, int P, int reverse, int threads, const T* w_hh, const T* w_hr, T* gx,
                    T* gh, T* hs, T* cs, T* raw, const int* bs) {
  const seq_steps st(bs, T_, B);
  const ptrdiff_t G = 4 * (ptrdiff_t)H, nP = (ptrdiff_t)B * P, nH = (ptrdiff_t)B * H;
  const int nt0 = proj_threads(threads, B);
  tg_packed<T> whh, whr;  // W_hh^T (P, G) and W_hr^T (H, P), packed by all threads
  whh.add(0, G); whh.layout(P);
  whr.add(0, P); whr.layout(H);
  tg_barrier bar(nt0);
  auto work = [&](int id, int nt) {
    whh.pack_part(w_hh, P, true, id, nt);
    whr.pack_part(w_hr, H, true, id, nt);
    if (nt > 1) bar.wait();
    const ptrdiff_t r0 = st.cut(id, nt), m = st.cut(id + 1, nt) - r0;
    for (int s = 0; s < T_; ++s) {
      TG_STEP(s);
      const ptrdiff_t mt = st.active(t, r0, m), o = st.off[t] + r0;
      if (mt > 0) {
        T* a = gx + o * G;
        whh.gemm(mt, hs + p * nP + r0 * P, gh + r0 * G, G);
        lstm_fwd_cols<T>(a, gh + r0 * G, cs + p * nH + r0 * H, H, raw + o * H, cs + q * nH + r0 * H, a, mt, 0, H);
        whr.gemm(mt, raw + o * H, hs + q * nP + r0 * P, P);
      }
      if (reverse && t > 0) {  // as seq_fwd: the rows starting at t - 1 take their initial state from slot T
        const ptrdiff_t lo = st.rows(t) > r0 ? st.rows(t) : r0, hi = r0 + st.active(t - 1, r0, m);
        for (ptrdiff_t b = lo; b < hi; ++b) {
          std::memcpy(hs + t * nP + b * P, hs + T_ * nP + b * P, sizeof(T) * P);
          std::memcpy(cs + t * nH + b * H, cs + T_ * nH + b * H, sizeof(T) * H);
        }
      }
    }
  };
  tg_parallel(nt0, work);
  return 0;
}

// backward: dh += d_out; dhs <- dh (for dW_hr); draw <- dh W_hr; the cell's d gates and dc;
// dh <- d gates W_hh
template <typename T>
static int proj_bwd(int T_, int B, int H, int P, int reverse, int need_dh0, int threads, const T* w_hh,
                    const T* w_hr, const T* act, const T* cs, const T* d_out, T* dh, T* dc, T* draw, T* scratch,
                    T* dhs, T* dg, const int* bs) {
  const seq_steps st(bs, T_, B);
  const ptrdiff_t G = 4 * (ptrdiff_t)H, nH = (ptrdiff_t)B * H;
  const int nt0 = proj_threads(threads, B);
  tg_packed<T> whh, whr;  // W_hh (G, P) and W_hr (P, H)
  whh.add(0, P); whh.layout(G);
  whr.add(0, H); whr.layout(P);
  tg_barrier bar(nt0);
  auto work = [&](int id, int nt) {
    whh.pack_part(w_hh, P, false, id, nt);
    whr.pack_part(w_hr, H, false, id, nt);
    if (nt > 1) bar.wait();
    const ptrdiff_t r0 = st.cut(id, nt), m = st.cut(id + 1, nt) - r0;
    for (int s = 0; s < T_; ++s) {
      TG_BACK(s);
      const ptrdiff_t mt = st.active(t, r0, m), o = st.off[t] + r0;
      if (mt <= 0) continue;
      T* dhr = dh + r0 * P;
      for (ptrdiff_t i = 0; i < mt * P; ++i) dhr[i] += d_out[o * P + i];
      std::memcpy(dhs + o * P, dhr, sizeof(T) * mt * P);
      whr.gemm(mt, dhr, draw + r0 * H, H);
      lstm_bwd_cols<T>(act + o * G, cs + p * nH + r0 * H, cs + q * nH + r0 * H, draw + r0 * H, dc + r0 * H, H,
                       dg + o * G, scratch + r0 * H, mt, 0, H);
      std::memcpy(dc + r0 * H, scratch + r0 * H, sizeof(T) * mt * H);
      if (s == T_ - 1 && !need_dh0) break;
      whh.gemm(mt, dg + o * G, dhr, P);
    }
  };
  tg_parallel(nt0, work);
  return 0;
}
