"""The floor plan of estimator_export, checked on its source: layers, cycles, module sizes.

Imports are read with `ast` from every module, at module level and inside functions
alike (a function-level import is a dependency too). See the README's architecture
section for the layers.
"""
import ast
import os
import subprocess
import sys
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'estimator_export'
MAX_LINES = 600


def _modules() -> Dict[str, str]:
  """Dotted module name -> file path, for every .py file of the package."""
  found = {}
  for directory, _, files in os.walk(os.path.join(REPO, PACKAGE)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        dotted = os.path.relpath(path, REPO)[:-len('.py')].replace(os.sep, '.')
        found[dotted[:-len('.__init__')] if dotted.endswith('.__init__') else dotted] = path
  return found


MODULES = _modules()


def _owner(name: str) -> str:
  """The package module `name` refers to (a.b.Class -> a.b), or '' if outside."""
  while name and name not in MODULES:
    name = name.rpartition('.')[0]
  return name


def _imports(module: str) -> Set[str]:
  """Package modules `module` imports anywhere in its source."""
  path = MODULES[module]
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(_owner(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package
        for _ in range(node.level - 1):
          parent = parent.rpartition('.')[0]
        base = f'{parent}.{base}' if base else parent
      for alias in node.names:
        found.add(_owner(f'{base}.{alias.name}') if f'{base}.{alias.name}' in MODULES
                  else _owner(base))
  found.discard('')
  found.discard(module)
  return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> List[List[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, result = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in GRAPH[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        result.append(sorted(component))

  for v in sorted(GRAPH):
    if v not in index:
      visit(v)
  return result


def _in(module: str, *prefixes: str) -> bool:
  return any(module == p or module.startswith(p + '.') for p in prefixes)


def test_checker_sees_function_level_imports():
  assert 'estimator_export.export' in GRAPH['estimator_export.mixins']  # Inside a method.


def test_no_import_cycles():
  assert _cycles() == []


@pytest.mark.parametrize('module', sorted(MODULES))
def test_module_size(module):
  with open(MODULES[module], encoding='utf-8') as f:
    lines = sum(1 for _ in f)
  assert lines <= MAX_LINES, f'{module} has {lines} lines; split it (limit {MAX_LINES})'


def test_bottom_layer_imports_only_errors():
  assert GRAPH['estimator_export.errors'] == set()
  assert GRAPH['estimator_export._saved_model'] <= {'estimator_export.errors'}


def test_nothing_imports_the_command_line():
  users = {m for m, deps in GRAPH.items() if not _in(m, 'estimator_export.cli')
           and any(_in(d, 'estimator_export.cli') for d in deps)}
  assert users == set()


def test_client_is_not_server_side():
  client = [m for m in GRAPH if _in(m, 'estimator_export.client')]
  assert client, 'estimator_export.client is missing'
  for module in client:
    assert not any(_in(d, 'estimator_export.serving') for d in GRAPH[module]), module


def test_serving_does_not_reach_up():
  for module in (m for m in GRAPH if _in(m, 'estimator_export.serving')):
    bad = {d for d in GRAPH[module] if _in(d, 'estimator_export.export', 'estimator_export.mixins',
                                            'estimator_export.exporters', 'estimator_export.flags',
                                            'estimator_export.freeze')}
    assert not bad, f'{module} imports {bad}'


def test_package_front_is_lazy():
  code = ('import sys, estimator_export\n'
          'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))\n'
          'estimator_export.FeatureSpec\n'
          'print("tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ['[]', 'True']


def test_public_names_resolve():
  import estimator_export  # pylint: disable=g-import-not-at-top
  missing = [name for name in estimator_export.__all__ if not hasattr(estimator_export, name)]
  assert missing == []
  with pytest.raises(AttributeError, match='no attribute'):
    getattr(estimator_export, 'NoSuchName')
