"""The package stays what pyproject.toml promises: Python 3.9 syntax, standard library only."""
import ast
import sys
import unittest

from helpers import SDK_ROOT

ALLOWED = set(sys.stdlib_module_names) if hasattr(sys, "stdlib_module_names") else None


class Compat(unittest.TestCase):
    def test_every_module_parses_as_python_3_9_and_imports_only_the_standard_library(self):
        for path in sorted((SDK_ROOT / "emberd").glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    if ALLOWED is not None:
                        self.assertIn(name.split(".")[0], ALLOWED, f"{path.name} imports {name}, which is not in the standard library")


if __name__ == "__main__":
    unittest.main()
