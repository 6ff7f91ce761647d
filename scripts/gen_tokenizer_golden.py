#!/usr/bin/env python3
"""Write tests/data/gpt2_golden.json: hand-picked hard cases and their GPT-2 ids, from two
independent encoders (OpenAI's algorithm with `regex`, and tiktoken) that must agree.
usage: gen_tokenizer_golden.py VOCAB_DIR"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_reference import OpenAIEncoder, tiktoken_encoder  # noqa: E402

CASES = [
    "Hello world",
    "Hello, world! It's a test: don't, can't, we've, they're, I'm, you'll, he'd.",
    "UPPER CASE 'S 'T 'RE and O'Neill's",
    "café naïve résumé Ångström façade",
    "Ελληνικά γράμματα: αβγ ΑΒΓ",
    "Русский текст, ёжик и Щука",
    "中文字符测试，日本語のテキスト、한국어 문장",
    "emoji 😀👍🏽 🇺🇸 family 👨‍👩‍👧 ✨",
    "Arabic digits ٠١٢٣٤٥٦٧٨٩ and Devanagari १२३, Roman Ⅻ, fractions ½ ¾",
    "combining marks: e\u0301 a\u0308 n\u0303 ǹ",
    "no-break\u00a0space, thin\u2009space, ideographic\u3000space",
    "CRLF line\r\nnext line\r\n\r\nend",
    "runs of spaces:    four, \t\ttabs,\n\n\nnewlines   \n  mixed  ",
    "   leading and trailing   ",
    "numbers 1234567890 3.14159 1,000,000 -42 +7 1e-10",
    "punctuation!!! ??? ... --- *** ((())) [[]] {{}} <|endoftext|> after special",
    "@home #hashtag $dollar %percent ^caret &amp; ~tilde `backtick` |pipe| \\backslash/",
    "mixed123abc ABC123 a1b2c3 _underscore_ snake_case camelCase",
    "   \n",
    "\u200bzero width\u200d joiner \ufeffBOM",
    "math ∑∫√∞≈≠≤≥ arrows ←↑→↓ box ┌─┐",
    "a" * 100 + " " + "!" * 50,
    "<|endoftext|>",
    "",
    " = = Robert Boulter = = \n Robert Boulter is an English film , television and theatre actor . \n",
]


def main():
    vocab = sys.argv[1]
    oai = OpenAIEncoder(vocab)
    tik = tiktoken_encoder(vocab)
    out = []
    for text in CASES:
        a, b = oai.encode(text), tik(text)
        assert a == b, f"references disagree on {text!r}"
        out.append({"text": text, "ids": a})
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "tests", "data", "gpt2_golden.json"), "w", encoding="utf-8") as f:
        json.dump({"source": "scripts/gen_tokenizer_golden.py: OpenAI encoder.py algorithm and tiktoken agree",
                   "cases": out}, f, ensure_ascii=False, indent=1)
    print(len(out), "cases")


if __name__ == "__main__":
    main()
