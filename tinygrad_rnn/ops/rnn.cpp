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
// sequence on its share. By batch rows (seq_lanes), with at least 2 rows a thread: a row's
// states depend on that row alone, at every step both ways, so the threads never wait for each
// other (W_hh packed once, shared). Else by hidden units (its units of every gate: its columns
// of the recurrent GEMM, W_hh's columns packed by each thread), with one barrier a step, as the
// next step's GEMM reads every unit's state.
struct seq_split {
  bool by_rows;
  int n;
  ptrdiff_t j0, j1;  // by units: thread id's units, once at(id, nt) is called
  void at(int id, int nt, ptrdiff_t H, int L) {  // whole vectors where the units allow
    auto cut = [&](int k) { const ptrdiff_t j = (H * k / nt + L - 1) / L * L; return j < H ? j : H; };
    j0 = cut(id); j1 = id == nt - 1 ? H : cut(id + 1);
  }
};
static seq_split seq_plan(int threads, int B, int H) {
  const int n = tg_threads(threads);
  if (threads > 0) return B >= n ? seq_split{true, n} : seq_split{false, n < H ? n : H};
  const int rows = B / 2 < n ? B / 2 : n, cols = H / 32 < n ? H / 32 : n;  // 32 units a thread at least
  if (rows >= cols) return {true, rows < 1 ? 1 : rows};
  return {false, cols};
}
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
// its rows. Unpacked, bs[t] = B and off[t] = t B: the same loops.
struct seq_steps {
  std::vector<ptrdiff_t> off;
  const int* bs;
  int B;
  std::vector<ptrdiff_t> len;  // len[r], the steps row r runs
  seq_steps(const int* bs_, int T_, int B_) : off(T_ + 1), bs(bs_), B(B_), len(B_) {
    off[0] = 0;
    for (int t = 0; t < T_; ++t) off[t + 1] = off[t] + rows(t);
    for (int r = 0, t = T_; r < B; ++r) {  // row r runs the steps t with rows(t) > r
      while (t > 0 && rows(t - 1) <= r) --t;
      len[r] = t;
    }
  }
  int rows(int t) const { return bs == nullptr ? B : bs[t]; }
};
// By rows: each thread takes whole rows for the whole sequence (unpacked: an equal share of
// adjacent rows). A packed batch's rows go in runs of up to MR (the GEMM's row block), longest
// first, each to the thread with the fewest row-steps so far: the threads' lengths add up
// evenly, and each runs about as many rows as the others at every step (its share of the long
// rows and of the short ones). Measured against two other ways on 2 threads: splitting each
// step's rows anew (a barrier a step) made the packed loops 2-4% slower; dealing single rows in
// turn, 4% slower (two threads writing the two ends of a cache line at every row: NumPy's rows
// are 16-byte aligned).
struct seq_lanes {
  std::vector<std::vector<ptrdiff_t>> rows;  // thread k's rows, ascending (longest first)
  const seq_steps& st;
  seq_lanes(const seq_steps& st_, int nt, int MR) : rows(nt), st(st_) {
    ptrdiff_t g = st.B / (2 * nt);  // packed: at least two runs a thread
    g = g < 1 ? 1 : g > MR ? MR : g;
    if (st.bs == nullptr) g = (st.B + nt - 1) / nt;  // rows of one length: one run a thread
    std::vector<ptrdiff_t> load(nt, 0);
    for (ptrdiff_t r0 = 0; r0 < st.B; r0 += g) {
      int k = 0;
      for (int i = 1; i < nt; ++i)
        if (load[i] < load[k]) k = i;
      for (ptrdiff_t r = r0; r < r0 + g && r < st.B; ++r) {
        rows[k].push_back(r);
        load[k] += st.len[r];
      }
    }
  }
  // a thread's lanes once every thread has packed its share of the shared weights. nt is the
  // count tg_parallel gave, which may be 1 where the pool is busy (f(0, 1) alone): the rows are
  // dealt for it, and the barrier only waits where there are other threads
  template <typename T> static seq_lanes after_pack(const seq_steps& st, tg_barrier& bar, int nt) {
    if (nt > 1) bar.wait();
    return seq_lanes(st, nt, tg_pk<T>::MR);
  }
  // of thread k's rows, how many step t runs (those before row rows(t))
  ptrdiff_t active(int k, int t) const {
    return std::lower_bound(rows[k].begin(), rows[k].end(), (ptrdiff_t)st.rows(t)) - rows[k].begin();
  }
  // f(j, m): rows[j .. j + m - 1], adjacent rows (r .. r + m - 1), for the first mt rows
  template <typename F> static void runs(const std::vector<ptrdiff_t>& rows, ptrdiff_t mt, F f) {
    for (ptrdiff_t j = 0, m; j < mt; j += m) {
      for (m = 1; j + m < mt && rows[j + m] == rows[j] + m;) ++m;
      f(j, m);
    }
  }
};

