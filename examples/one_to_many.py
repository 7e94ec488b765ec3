"""One-to-many: a class id goes in, a sequence comes out (the number spelled as a word).

The class (0..19) sets the decoder's initial state; from there a GRU emits one letter
per step until it emits END:

    class id -> Embedding -> tanh -> h_0
    START, s, e, v, e, n -> GRU (from h_0) -> Linear -> s, e, v, e, n, END

Training feeds the true previous letter at each step (teacher forcing), so the whole
word runs through the GRU layer in one call. Generation feeds back the network's own
greedy choice one step at a time. Words have different lengths: the batch is padded
with PAD, which the loss ignores (ignore_index).

    python examples/one_to_many.py --quick     # a few seconds: all 20 words spelled right
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

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
PAD, START, END = 0, 1, 2
LETTERS = sorted(set("".join(WORDS)))
TOKENS = ["<PAD>", "<START>", "<END>"] + LETTERS
LETTER_ID = {c: i + 3 for i, c in enumerate(LETTERS)}


def targets_and_inputs(words):
    """Padded (T, B) decoder inputs (START + word) and targets (word + END)."""
    T = max(len(w) for w in words) + 1
    inputs = np.full((T, len(words)), PAD, dtype=np.int64)
    targets = np.full((T, len(words)), PAD, dtype=np.int64)
    for b, w in enumerate(words):
        ids = [LETTER_ID[c] for c in w]
        inputs[:len(ids) + 1, b] = [START] + ids
        targets[:len(ids) + 1, b] = ids + [END]
    return inputs, targets


class Speller(nn.Module):
    def __init__(self, n_classes, hidden, embed=16):
        super().__init__()
        self.class_to_state = nn.Embedding(n_classes, hidden)
        self.letter_embed = nn.Embedding(len(TOKENS), embed)
        self.gru = nn.GRU(embed, hidden)
        self.head = nn.Linear(hidden, len(TOKENS))

    def initial_state(self, classes):
        return self.class_to_state(classes).tanh().unsqueeze(0)  # (1 layer, B, H)

    def forward(self, classes, inputs):
        """Teacher forcing: every step sees the true previous letter. -> logits (T, B, V)."""
        out, _ = self.gru(self.letter_embed(inputs), self.initial_state(classes))
        return self.head(out)

    def spell(self, classes, max_len=12):
        """Greedy decoding: feed back the likeliest letter until END (or max_len)."""
        with tg.no_grad():
            h = self.initial_state(classes)
            token = np.full((1, len(classes)), START, dtype=np.int64)
            out = []
            for _ in range(max_len):
                y, h = self.gru(self.letter_embed(token), h)
                token = self.head(y).argmax(-1).numpy()
                out.append(token[0])
        words = []
        for row in np.stack(out, axis=1):
            letters = []
            for t in row:
                if t == END:
                    break
                letters.append(TOKENS[t] if t >= 3 else "?")
            words.append("".join(letters))
        return words


def main(argv=None):
    p = argparse.ArgumentParser(description="one-to-many: class id -> spelled word")
    p.add_argument("--quick", action="store_true", help="300 steps (a few seconds)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    steps = 300 if args.quick else 1000
    t0 = time.perf_counter()
    tg.manual_seed(args.seed)
    model = Speller(len(WORDS), hidden=64)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    classes = np.arange(len(WORDS))
    inputs, targets = targets_and_inputs(WORDS)
    for step in range(1, steps + 1):
        logits = model(classes, inputs)
        loss = F.cross_entropy(logits.reshape(-1, len(TOKENS)), targets.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    spelled = model.spell(classes)
    right = sum(s == w for s, w in zip(spelled, WORDS))
    for c, (s, w) in enumerate(zip(spelled, WORDS)):
        print(f"  {c:2d} -> {s:10s} {'ok' if s == w else 'WRONG, want ' + w}")
    seconds = time.perf_counter() - t0
    print(f"{right}/{len(WORDS)} words spelled exactly by greedy decoding ({seconds:.1f} s)")
    assert right == len(WORDS), "every class should be spelled right"
    return {"right": right, "total": len(WORDS), "final_loss": loss.item(), "seconds": seconds}


if __name__ == "__main__":
    main()
