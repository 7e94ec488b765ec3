"""Sequence to sequence: an LSTM encoder-decoder on digit strings, with and without the
"reverse the source" trick (Sutskever et al., 2014) and additive attention (Bahdanau et
al., 2015); exact-match accuracy for each of the four combinations.

    source 3 1 4 1 5  ->  encoder LSTM  ->  (h, c)  ->  decoder LSTM  ->  5 1 4 1 3 END
                                                   START 5 1 4 1 3 (teacher forcing)

- START begins every decoder input; END ends every target, and greedy decoding stops
  there (or at a length limit).
- Teacher forcing: in training the decoder reads the true previous token; at test time it
  reads its own greedy choice.
- Reversed source: the encoder reads the source back to front. This shortens the path
  between a target token and the source token it depends on when target order follows
  source order (sort, add; translation between similar languages), and lengthens it
  when the target runs the other way (the reverse task turns into a copy).
- Attention: at each step the decoder scores every encoder output against its state
  (nn.AdditiveAttention), reads their weighted mean (the context), and feeds it in with
  the token; the final state is no longer the only road from source to target.
- Sources of different lengths share a batch: padded, then packed for the encoder
  (pack_padded_sequence), so each source's final state is taken at its own last token;
  attention is masked past each source's end.

Tasks: reverse (the default), sort, add ("123+45" -> "168").

    python examples/seq2seq.py --quick                # reverse, 4 models, ~40 s
    python examples/seq2seq.py --task sort            # longer training
"""
import argparse
import os
import sys
import time

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD, START, END, PLUS = 0, 1, 2, 3
DIGIT0 = 4  # digit d is token DIGIT0 + d
N_TOKENS = DIGIT0 + 10


# ----------------------------------------------------------------------------- tasks
def make_example(task, rng, length):
    """One (source, target) pair of strings, the source `length` characters long."""
    if task == "add":
        n1 = int(rng.integers(1, length - 1))  # "a+b" with len(a) + 1 + len(b) == length
        a, b = int(rng.integers(0, 10 ** n1)), int(rng.integers(0, 10 ** (length - 1 - n1)))
        return f"{a}+{b}".rjust(length, "0"), str(a + b)  # leading zeros keep the length
    src = "".join(map(str, rng.integers(0, 10, size=length)))
    return src, (src[::-1] if task == "reverse" else "".join(sorted(src)))


def make_batch(task, rng, lengths):
    """Source (S, B), target (T, B) token arrays and the source lengths: sources PAD-padded to
    the longest, targets END-terminated and PAD-padded to the longest."""
    pairs = [make_example(task, rng, int(n)) for n in lengths]
    src = np.full((max(lengths), len(pairs)), PAD, dtype=np.int64)
    T = max(len(t) for _, t in pairs) + 1
    tgt = np.full((T, len(pairs)), PAD, dtype=np.int64)
    for j, (s, t) in enumerate(pairs):
        src[:len(s), j] = [PLUS if c == "+" else DIGIT0 + int(c) for c in s]
        tgt[:len(t) + 1, j] = [DIGIT0 + int(c) for c in t] + [END]
    return src, tgt, np.asarray(lengths)


# ----------------------------------------------------------------------------- the model
class Seq2Seq(nn.Module):
    def __init__(self, hidden=64, embed=16, attention=False, reverse_source=False):
        super().__init__()
        self.attention, self.reverse_source, self.hidden = attention, reverse_source, hidden
        self.embed = nn.Embedding(N_TOKENS, embed)
        self.encoder = nn.LSTM(embed, hidden)
        self.decoder = nn.LSTMCell(embed + (hidden if attention else 0), hidden)
        if attention:
            self.attn = nn.AdditiveAttention(query_size=hidden, key_size=hidden, hidden_size=hidden)
        self.head = nn.Linear(hidden * (2 if attention else 1), N_TOKENS)

    def encode(self, src, lengths):
        """The encoder over sources of mixed lengths: packed, so that (h, c) is each source's
        state after its own last token; the outputs padded back, with the mask of real ones."""
        S = src.shape[0]
        inside = np.arange(S)[:, None] < lengths[None, :]
        if self.reverse_source:  # each source back to front within its own length
            src = src.copy()
            for j, n in enumerate(lengths):
                src[:n, j] = src[:n, j][::-1]
        packed = pack_padded_sequence(self.embed(src), lengths, enforce_sorted=False)
        enc_out, (h, c) = self.encoder(packed)
        enc_out, _ = pad_packed_sequence(enc_out, total_length=S)
        keys = self.attn.project_keys(enc_out) if self.attention else None
        return (enc_out, inside), keys, (h[0], c[0])

    def decode_step(self, token, state, enc, keys):
        """One decoder step: previous token (B,) and state -> (logits (B, V), new state)."""
        x = self.embed(token)
        if self.attention:
            enc_out, inside = enc  # nothing past a source's end is attended to
            context, _ = self.attn(state[0], enc_out, keys_proj=keys, mask=inside)  # scored against h_(t-1)
            x = tg.cat([x, context], axis=-1)
        h, c = self.decoder(x, state)
        out = tg.cat([h, context], axis=-1) if self.attention else h
        return self.head(out), (h, c)

    def forward(self, src, lengths, tgt):
        """Teacher forcing: the decoder reads START, then the true target tokens. -> (T, B, V)."""
        enc_out, keys, state = self.encode(src, lengths)
        prev = np.concatenate([np.full((1, tgt.shape[1]), START), tgt[:-1]])
        logits = []
        for token in prev:
            out, state = self.decode_step(token, state, enc_out, keys)
            logits.append(out)
        return tg.stack(logits)

    def greedy(self, src, lengths, max_len):
        """Decode by feeding back the likeliest token; (max_len, B) with END where it stopped."""
        with tg.no_grad():
            enc_out, keys, state = self.encode(src, lengths)
            token = np.full(src.shape[1], START)
            out = []
            for _ in range(max_len):
                logits, state = self.decode_step(token, state, enc_out, keys)
                token = logits.argmax(-1).numpy()
                out.append(token)
        return np.stack(out)