// forward: gh <- h_p W_hh^T (zeros at the first step without h0), then the cell, on `rows` rows
// from those pointers on (their gx, gh, act rows G, G, A apart; hs, cs rows H apart)
template <typename T>
static void seq_fwd_cell(int cell, int relu, const T* gx_t, const T* gh, const T* b_step, const T* hp, const T* cp,
                         int H, T* hq, T* cq, T* act_t, ptrdiff_t rows, ptrdiff_t j0, ptrdiff_t j1) {
  const ptrdiff_t G = seq_dims(cell, 0, H).G;
  if (rows <= 0) {
  } else if (cell == 2) {
    lstm_fwd_cols<T>(gx_t, gh, cp, H, hq, cq, act_t, rows, j0, j1);
  } else if (cell == 1) {
    gru_fwd_cols<T>(gx_t, gh, b_step, hp, H, hq, act_t, rows, j0, j1);
  } else {
    for (ptrdiff_t b = 0; b < rows; ++b) {
      if (relu) rnn_relu_fwd_impl<T>(gx_t + b * G + j0, gh + b * G + j0, hq + b * H + j0, j1 - j0);
      else rnn_tanh_fwd_impl<T>(gx_t + b * G + j0, gh + b * G + j0, hq + b * H + j0, j1 - j0);
    }
  }
}

template <typename T>
static void seq_fwd_rows(int cell, int T_, int B, int H, int reverse, int zero_h0, int relu, int nt0, const T* gx,
                         const T* w_hh, const T* b_step, T* gh, T* hs, T* cs, T* act, const int* bs, T* pk) {
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  tg_packed<T> W;  // W_hh^T, (H, G), packed by all threads
  W.add(0, G); W.layout(H);
  tg_barrier bar(nt0);
  auto work = [&](int id, int nt) {
    W.pack_part(w_hh, H, true, id, nt);
    const seq_lanes lanes = seq_lanes::after_pack<T>(st, bar, nt);
    const std::vector<ptrdiff_t>& rows = lanes.rows[id];
    std::vector<const T*> hp(rows.size());  // the GEMM's rows: previous states in, gh out
    std::vector<T*> ghp(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) ghp[j] = gh + rows[j] * G;
    for (int s = 0; s < T_; ++s) {
      TG_STEP(s);
      const ptrdiff_t mt = lanes.active(id, t);
      for (ptrdiff_t j = 0; j < mt; ++j) hp[j] = hs + p * n + rows[j] * H;
      if (s == 0 && zero_h0) {
        for (ptrdiff_t j = 0; j < mt; ++j) std::memset(ghp[j], 0, sizeof(T) * G);
      } else if (mt > 0) {
        W.gemm_rows(mt, hp.data(), ghp.data());
      }
      seq_lanes::runs(rows, mt, [&](ptrdiff_t j, ptrdiff_t m) {
        const ptrdiff_t r = rows[j], tr = st.off[t] + r;
        seq_fwd_cell<T>(cell, relu, gx + tr * G, ghp[j], b_step, hp[j], cs + p * n + r * H, H, hs + q * n + r * H,
                        cs + q * n + r * H, act + tr * A, m, 0, H);
        // the output at its packed rows, while it is in cache (no gather after)
        if (pk != nullptr) std::memcpy(pk + tr * H, hs + q * n + r * H, sizeof(T) * H * m);
      });
      // reverse, packed: the rows whose sequences end at t - 1 start there (backwards) from
      // their initial state, kept in slot T: into slot t, where step t - 1 reads its previous state
      for (ptrdiff_t j = mt, e = reverse && t > 0 ? lanes.active(id, t - 1) : 0; j < e; ++j) {
        std::memcpy(hs + t * n + rows[j] * H, hs + T_ * n + rows[j] * H, sizeof(T) * H);
        if (cell == 2) std::memcpy(cs + t * n + rows[j] * H, cs + T_ * n + rows[j] * H, sizeof(T) * H);
      }
    }
  };
  tg_parallel(nt0, work);
}

