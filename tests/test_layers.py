"""The package's layers point one way: read from the source (every import statement, including
the ones inside functions), not from what happens to be imported at run time.

Units are the subpackages of metatalk_jax (metatalk_jax.subject, ...; metatalk_jax.configs and
metatalk_jax.data_pipelines are the repository's top-level configs/ and data_pipelines/) and its
top-level modules (metatalk_jax.runtime, ...). Checked: no cycle between units; nothing imports
a stage CLI; training and inference import nothing from pseudo_video; runtime.py imports nothing
from the package and no JAX at load time (so it can set XLA flags before JAX starts).
"""

from __future__ import annotations

import ast

from tests.support.package_sources import module_name, package_source_files

STAGE_CLIS = {"metatalk_jax.prepare", "metatalk_jax.pseudo", "metatalk_jax.infer",
              "metatalk_jax.evaluate", "metatalk_jax.demo", "metatalk_jax.train.__main__",
              "metatalk_jax.convert.__main__"}


def package_modules() -> dict[str, str]:
    """{dotted module name: path} of every .py file of the package, wherever in the repository
    its folder sits."""
    return {module_name(inside): path for inside, path in package_source_files().items()}


def imported_names(module: str, path: str) -> list[tuple[str, bool]]:
    """[(dotted name, at module level)] of every import in the file, relative ones resolved;
    `from a import b` yields both a and a.b (b may be a submodule)."""
    tree = ast.parse(open(path).read(), path)
    top_level = {id(node) for node in tree.body}
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.append((base, id(node) in top_level))
            out += [(f"{base}.{alias.name}", id(node) in top_level) for alias in node.names]
    return out


def unit_of(name: str, modules: dict[str, str]) -> str | None:
    """The unit a dotted name belongs to (None outside the package)."""
    parts = name.split(".")
    if parts[0] != "metatalk_jax" or len(parts) < 2:
        return None
    unit = ".".join(parts[:2])
    return unit if unit in modules else None


def dependencies() -> dict[str, dict[str, set[str]]]:
    """{unit: {unit it imports: {importing modules}}} over the whole package."""
    modules = package_modules()
    graph: dict[str, dict[str, set[str]]] = {}
    for module, path in modules.items():
        source = unit_of(module, modules)
        for name, _ in imported_names(module, path):
            target = unit_of(name, modules)
            if source and target and target != source:
                graph.setdefault(source, {}).setdefault(target, set()).add(module)
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str] | None:
    """Units of one import cycle (first unit repeated at the end), or None."""
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(unit):
        state[unit] = 1
        path.append(unit)
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[unit] = 2
        path.pop()
        return None

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return None


def test_the_units_include_the_top_level_subpackages():
    modules = package_modules()
    assert {"metatalk_jax.configs", "metatalk_jax.data_pipelines.windows",
            "metatalk_jax.subject.layout", "metatalk_jax.runtime"} <= set(modules)
    assert unit_of("metatalk_jax.data_pipelines.windows.WindowSource", modules) == \
        "metatalk_jax.data_pipelines"


def test_there_is_no_cycle_between_the_packages_units():
    graph = dependencies()
    cycle = find_cycle(graph)
    detail = cycle and [f"{a} -> {b} (in {sorted(graph[a][b])})" for a, b in zip(cycle, cycle[1:])]
    assert cycle is None, detail


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    edges = {"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    del edges["c"]["a"]
    assert find_cycle(edges) is None


def test_no_module_imports_a_stage_cli():
    modules = package_modules()
    offenders = sorted((module, name) for module, path in modules.items()
                       for name, _ in imported_names(module, path)
                       if name in STAGE_CLIS and name != module)
    assert offenders == [], offenders


def test_training_and_inference_import_nothing_from_pseudo_video_or_the_stage_clis():
    graph = dependencies()
    for unit in ("metatalk_jax.train", "metatalk_jax.inference"):
        assert "metatalk_jax.pseudo_video" not in graph.get(unit, {}), graph[unit]
        assert not STAGE_CLIS & set(graph.get(unit, {})), graph[unit]


def test_runtime_imports_nothing_from_the_package_and_no_jax_at_load_time():
    path = package_source_files()["runtime.py"]
    names = imported_names("metatalk_jax.runtime", path)
    assert not [n for n, _ in names if n.startswith("metatalk_jax")]
    assert not [n for n, top in names if top and n.split(".")[0] in ("jax", "jaxlib", "numpy")]
