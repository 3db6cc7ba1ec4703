"""Marked solution regions: find them, stub them, splice functions.

The solution code of every assignment lives in tinylm's own modules.  The
lines a student writes are fenced by nbgrader-compatible markers::

    def backward(self, dout):
        x = self.cache                       # (N, D)
        ### BEGIN SOLUTION
        dx = dout @ self.params["W"].T
        ...
        ### END SOLUTION
        return dx

This module knows three operations on such source text:

* :func:`find_regions` lists every fenced region with the function that
  contains it (``"Linear.backward"``);
* :func:`stub_source` replaces fenced regions by an indented
  ``raise NotImplementedError("<what>: assignment N task M")`` (the student
  version of the file);
* :func:`splice_functions` replaces whole functions in one source text by
  the same-named functions from another (used by the grader to put exactly
  one task's functions from a submission into an otherwise reference tree).

Everything here works on text and ``ast``; nothing is imported or executed.
"""

import ast
import io
import textwrap
import tokenize

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
# Text (in a docstring, usually) that states an answer, e.g. a backward formula
# in a module's docstring, is fenced by lines that are exactly these; the kit
# gets ANSWER_CUT in its place.
ANSWER_BEGIN = "### BEGIN ANSWER"
ANSWER_END = "### END ANSWER"
ANSWER_CUT = "(cut from the student kit: an assignment asks you to derive this)"


class RegionError(ValueError):
    """A marker problem in a source file (unbalanced, outside a function...)."""


class Region:
    """One fenced region: lines ``begin``..``end`` (1-based, inclusive, markers included)."""

    def __init__(self, path, qualname, begin, end, indent):
        self.path = path          # file path, for messages
        self.qualname = qualname  # enclosing function, "Class.method" or "func"
        self.begin = begin        # line of "### BEGIN SOLUTION"
        self.end = end            # line of "### END SOLUTION"
        self.indent = indent      # the BEGIN line's leading whitespace

    def __repr__(self):
        return "Region(%s:%d-%d in %s)" % (self.path, self.begin, self.end, self.qualname)


def _functions(tree):
    """Yield (qualname, node) for every function, methods as 'Class.method'."""
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = prefix + child.name
                yield q, child
                yield from walk(child, q + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)
    yield from walk(tree, "")


def _parse(source, path):
    try:
        return ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise RegionError("%s: line %s: syntax error: %s" % (path, exc.lineno, exc.msg)) from None


def marker_lines(source, path):
    """Line numbers of marker COMMENTS (a marker inside a string is not one)."""
    if BEGIN not in source and END not in source:
        return []
    found = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and tok.string.strip() in (BEGIN, END):
                if tok.line.strip() == tok.string.strip():     # alone on its line
                    found.append(tok.start[0])
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise RegionError("%s: cannot tokenize: %s" % (path, exc)) from None
    return found


def find_regions(source, path="<source>"):
    """All fenced regions of ``source`` (a str), in file order.

    Raises RegionError for an unbalanced or nested marker, or a region that
    is not inside a function (a student cannot be asked to write module-level
    code: the grader swaps functions, not files).
    """
    lines = source.splitlines()
    spans, open_line = [], None
    for i in marker_lines(source, path):
        s = lines[i - 1].strip()
        if s == BEGIN:
            if open_line is not None:
                raise RegionError("%s: line %d: %s inside the region opened on line %d"
                                  % (path, i, BEGIN, open_line))
            open_line = i
        elif s == END:
            if open_line is None:
                raise RegionError("%s: line %d: %s without a %s" % (path, i, END, BEGIN))
            spans.append((open_line, i))
            open_line = None
    if open_line is not None:
        raise RegionError("%s: line %d: %s is never closed" % (path, open_line, BEGIN))
    if not spans:
        return []
    funcs = list(_functions(_parse(source, path)))
    regions = []
    for b, e in spans:
        # innermost function whose body contains the BEGIN line (the END line
        # may follow the function's last statement: comments are not in the ast)
        best = None
        for q, node in funcs:
            if node.lineno < b <= node.end_lineno:
                if best is None or node.lineno >= best[1].lineno:
                    best = (q, node)
        if best is None:
            raise RegionError("%s: lines %d-%d: a solution region must be inside a function"
                              % (path, b, e))
        line = lines[b - 1]
        regions.append(Region(path, best[0], b, e, line[:len(line) - len(line.lstrip())]))
    return regions


def stub_source(source, messages, path="<source>", keep=()):
    """The student version of ``source``.

    messages: {qualname: text}; each region in that function becomes
    ``raise NotImplementedError(text)``; regions of functions not in
    ``messages`` get a generic text.  Regions whose qualname is in ``keep``
    are left as they are (markers included).  Returns the new text.
    """
    regions = find_regions(source, path)
    lines = source.splitlines(keepends=True)
    for r in reversed(regions):
        if r.qualname in keep:
            continue
        text = messages.get(r.qualname, "%s: write this part" % r.qualname)
        lines[r.begin - 1:r.end] = ["%sraise NotImplementedError(%r)\n" % (r.indent, text)]
    return "".join(lines)


def cut_answers(source, path="<source>"):
    """``source`` with every ANSWER_BEGIN..ANSWER_END block (marker lines included)
    replaced by one ANSWER_CUT line at the BEGIN line's indentation."""
    if ANSWER_BEGIN not in source and ANSWER_END not in source:
        return source
    out, opened = [], None
    for i, line in enumerate(source.splitlines(keepends=True), 1):
        s = line.strip()
        if s == ANSWER_BEGIN:
            if opened is not None:
                raise RegionError("%s: line %d: %s inside the block opened on line %d"
                                  % (path, i, ANSWER_BEGIN, opened))
            opened = i
            out.append(line[:len(line) - len(line.lstrip())] + ANSWER_CUT + "\n")
        elif s == ANSWER_END:
            if opened is None:
                raise RegionError("%s: line %d: %s without a %s"
                                  % (path, i, ANSWER_END, ANSWER_BEGIN))
            opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise RegionError("%s: line %d: %s is never closed" % (path, opened, ANSWER_BEGIN))
    return "".join(out)


def function_source(source, qualname, path="<source>"):
    """(first line, last line, text) of function ``qualname`` without its decorators."""
    tree = _parse(source, path)
    for q, node in _functions(tree):
        if q == qualname:
            lines = source.splitlines(keepends=True)
            text = "".join(lines[node.lineno - 1:node.end_lineno])
            return node.lineno, node.end_lineno, text
    return None


def splice_functions(target, donor, qualnames, target_path="<target>", donor_path="<donor>"):
    """Replace each function in ``qualnames`` of ``target`` by the donor's.

    The donor function is taken without decorators (the target keeps its
    own) and re-indented to the target's indentation.  Raises RegionError if
    the donor lacks a function or does not parse.
    """
    out = target
    for q in qualnames:
        d = function_source(donor, q, donor_path)
        if d is None:
            raise RegionError("%s: function %s not found (do not rename or delete it)"
                              % (donor_path, q))
        t = function_source(out, q, target_path)
        if t is None:
            raise RegionError("%s: function %s not found" % (target_path, q))
        t_lines = out.splitlines(keepends=True)
        first = t_lines[t[0] - 1]
        indent = first[:len(first) - len(first.lstrip())]
        body = textwrap.indent(textwrap.dedent(d[2]), indent, lambda line: True)
        if not body.endswith("\n"):
            body += "\n"
        t_lines[t[0] - 1:t[1]] = [body]
        out = "".join(t_lines)
    _parse(out, target_path)  # the result must still be valid Python
    return out
