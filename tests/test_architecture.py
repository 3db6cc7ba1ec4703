"""The import order of docs/architecture.md, read from the source with ast.

Each module belongs to a level; a module may import only from its own level or
below (kernels <- layers <- models <- training/generation <- applications <-
commands, lessons, assignments), and never a private (``_name``) name or
private module of another package.
"""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (module or package prefix, level); the longest matching prefix wins.
LEVELS = [
    ("tinylm", 0),                 # tinylm/__init__.py: the backend switch only
    ("tinylm._C", 0),
    ("tinylm.kernels", 0),
    ("tinylm.rng", 0),
    ("tinylm.data", 0),
    ("tinylm.tokenizers", 0),
    ("tinylm.optim", 0),
    ("tinylm.checkpoint", 0),
    ("tinylm.layers", 1),
    ("tinylm.gradcheck", 2),
    ("tinylm.models", 3),
    ("tinylm.training", 4),
    ("tinylm.train", 4),
    ("tinylm.generate", 4),
    ("tinylm.complete", 4),
    ("tinylm.pretrained", 5),
    ("tinylm.teaching", 5),
    ("tinylm.assignments", 6),
    ("tinylm.commands", 6),
    ("tinylm.cli", 6),
    ("tinylm.lessons", 6),
]
NAMES = {1: "layers", 2: "gradcheck", 3: "models", 4: "training/generation",
         5: "applications", 6: "commands/lessons/assignments", 0: "foundations"}


def level(module):
    best = None
    for prefix, lvl in LEVELS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, lvl)
    return None if best is None else best[1]


def package_of(module):
    """The unit privacy is measured against: tinylm.layers.core -> tinylm.layers."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def sources():
    """(module name, path) for every tinylm module and lesson."""
    for base, prefix in (("tinylm", "tinylm"), ("lessons", "tinylm.lessons")):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, base))
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                yield ".".join([prefix] + parts), os.path.join(dirpath, f)


def imports(path, module):
    """(imported module, imported name or None, line) for every import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_pkg = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".")
                pkg = pkg if is_pkg else pkg[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:
                yield base, a.name, node.lineno


def private_attributes(path):
    """(module, attribute, line) for ``mod._name`` where mod is an imported tinylm module."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tinylm.") and a.asname:
                    bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinylm"):
            for a in node.names:
                full = node.module + "." + a.name
                if level(full) is not None and full.count(".") >= 1 and \
                        full.rsplit(".", 1)[1] == a.name and a.name.islower():
                    bound[a.asname or a.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in bound and node.attr.startswith("_") and \
                not node.attr.startswith("__"):
            yield bound[node.value.id], node.attr, node.lineno


def violations():
    found = []
    for module, path in sources():
        lvl = level(module)
        assert lvl is not None, "%s: no level in tests/test_architecture.py LEVELS" % module
        rel = os.path.relpath(path, ROOT)
        for target, name, line in imports(path, module):
            if not (target == "tinylm" or target.startswith("tinylm.")):
                continue
            # `from tinylm import layers` imports the module tinylm.layers
            full = target + "." + name if target == "tinylm" and name else target
            tl = level(full)
            if tl is not None and tl > lvl:
                found.append("%s:%d imports %s (%s) from %s: upward"
                             % (rel, line, full, NAMES[tl], NAMES[lvl]))
            # private modules and names of another package
            same = package_of(full) == package_of(module)
            private_mod = any(p.startswith("_") and not p.startswith("__")
                              for p in full.split(".")[1:] if p != "_C")
            if private_mod and not same:
                found.append("%s:%d imports the private module %s" % (rel, line, full))
            if name and name.startswith("_") and not name.startswith("__") and \
                    name != "_C" and not same:
                found.append("%s:%d imports the private name %s from %s"
                             % (rel, line, name, full))
        for target, attr, line in private_attributes(path):
            if package_of(target) != package_of(module):
                found.append("%s:%d uses the private name %s.%s" % (rel, line, target, attr))
    return found


def test_levels_cover_every_module():
    for module, _ in sources():
        assert level(module) is not None, module


def test_imports_run_one_way_and_respect_privacy():
    bad = violations()
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("src,expected", [
    ("from tinylm.training import train\n", "upward"),
    ("from tinylm.layers._util import as_int_input\n", "private module"),
    ("from tinylm.kernels import _causal_allowed\n", "private name"),
    ("from tinylm import kernels\nkernels._causal_allowed(1, 2)\n", "private name"),
])
def test_the_checker_catches(tmp_path, monkeypatch, src, expected):
    # a fake models module with a bad import must be reported
    path = tmp_path / "fake.py"
    path.write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "sources",
                        lambda: iter([("tinylm.models.fake", str(path))]))
    bad = violations()
    assert bad and expected in bad[0], bad