def exact_match(pred, tgt):
    """Whole answers right, END included; anything after END is ignored."""
    ok = np.ones(tgt.shape[1], dtype=bool)
    for j in range(tgt.shape[1]):
        n = int(np.argmax(tgt[:, j] == END)) + 1
        ok[j] = pred.shape[0] >= n and np.array_equal(pred[:n, j], tgt[:n, j])
    return float(ok.mean())


def train_and_evaluate(args, attention, reverse_source):
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Seq2Seq(args.hidden, attention=attention, reverse_source=reverse_source)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    for step in range(args.steps):  # every batch of mixed source lengths
        src, tgt, lengths = make_batch(args.task, rng, rng.integers(args.min_len, args.max_len + 1, size=args.batch))
        loss = F.cross_entropy(model(src, lengths, tgt).reshape(-1, N_TOKENS), tgt.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    test_rng = np.random.default_rng(args.seed + 1)
    accs = []
    for length in range(args.min_len, args.max_len + 1):
        src, tgt, lengths = make_batch(args.task, test_rng, [length] * args.test_per_length)
        accs.append(exact_match(model.greedy(src, lengths, tgt.shape[0] + 2), tgt))
    return float(np.mean(accs)), accs


def main(argv=None):
    p = argparse.ArgumentParser(description="LSTM seq2seq: reversed source and attention, on and off")
    p.add_argument("--quick", action="store_true", help="400 steps per model (~30 s for all four)")
    p.add_argument("--task", choices=["reverse", "sort", "add"], default="reverse")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default 400 quick, 3000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.hidden, args.batch, args.lr, args.test_per_length = 64, 64, 1e-2, 500
    args.min_len, args.max_len = (3, 8) if args.task != "add" else (3, 9)
    if args.steps is None:
        args.steps = 400 if args.quick else 3000
    t0 = time.perf_counter()
    print(f"task {args.task!r}, source lengths {args.min_len}..{args.max_len}, {args.steps} Adam steps of "
          f"{args.batch}; exact match of greedy decoding on {args.test_per_length} new sources per length:")
    print("  reversed source  attention   exact match   (by length " +
          " ".join(str(n) for n in range(args.min_len, args.max_len + 1)) + ")")
    res = {}
    for attention in (False, True):
        for reverse_source in (False, True):
            acc, by_len = train_and_evaluate(args, attention, reverse_source)
            res[(reverse_source, attention)] = acc
            print(f"  {'on ' if reverse_source else 'off':>15s}  {'on ' if attention else 'off':>9s}   "
                  f"{acc:11.1%}    " + " ".join(f"{a:.0%}" for a in by_len))
    seconds = time.perf_counter() - t0
    print(f"({seconds:.1f} s)")
    out = {f"{'rev' if r else 'fwd'}_{'attn' if a else 'noattn'}": v for (r, a), v in res.items()}
    out["seconds"] = seconds
    if args.task == "reverse":
        print("reverse: the natural source order already puts the source token each output needs next to "
              "the decoder's start; reversing the source makes the task a copy, with the longest distances")
    if args.quick and args.task == "reverse" and args.steps == 400:  # the stated result of --quick
        assert res[(False, True)] >= 0.95, "with attention the decoder should get nearly every answer right"
        assert all(res[(r, True)] > res[(r, False)] for r in (False, True)), "attention should help either way"
    return out


if __name__ == "__main__":
    main()