template <typename T>
static int seq_fwd(int cell, int T_, int B, int H, int reverse, int zero_h0, int relu, int threads, const T* gx,
                   const T* w_hh, const T* b_step, T* gh, T* hs, T* cs, T* act, const int* bs, T* pk) {
  const seq_split plan = seq_plan(threads, B, H);
  if (plan.by_rows) {
    seq_fwd_rows<T>(cell, T_, B, H, reverse, zero_h0, relu, plan.n, gx, w_hh, b_step, gh, hs, cs, act, bs, pk);
    return 0;
  }
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const int gates = d.gates;
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  tg_barrier bar(plan.n);
  auto work = [&](int id, int nt) {  // by units: columns j0 .. j1 - 1 of every row
    seq_split me = plan;
    me.at(id, nt, H, tg_pk<T>::L);
    const ptrdiff_t j0 = me.j0, j1 = me.j1;
    tg_packed<T> W;  // this thread's columns of W_hh^T
    for (int g = 0; g < gates; ++g) W.add(g * H + j0, j1 - j0);
    W.pack(H, w_hh, H, true);
    for (int s = 0; s < T_; ++s) {
      TG_STEP(s);
      const ptrdiff_t mt = st.rows(t);
      if (s == 0 && zero_h0) {
        for (ptrdiff_t b = 0; b < mt; ++b)
          for (int g = 0; g < gates; ++g) std::memset(gh + b * G + g * H + j0, 0, sizeof(T) * (j1 - j0));
      } else if (mt > 0) {
        W.gemm(mt, hs + p * n, gh, G);
      }
      seq_fwd_cell<T>(cell, relu, gx + st.off[t] * G, gh, b_step, hs + p * n, cs + p * n, H, hs + q * n, cs + q * n,
                      act + st.off[t] * A, mt, j0, j1);
      if (pk != nullptr)
        for (ptrdiff_t b = 0; b < mt; ++b)
          std::memcpy(pk + (st.off[t] + b) * H + j0, hs + q * n + b * H + j0, sizeof(T) * (j1 - j0));
      for (ptrdiff_t b = mt, e = reverse && t > 0 ? st.rows(t - 1) : 0; b < e; ++b) {  // as seq_fwd_rows
        std::memcpy(hs + t * n + b * H + j0, hs + T_ * n + b * H + j0, sizeof(T) * (j1 - j0));
        if (cell == 2) std::memcpy(cs + t * n + b * H + j0, cs + T_ * n + b * H + j0, sizeof(T) * (j1 - j0));
      }
      if (nt > 1) bar.wait();  // every unit's h_q, before the next GEMM reads it
    }
  };
  tg_parallel(plan.n, work);
  return 0;
}

