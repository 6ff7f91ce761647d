#!/usr/bin/env python3
"""Independent GPT-2 encoders for checking efftrain's tokenizer, on the same local files.

usage: gpt2_reference.py VOCAB_DIR FILE... [--impl openai|tiktoken] [--ids]
openai:   OpenAI's encoder.py algorithm (the `regex` module pattern, bytes_to_unicode, bpe()),
          written out here from the released source.
tiktoken: tiktoken.Encoding built from the same vocab.json/merges.txt ranks.
Prints "FILE COUNT" (or "FILE [ids]" with --ids), like `efftrain tokenize`.
"""
import json
import sys

import regex as re

PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


class OpenAIEncoder:
    def __init__(self, vocab_dir):
        self.encoder = json.load(open(f"{vocab_dir}/vocab.json", encoding="utf-8"))
        merges = open(f"{vocab_dir}/merges.txt", encoding="utf-8").read().split("\n")[1:-1]
        self.bpe_ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}
        self.pat = re.compile(PAT)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        pieces = text.split("<|endoftext|>")
        for k, part in enumerate(pieces):
            if k:
                ids.append(self.encoder["<|endoftext|>"])
            for tok in re.findall(self.pat, part):
                tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(tok))
        return ids


def tiktoken_encoder(vocab_dir):
    import tiktoken

    enc = json.load(open(f"{vocab_dir}/vocab.json", encoding="utf-8"))
    byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
    ranks = {bytes(byte_decoder[c] for c in tok): i for tok, i in enc.items() if tok != "<|endoftext|>"}
    e = tiktoken.Encoding("gpt2-local", pat_str=PAT, mergeable_ranks=ranks,
                          special_tokens={"<|endoftext|>": enc["<|endoftext|>"]})
    return lambda text: e.encode(text, allowed_special="all")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    impl = "openai"
    if "--impl" in sys.argv:
        impl = sys.argv[sys.argv.index("--impl") + 1]
        args.remove(impl)
    vocab_dir, files = args[0], args[1:]
    encode = OpenAIEncoder(vocab_dir).encode if impl == "openai" else tiktoken_encoder(vocab_dir)
    for f in files:
        ids = encode(open(f, encoding="utf-8", newline="").read())
        print(f, json.dumps(ids, separators=(",", ":")) if "--ids" in sys.argv else len(ids))


if __name__ == "__main__":
    main()
