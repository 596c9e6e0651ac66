"""Sample text from the trained character-level LSTM, one character at a time.

The deploy net (charlm_deploy.prototxt) runs one step: given a character, the continuation
marker and the LSTM state (h_0, c_0) it gives the probabilities of the next character and
the state after the step (h_T, c_T; recurrent_param.expose_hidden). This script carries the
state: it copies h_T, c_T into h_0, c_0 before each next step. It first reads the prime text
(cont = 0 at its first character: a new sequence), then draws each next character from the
softmax at the given temperature and feeds it back.

    python examples/charlm/sample.py --weights examples/charlm/snapshots/charlm_iter_3000.caffemodel \\
        [--prime "def "] [--length 600] [--temperature 0.7] [--seed 1]
"""
import argparse
import json
import os
import sys

import numpy as np

import jitnet
from jitnet.errors import JitnetError

HERE = os.path.dirname(os.path.abspath(__file__))


def load_vocabulary(path):
    """The symbols of vocab.json (written by prepare.py) and their indices."""
    with open(path, encoding="utf-8") as f:
        vocabulary = json.load(f)
    return vocabulary, {c: i for i, c in enumerate(vocabulary)}


def sample(net, vocabulary, prime="\n", length=600, temperature=0.7, seed=1):
    """``prime`` followed by ``length`` characters drawn from ``net`` (a deploy net of one
    step with the blobs input, cont, h_0, c_0, h_T, c_T, probs)."""
    if not prime:
        raise ValueError("the prime text must have at least one character")
    index = {c: i for i, c in enumerate(vocabulary)}
    rng = np.random.default_rng(seed)
    blobs = net.blobs
    for name in ("h_0", "c_0"):
        blobs[name].data[...] = 0
    out = list(prime)

    def step(code, cont):
        blobs["input"].data[...] = code
        blobs["cont"].data[...] = cont
        net.forward()
        blobs["h_0"].data[...] = blobs["h_T"].data       # carry the state to the next step
        blobs["c_0"].data[...] = blobs["c_T"].data
        return blobs["probs"].data.reshape(-1).astype(np.float64)

    for k, char in enumerate(prime):
        probs = step(index.get(char, 0), 0 if k == 0 else 1)
    for _ in range(length):
        logits = np.log(np.maximum(probs, 1e-30)) / temperature
        p = np.exp(logits - logits.max())
        code = int(rng.choice(len(p), p=p / p.sum()))
        out.append(vocabulary[code])
        probs = step(code, 1)
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="the trained .caffemodel")
    parser.add_argument("--model", default=os.path.join(HERE, "charlm_deploy.prototxt"))
    parser.add_argument("--vocab", default=os.path.join(HERE, "data", "vocab.json"))
    parser.add_argument("--prime", default="def ",
                        help="the text the sample starts from (\\n, \\t: newline, tab)")
    parser.add_argument("--length", type=int, default=600, help="characters to draw")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="below 1: likelier characters; above 1: more varied")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args(argv)
    if args.temperature <= 0:
        parser.error("--temperature must be positive")
    if args.gpu:
        jitnet.set_mode_gpu()
    if not os.path.exists(args.vocab):
        parser.error(f"no vocabulary file {args.vocab} (python examples/charlm/prepare.py writes it)")
    vocabulary, _ = load_vocabulary(args.vocab)
    try:
        net = jitnet.Net(args.model, jitnet.TEST, weights=args.weights)
    except JitnetError as e:
        sys.exit(f"sample.py: {e}")
    prime = args.prime.replace("\\n", "\n").replace("\\t", "\t")
    text = sample(net, vocabulary, prime, args.length, args.temperature, args.seed)
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