// backward: dh += d_out[t]; the cell's d gates (and dc_{t-1} or dh z into scratch); then
// dh <- d gates W_hh (+ dh z). Returns 1 where the LSTM's final dc is in scratch.
template <typename T>
static void seq_bwd_cell(int cell, int relu, const T* act_t, const T* hp, const T* hq, const T* cp, const T* cq,
                         int H, T* dh, T* dc, T* dg, T* dgx, T* sc, ptrdiff_t rows, ptrdiff_t j0, ptrdiff_t j1) {
  const ptrdiff_t G = seq_dims(cell, 0, H).G;
  if (rows <= 0) {
  } else if (cell == 2) {
    lstm_bwd_cols<T>(act_t, cp, cq, dh, dc, H, dg, sc, rows, j0, j1);
  } else if (cell == 1) {
    gru_bwd_cols<T>(act_t, hp, dh, H, dg, dgx, sc, rows, j0, j1);
  } else {
    for (ptrdiff_t b = 0; b < rows; ++b) {
      if (relu) rnn_relu_bwd_impl<T>(hq + b * H + j0, dh + b * H + j0, dg + b * G + j0, j1 - j0);
      else rnn_tanh_bwd_impl<T>(hq + b * H + j0, dh + b * H + j0, dg + b * G + j0, j1 - j0);
    }
  }
}
// the LSTM's dc_{t-1}, written to scratch, where dc is: unpacked, every row's at every step, so
// the two buffers trade places instead (returns 1 where they did an odd number of times); packed,
// the rows not running keep theirs in dc, so the running ones' are copied there
template <typename T> struct seq_dc {
  T *dc, *sc;
  bool swap;
  void step(ptrdiff_t r0, ptrdiff_t m, ptrdiff_t H, ptrdiff_t j0, ptrdiff_t j1) const {
    if (!swap)
      for (ptrdiff_t b = r0; b < r0 + m; ++b) std::memcpy(dc + b * H + j0, sc + b * H + j0, sizeof(T) * (j1 - j0));
  }
  void next() {
    if (swap) { T* tmp = dc; dc = sc; sc = tmp; }
  }
};

template <typename T>
static int seq_bwd_rows(int cell, int T_, int B, int H, int reverse, int need_dh0, int relu, int nt0, const T* w_hh,
                        const T* act, const T* hs, const T* cs, const T* d_out, T* dh, T* dc, T* scratch, T* dgh,
                        T* dgx, const int* bs, T* pk) {
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  tg_packed<T> W;  // W_hh, (G, H), packed by all threads
  W.add(0, H); W.layout(G);
  tg_barrier bar(nt0);
  auto work = [&](int id, int nt) {
    W.pack_part(w_hh, H, false, id, nt);
    const seq_lanes lanes = seq_lanes::after_pack<T>(st, bar, nt);
    const std::vector<ptrdiff_t>& rows = lanes.rows[id];
    std::vector<const T*> dgp(rows.size());  // the GEMM's rows: d gates in, dh out
    std::vector<T*> dhp(rows.size());
    for (size_t j = 0; j < rows.size(); ++j) dhp[j] = dh + rows[j] * H;
    seq_dc<T> c{dc, scratch, cell == 2 && bs == nullptr};
    for (int s = 0; s < T_; ++s) {
      TG_BACK(s);
      const ptrdiff_t mt = lanes.active(id, t);  // the rows not running keep their dh and dc
      seq_lanes::runs(rows, mt, [&](ptrdiff_t j, ptrdiff_t m) {
        const ptrdiff_t r = rows[j], tr = st.off[t] + r;
        // the previous states at their packed rows, for dW_hh's one GEMM after
        if (pk != nullptr) std::memcpy(pk + tr * H, hs + p * n + r * H, sizeof(T) * H * m);
        for (ptrdiff_t i = 0; i < H * m; ++i) dhp[j][i] += d_out[tr * H + i];
        for (ptrdiff_t i = 0; i < m; ++i) dgp[j + i] = dgh + (tr + i) * G;
        seq_bwd_cell<T>(cell, relu, act + tr * A, hs + p * n + r * H, hs + q * n + r * H, cs + p * n + r * H,
                        cs + q * n + r * H, H, dhp[j], c.dc == nullptr ? nullptr : c.dc + r * H, dgh + tr * G,
                        dgx + tr * G, c.sc + r * H, m, 0, H);
        if (cell == 2) c.step(r, m, H, 0, H);
      });
      c.next();
      if (s == T_ - 1 && !need_dh0) break;
      if (mt > 0) W.gemm_rows(mt, dgp.data(), dhp.data());
      if (cell == 1)
        for (ptrdiff_t j = 0; j < mt; ++j)
          for (ptrdiff_t i = 0; i < H; ++i) dhp[j][i] += scratch[rows[j] * H + i];
    }
  };
  tg_parallel(nt0, work);
  return cell == 2 && bs == nullptr ? T_ & 1 : 0;
}

