"""The package's rooms import only downward, and no module imports itself back through others.

``LAYERS`` is the allowed order, written once: a module may import from its own room or from a
room in an earlier layer, never from a later one. Imports inside functions count too."""
import ast
import pathlib
from typing import Dict, List, Set

import deeplabv3_plugin

#: Rooms, lowest first; rooms of one layer may not import each other. ``models`` is split so
#: its shared knob sits under its components and the segmentor over them. The package itself
#: (its ``__init__`` registers everything) and ``runtime`` (the opt-in that patches mmengine)
#: sit on top.
LAYERS = (
    ('errors', 'version', 'registry', 'cpu_features'),
    ('config_checks', 'paper'),
    ('models.output_stride', ),
    ('models.backbones', 'models.decode_heads'),
    ('models.segmentors', 'datasets'),
    ('models', ),
    ('checkpoint', ),
    ('deploy', ),
    ('engine', ),
    ('apis', ),
    ('converters', 'cli'),
    ('', ),
    ('runtime', ),
)
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def module_graph(package: pathlib.Path) -> Dict[str, Set[str]]:
    """``{module: the package's modules it imports}``, relative names resolved to files
    (``from . import x`` names the module ``x`` where it is one, else the package)."""
    files = {}
    for path in package.rglob('*.py'):
        parts = path.relative_to(package.parent).with_suffix('').parts
        files['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    graph = {}
    for module, path in files.items():
        here = module if path.name == '__init__.py' else module.rpartition('.')[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = here.split('.')[:len(here.split('.')) - node.level + 1]
                    base = '.'.join(anchor + ([node.module] if node.module else []))
                names = [f'{base}.{a.name}' if f'{base}.{a.name}' in files else base
                         for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:  # `import a.b.c` where c is a class, say
                    name = name.rpartition('.')[0]
                if name and name != module:
                    found.add(name)
        graph[module] = found
    return graph


def room(module: str) -> str:
    """The longest entry of ``LAYERS`` the module is in ('' for the package's ``__init__``)."""
    parts = module.split('.')[1:]
    for depth in range(len(parts), 0, -1):
        if '.'.join(parts[:depth]) in RANK:
            return '.'.join(parts[:depth])
    return ''


def upward_imports(graph: Dict[str, Set[str]]) -> List[str]:
    return sorted(
        f'{module} ({room(module) or "package"}) -> {target} ({room(target) or "package"})'
        for module, targets in graph.items() for target in targets
        if room(module) != room(target) and RANK[room(target)] >= RANK[room(module)]
        and not target.startswith(module + '.'))  # a package's __init__ gathers its modules


def cycles(graph: Dict[str, Set[str]]) -> List[str]:
    edges = graph
    state: Dict[str, int] = {}
    found = []

    def visit(module, trail):
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                found.append(' -> '.join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


GRAPH = module_graph(pathlib.Path(deeplabv3_plugin.__file__).parent)


def test_every_module_has_a_room():
    assert [m for m in GRAPH if '.' in m and room(m) == ''] == []


def test_imports_only_go_down():
    assert upward_imports(GRAPH) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_checks_catch_an_upward_import_and_a_lazy_cycle(tmp_path):
    """A backbone importing the engine, and the knob importing the segmentor inside a function
    while the segmentor imports the knob: what the package had before its rooms."""
    files = {
        'deeplabv3_plugin/__init__.py': 'from . import models\n',
        'deeplabv3_plugin/engine/__init__.py': '',
        'deeplabv3_plugin/models/__init__.py': 'from .segmentors import DeepLabV3\n',
        'deeplabv3_plugin/models/output_stride.py':
            'def f():\n    from .segmentors import DeepLabV3\n',
        'deeplabv3_plugin/models/segmentors/__init__.py':
            'from ..output_stride import f\nDeepLabV3 = f\n',
        'deeplabv3_plugin/models/backbones/__init__.py': 'from ...engine import hooks\n',
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = module_graph(tmp_path / 'deeplabv3_plugin')
    assert upward_imports(graph) == [
        'deeplabv3_plugin.models.backbones (models.backbones) -> deeplabv3_plugin.engine '
        '(engine)',
        'deeplabv3_plugin.models.output_stride (models.output_stride) -> '
        'deeplabv3_plugin.models.segmentors (models.segmentors)',
    ]
    assert cycles(graph) == [
        'deeplabv3_plugin.models.segmentors -> deeplabv3_plugin.models.output_stride -> '
        'deeplabv3_plugin.models.segmentors'
    ]