template <typename T>
static int seq_bwd(int cell, int T_, int B, int H, int reverse, int need_dh0, int relu, int threads, const T* w_hh,
                   const T* act, const T* hs, const T* cs, const T* d_out, T* dh, T* dc, T* scratch,
                   T* dgh, T* dgx, const int* bs, T* pk) {
  const seq_split plan = seq_plan(threads, B, H);
  if (plan.by_rows)
    return seq_bwd_rows<T>(cell, T_, B, H, reverse, need_dh0, relu, plan.n, w_hh, act, hs, cs, d_out, dh, dc,
                           scratch, dgh, dgx, bs, pk);
  const seq_dims d(cell, B, H);
  const seq_steps st(bs, T_, B);
  const ptrdiff_t n = d.n, G = d.G, A = d.A;
  tg_barrier bar(plan.n);
  auto work = [&](int id, int nt) {  // by units: columns j0 .. j1 - 1 of every row
    seq_split me = plan;
    me.at(id, nt, H, tg_pk<T>::L);
    const ptrdiff_t j0 = me.j0, j1 = me.j1;
    tg_packed<T> W;  // this thread's columns of W_hh
    W.add(j0, j1 - j0);
    W.pack(G, w_hh, H);
    seq_dc<T> c{dc, scratch, cell == 2 && bs == nullptr};
    for (int s = 0; s < T_; ++s) {
      TG_BACK(s);
      const ptrdiff_t mt = st.rows(t), tr = st.off[t];  // the rows not running keep their dh and dc
      if (pk != nullptr)
        for (ptrdiff_t b = 0; b < mt; ++b)
          std::memcpy(pk + (tr + b) * H + j0, hs + p * n + b * H + j0, sizeof(T) * (j1 - j0));
      for (ptrdiff_t b = 0; b < mt; ++b)
        for (ptrdiff_t j = j0; j < j1; ++j) dh[b * H + j] += d_out[(tr + b) * H + j];
      seq_bwd_cell<T>(cell, relu, act + tr * A, hs + p * n, hs + q * n, cs + p * n, cs + q * n, H, dh, c.dc,
                      dgh + tr * G, dgx + tr * G, c.sc, mt, j0, j1);
      if (cell == 2) c.step(0, mt, H, j0, j1);
      c.next();
      if (s == T_ - 1 && !need_dh0) break;
      if (nt > 1) bar.wait();  // every unit's d gates, before the GEMM reads them
      if (mt > 0) W.gemm(mt, dgh + tr * G, dh, H);
      if (cell == 1)
        for (ptrdiff_t b = 0; b < mt; ++b)
          for (ptrdiff_t j = j0; j < j1; ++j) dh[b * H + j] += scratch[b * H + j];
    }
  };
  tg_parallel(plan.n, work);
  return cell == 2 && bs == nullptr ? T_ & 1 : 0;  // dc and scratch swapped at every step
}

// An LSTM with projections (LSTMProjSequence), always in the packed layout (an unpacked batch
// is one of equal lengths): gx (N, 4H) becomes the activations in place, raw (N, H) = o tanh(c),
// hs (T + 1, B, P) the projected states, cs (T + 1, B, H). Split over threads by rows only
// (seq_lanes).
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
    const seq_lanes lanes = seq_lanes::after_pack<T>(st, bar, nt);
    const std::vector<ptrdiff_t>& rows = lanes.rows[id];
    std::vector<const T*> a(rows.size());  // the GEMMs' rows in and out
    std::vector<T*> c(rows.size());
    for (int s = 0; s < T_; ++s) {
      TG_STEP(s);
      const ptrdiff_t mt = lanes.active(id, t), o = st.off[t];
      for (ptrdiff_t j = 0; j < mt; ++j) { a[j] = hs + p * nP + rows[j] * P; c[j] = gh + rows[j] * G; }
      whh.gemm_rows(mt, a.data(), c.data());
      seq_lanes::runs(rows, mt, [&](ptrdiff_t j, ptrdiff_t m) {
        const ptrdiff_t r = rows[j];
        T* g = gx + (o + r) * G;
        lstm_fwd_cols<T>(g, gh + r * G, cs + p * nH + r * H, H, raw + (o + r) * H, cs + q * nH + r * H, g, m, 0, H);
      });
      for (ptrdiff_t j = 0; j < mt; ++j) { a[j] = raw + (o + rows[j]) * H; c[j] = hs + q * nP + rows[j] * P; }
      whr.gemm_rows(mt, a.data(), c.data());
      for (ptrdiff_t j = mt, e = reverse && t > 0 ? lanes.active(id, t - 1) : 0; j < e; ++j) {  // as seq_fwd_rows
        std::memcpy(hs + t * nP + rows[j] * P, hs + T_ * nP + rows[j] * P, sizeof(T) * P);
        std::memcpy(cs + t * nH + rows[j] * H, cs + T_ * nH + rows[j] * H, sizeof(T) * H);
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
    const seq_lanes lanes = seq_lanes::after_pack<T>(st, bar, nt);
    const std::vector<ptrdiff_t>& rows = lanes.rows[id];
    std::vector<const T*> a(rows.size());  // the GEMMs' rows in and out
    std::vector<T*> c(rows.size());
    for (int s = 0; s < T_; ++s) {
      TG_BACK(s);
      const ptrdiff_t mt = lanes.active(id, t), o = st.off[t];
      seq_lanes::runs(rows, mt, [&](ptrdiff_t j, ptrdiff_t m) {
        T* dhr = dh + rows[j] * P;
        for (ptrdiff_t i = 0; i < m * P; ++i) dhr[i] += d_out[(o + rows[j]) * P + i];
        std::memcpy(dhs + (o + rows[j]) * P, dhr, sizeof(T) * m * P);
      });
      for (ptrdiff_t j = 0; j < mt; ++j) { a[j] = dh + rows[j] * P; c[j] = draw + rows[j] * H; }
      whr.gemm_rows(mt, a.data(), c.data());
      seq_lanes::runs(rows, mt, [&](ptrdiff_t j, ptrdiff_t m) {
        const ptrdiff_t r = rows[j];
        lstm_bwd_cols<T>(act + (o + r) * G, cs + p * nH + r * H, cs + q * nH + r * H, draw + r * H, dc + r * H, H,
                         dg + (o + r) * G, scratch + r * H, m, 0, H);
        std::memcpy(dc + r * H, scratch + r * H, sizeof(T) * m * H);
      });
      if (s == T_ - 1 && !need_dh0) break;
      for (ptrdiff_t j = 0; j < mt; ++j) { a[j] = dg + (o + rows[j]) * G; c[j] = dh + rows[j] * P; }
      whh.gemm_rows(mt, a.data(), c.data());
    }
  };
  tg_parallel(nt0, work);
  return 0;
}
